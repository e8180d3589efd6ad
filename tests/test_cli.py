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
    # Every chapter whose template and parameters match its executed page is skipped; one whose
    # template changed since (a chapter awaiting re-execution) is re-executed and the log says why.
    from eurosat_lib.experiments.notebooks import NOTEBOOKS

    unchanged, changed = [], []
    for name in NOTEBOOKS:
        try:
            report = run_notebooks("cpu", [name], log=logs.append)
        except AssertionError:
            assert logs[-1].startswith(f"[run ] {name} (profile=cpu): "), logs[-1]  # the reason is stated
            changed.append(name)
        else:
            assert report == [{"notebook": name, "status": "skipped"}], logs
            unchanged.append(name)
    assert "00_data" in unchanged and len(unchanged) >= 2, (unchanged, changed)
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


# ------------------------------------------------------------------------------------------
# predict: input problems named by file, before any model is loaded
# ------------------------------------------------------------------------------------------


def _png(path: Path, size=(64, 64)) -> Path:
    from PIL import Image

    Image.new("RGB", size, (20, 90, 40)).save(path)
    return path


def test_predict_input_problems_are_named_and_skippable(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from eurosat_lib.__main__ import read_images

    folder = tmp_path / "imgs"
    folder.mkdir()
    _png(folder / "a_ok.png")
    _png(folder / "b_scene.png", size=(1000, 800))
    (folder / "c_junk.jpg").write_bytes(b"not an image at all")
    good = folder / "d_cut.jpg"
    _png(tmp_path / "full.png")
    Image.open(tmp_path / "full.png").save(good, format="JPEG")
    good.write_bytes(good.read_bytes()[:200])  # a truncated JPEG
    # one bad file stops the folder, naming the file (not <_io.BytesIO ...>) and --skip-bad
    with pytest.raises(ValueError, match=r"c_junk\.jpg is not a readable image.*--skip-bad") as e:
        read_images([str(folder)])
    assert "BytesIO" not in str(e.value)
    names, batch, skipped = read_images([str(folder)], skip_bad=True)
    assert [Path(n).name for n in names] == ["a_ok.png", "b_scene.png"] and batch.shape == (2, 64, 64, 3)
    assert len(skipped) == 2 and "c_junk.jpg" in skipped[0] and "d_cut.jpg" in skipped[1]
    # a scene far from 64 px at 10 m/pixel is resized with a warning naming it
    assert "b_scene.png (1000x800)" in capsys.readouterr().err
    # a decompression bomb is a clear error, not Pillow's raw DecompressionBombError
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match=r"a_ok\.png is too large to open safely.*64 px tiles"):
        read_images([str(folder / "a_ok.png")])


def test_predict_reports_a_truncated_model_as_corrupt(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"PK\x03\x04" + b"\0" * 100)  # the start of a zip, cut short
    img = _png(tmp_path / "x.png")
    assert main(["predict", str(run), str(img)]) == 2
    err = capsys.readouterr().err
    assert "model.keras is corrupt or truncated" in err and "not found" not in err.lower()


def test_info_prints_everything_despite_a_bad_archive_setting(tmp_path, monkeypatch, capsys):
    import json

    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5").write_bytes(b"x")
    monkeypatch.setenv("EUROSAT_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("EUROSAT_ARCHIVE", str(tmp_path / "missing.zip"))
    assert main(["info"]) == 1
    out, err = capsys.readouterr()
    info = json.loads(out)
    assert "missing.zip does not exist" in err and info["cache_dir"] and info["archive"] is None
    assert str(weights / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5") in info["weight_files"]
