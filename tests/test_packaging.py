"""The project's set-up files agree with each other and with what the product promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from conftest import REPO


def _pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_environment_yml_matches_pyproject():
    proj = _pyproject()["project"]
    wanted = {}
    for spec in proj["dependencies"] + proj["optional-dependencies"]["dev"]:
        r = Requirement(spec)
        wanted[_norm(r.name)] = (r.specifier, frozenset(r.extras))
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert any(d.startswith("python") for d in conda) and "pip" in conda
    assert env["channels"] == ["conda-forge"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_section, "environment.yml must install this package"
    got = {}
    for spec in pip_section:
        if spec.startswith("-e"):
            continue
        r = Requirement(spec)
        got[_norm(r.name)] = (r.specifier, frozenset(r.extras))
    assert set(got) == set(wanted), f"only in environment.yml: {set(got) - set(wanted)}; only in pyproject: {set(wanted) - set(got)}"
    for name, (spec, extras) in wanted.items():
        assert got[name][0] == spec, f"{name}: environment.yml pins {got[name][0]}, pyproject {spec}"
        assert got[name][1] == extras, name
    # python version agrees with requires-python
    py = next(d for d in conda if d.startswith("python"))
    assert SpecifierSet(proj["requires-python"]).contains(py.split("=")[-1] + ".0")


def test_jupyter_book_is_pinned_to_1x():
    dev = _pyproject()["project"]["optional-dependencies"]["dev"]
    jb = Requirement(next(d for d in dev if d.startswith("jupyter-book")))
    assert not jb.specifier.contains("2.0.0") and jb.specifier.contains("1.0.4")


def test_book_toc_is_the_top_level_toc():
    link = REPO / "book" / "_toc.yml"
    assert link.is_symlink() and link.resolve() == (REPO / "_toc.yml").resolve()
    cfg = yaml.safe_load((REPO / "_config.yml").read_text())
    assert cfg["execute"]["execute_notebooks"] == "off"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in readme and "make book" in readme
    assert re.search(r"^\s*make test\b", ci, re.M), ".ci/run must call the README's test command"
    assert os.access(REPO / ".ci" / "run", os.X_OK)


def test_no_data_or_weights_are_tracked():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    bad = [f for f in files if re.search(r"\.(h5|keras|npy|npz|zip|tif|jpg)$", f)]
    assert not bad, f"data/model files are tracked: {bad}"
    big = [f for f in files if (REPO / f).is_file() and (REPO / f).stat().st_size > 4 * 2**20]
    assert not big, f"files over 4 MB are tracked: {big}"


def test_templates_in_notebooks_carry_no_outputs():
    import json

    for nb_path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text())
        dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count"))]
        assert not dirty, f"{nb_path.name}: cells {dirty} carry outputs; clear them (executed copies live in book/)"
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{nb_path.name}: needs exactly one cell tagged 'parameters'"


def test_data_and_report_modules_do_not_import_tensorflow():
    """Loading data, writing the results page or reading run records needs no deep-learning stack;
    only the modules that build or train models import Keras (quietly)."""
    code = (
        "import sys, eurosat_lib, eurosat_lib.data, eurosat_lib.report, eurosat_lib.summaries, eurosat_lib.evaluation, eurosat_lib.plots\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, sorted(m for m in sys.modules if 'tensor' in m)\n"
        "import eurosat_lib.training\n"
        "assert 'keras' in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    # the quiet import kept TensorFlow's C++ start-up lines off stderr
    assert not re.search(r"cuInit|oneDNN|cuda_platform|cpu_feature_guard", r.stderr), r.stderr[-2000:]
