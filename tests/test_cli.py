"""The command line (``python -m eurosat_lib``): bad input and wrong places give clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from eurosat_lib.__main__ import main


def test_report_without_records_keeps_the_page(tmp_path, monkeypatch, capsys):
    """Issue 16 item 6: `report --profile gpu` with no gpu records wiped book/results.md."""
    book = tmp_path / "book"
    (book / "runs" / "cpu" / "00_data").mkdir(parents=True)
    (book / "runs" / "cpu" / "00_data" / "data_summary.json").write_text("{}")
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    page = book / "results.md"
    page.write_text("# Results\n\nthe committed page\n")
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--profile", "gpu"]) != 0
    err = capsys.readouterr().err
    assert "no run records for profile 'gpu'" in err and "make experiments PROFILE=gpu" in err
    assert page.read_text() == "# Results\n\nthe committed page\n"
    assert sorted(p.name for p in book.iterdir()) == ["_toc.yml", "results.md", "runs"]


def test_report_outside_the_project_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--profile", "gpu"]) != 0
    assert "run the command from the repository root" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------
# make experiments
# ------------------------------------------------------------------------------------------


def test_fresh_clone_skips_unchanged_chapters(tmp_path, monkeypatch):
    """Issue 16 item 7: in a fresh clone, chapters nothing changed in are skipped, not re-executed."""
    import subprocess

    import papermill

    from conftest import REPO
    from eurosat_lib.experiments import run_notebooks

    if not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git checkout (needed to clone it)")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)

    def executed(*a, **k):
        raise AssertionError(f"re-executed an unchanged chapter: {a[0]}")

    monkeypatch.setattr(papermill, "execute_notebook", executed)
    monkeypatch.chdir(clone)
    logs: list[str] = []
    report = run_notebooks("cpu", ["00_data", "01_transfer_learning"], log=logs.append)
    assert [r["status"] for r in report] == ["skipped", "skipped"], logs
    # a changed template cell is noticed
    nb = (clone / "notebooks" / "00_data.ipynb")
    nb.write_text(nb.read_text().replace("import numpy as np", "import numpy as np  # edited", 1))
    with pytest.raises(AssertionError, match="re-executed"):
        run_notebooks("cpu", ["00_data"], log=logs.append)
    assert "the template's cells changed" in logs[-1]


def test_experiments_outside_the_repository_says_where_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["experiments", "--profile", "smoke", "--only", "00_data"]) != 0
    err = capsys.readouterr().err
    assert "00_data.ipynb not found" in err and "from the repository root" in err
    assert list(tmp_path.iterdir()) == []


def test_experiments_kernels_do_not_log_the_tcp_warning(tmp_path, capfd):
    import nbformat

    from eurosat_lib.experiments import run_notebooks

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "cpu"\nout_dir = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print('ran', profile)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, tmp_path / "notebooks" / "00_data.ipynb")
    run_notebooks("smoke", ["00_data"], templates_dir=tmp_path / "notebooks", book_dir=tmp_path / "book", log=print)
    out, err = capfd.readouterr()
    assert "[run ] 00_data" in out
    assert "without encryption" not in out + err
