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
