# One entry point for people and CI. Every target creates the virtual environment if missing.
#   make book         set up, then build the HTML book (the main job)
#   make test         set up, then run the whole test suite (what .ci/run calls); 3 workers
#                     (expensive shared fixtures, the built book and benchmark runs, run once per
#                     test run whichever worker asks first: tests/conftest.py once_per_run)
#   make experiments  re-run the notebooks into the book (PROFILE=cpu|gpu|smoke)
#   make bench        run the benchmark scripts
#   make publish      build, then push _build/html to the gh-pages branch (ghp-import) for
#                     GitHub Pages without Actions (.github/workflows/book.yml does it with them)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROFILE ?= cpu
# pip prints one warning per package for this machine's local index mirrors; keep logs readable.
PIP_QUIET := -q --disable-pip-version-check

.PHONY: setup book book-strict test experiments bench lab clean publish

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_QUIET) --upgrade pip 2> >(grep -v '^WARNING: Location' >&2)
	$(BIN)/python -m pip install $(PIP_QUIET) -e '.[dev]' 2> >(grep -v '^WARNING: Location' >&2)
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

book: setup
	$(BIN)/jupyter-book build book/ --warningiserror --keep-going
	@echo "Book: $(CURDIR)/_build/html/index.html"

# -n: .nojekyll, so Pages serves _static/; -p: push; -f: replace the branch (a built site has no history worth keeping)
publish: book
	$(BIN)/ghp-import -n -p -f -m "Publish the book" _build/html

# 3 xdist workers on the 2 cores: with 2 the cores sat idle ~11 % of the run (workers waiting on
# subprocesses, shared fixtures and the tail), measured: 1,590 CPU-s in 14:51; with 3, 1.4 % idle
# (/proc/stat), the same CPU, 14:01 (both on the 2-core AMD EPYC, nothing else running).
test: setup
	$(BIN)/python -m pytest -n 3 --dist loadgroup --durations=25 tests

experiments: setup
	$(BIN)/python -m eurosat_lib experiments --profile $(PROFILE)

bench: setup
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

lab: setup
	$(BIN)/jupyter lab

clean:
	rm -rf _build book/_build .pytest_cache
