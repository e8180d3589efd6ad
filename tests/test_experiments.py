"""eurosat_lib.experiments: parameters, run folders (reuse/resume), make experiments, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import numpy as np
import pytest

from conftest import REPO, jpeg_bytes
from eurosat_lib import config
from eurosat_lib import data as D
from eurosat_lib import experiments as X
from eurosat_lib import models as M
from eurosat_lib import training as T


# ------------------------------------------------------------------------------------------
# Parameters
# ------------------------------------------------------------------------------------------


def test_profiles_fill_defaults_and_explicit_values_win():
    P = X.resolve_params("03_finetune", profile="smoke")
    assert P.profile == "smoke" and P.image_size == 64 and P.seeds == [0] and P.out_dir.endswith("smoke/03_finetune")
    P = X.resolve_params("03_finetune", profile="cpu", image_size=96, seeds=[3, 4], weights="none")
    assert P.image_size == 96 and P.seeds == [3, 4] and P.weights is None
    assert X.resolve_params("03_finetune").profile == "cpu"


@pytest.mark.parametrize(
    "given, message",
    [
        ({"profile": "laptop"}, r"parameter 'profile' must be one of \['smoke', 'cpu', 'gpu'\], got 'laptop'"),
        ({"backbone": "ResNet5O"}, r"Unknown backbone 'ResNet5O'\. Did you mean 'ResNet50'"),
        ({"seeds": 0}, r"parameter 'seeds' must be a number of seeds"),
        ({"weights": "imagenet21k"}, r"parameter 'weights' must be 'imagenet', 'none'"),
        ({"epochs_finetune": 1.5}, r"parameter 'epochs_finetune' must be a non-negative integer"),
        ({"image_size": 16, "backbone": "MobileNetV2"}, r"'image_size' is 16 but MobileNetV2 needs at least 32 px"),
        ({"image_size": "large"}, r"parameter 'image_size' must be a positive integer, got 'large'"),
        ({"lr_finetune": -0.1}, r"parameter 'lr_finetune' must be a positive number, got -0\.1"),
        ({"learning_rates": [1e-3, -1]}, r"parameter 'learning_rates' must be a non-empty list of positive"),
        ({"colour": "red"}, r"unknown parameter\(s\) \['colour'\] for 03_finetune"),
    ],
)
def test_bad_parameters_are_named(given, message):
    with pytest.raises(X.ParameterError, match=message):
        X.resolve_params("03_finetune", **given)


def test_params_from_reads_only_known_names():
    ns = {"profile": "smoke", "image_size": 48, "unrelated_variable": 1, "plt": object()}
    P = X.params_from(ns, "03_finetune")
    assert P.image_size == 48 and not hasattr(P, "unrelated_variable")


def test_require_weights_fails_fast_naming_the_file(tmp_path, monkeypatch):
    import keras

    def offline(*a, **k):
        raise Exception("URL fetch failure: [Errno -2] Name or service not known")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setenv("EUROSAT_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setattr(config, "SHARED_DATA_DIR", tmp_path / "none")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    P = X.resolve_params("03_finetune", backbone="ResNet50")
    with pytest.raises(FileNotFoundError, match=r"(?s)resnet50_weights_tf_dim_ordering_tf_kernels_notop\.h5.*-p weights none"):
        X.require_weights(P)
    assert X.require_weights(X.resolve_params("03_finetune", backbone="ResNet50", weights="none")) is None


# ------------------------------------------------------------------------------------------
# Run folders
# ------------------------------------------------------------------------------------------


def _spec(name="demo", **kw):
    base = dict(
        backbone="MobileNetV2", backbone_kwargs={"alpha": 0.35}, weights=None, image_size=32,
        phases=(T.PhaseConfig("head", epochs=1, batch_size=16, use_feature_cache=True),), val_n_per_class=3,
    )  # fmt: skip
    base.update(kw)
    return X.ExperimentSpec(name, **base)


def test_spec_key_ignores_defaults_and_tracks_changes():
    a, b = _spec(), _spec(seed=0, augment=None)
    assert a.key() == b.key()
    assert _spec(seed=1).key() != a.key() and _spec(image_size=48).key() != a.key()
    with pytest.raises(ValueError, match="no phases"):
        X.ExperimentSpec("x", phases=())
    with pytest.raises(ValueError, match="Unknown backbone"):
        X.ExperimentSpec("x", backbone="AlexNet", phases=(T.PhaseConfig(),))


def test_run_experiment_writes_a_whole_run_folder_and_reuses_it(tmp_path, monkeypatch):
    syn = D.make_synthetic(n_per_class=20)
    acc = T.Accelerator(run_eagerly=True)
    res = X.run_experiment(_spec(), syn, tmp_path, accelerator=acc)
    run = tmp_path / "demo"
    rec = json.loads((run / "record.json").read_text())
    assert rec["status"] == "complete" and rec["params"]["spec_key"] == _spec().key()
    assert set(rec["metrics"]) == {"val", "test"} and rec["metrics"]["val"]["n"] == 30
    assert rec["metrics"]["test"]["n"] == 40 and 0 <= rec["metrics"]["test"]["accuracy"] <= 1
    assert rec["params"]["data"]["source"].startswith("synthetic")
    assert (run / "model.keras").is_file() and (run / "params.json").is_file() and (run / "history_head.csv").is_file()
    assert "/work/" not in (run / "record.json").read_text()  # no machine paths in published records
    # the same spec again: nothing is trained, the record is returned
    monkeypatch.setattr(T, "train_phases", lambda *a, **k: pytest.fail("a finished run must be reused"))
    again = X.run_experiment(_spec(), syn, tmp_path, accelerator=acc)
    assert again.record["metrics"] == res.record["metrics"]
    # reloading the model in one call gives the same predictions
    model = again.load_model()
    np.testing.assert_allclose(model.predict(syn.images[:8], verbose=0), res.model.predict(syn.images[:8], verbose=0), atol=1e-5)


def test_a_changed_spec_under_the_same_name_starts_clean(tmp_path):
    syn = D.make_synthetic(n_per_class=20)
    acc = T.Accelerator(run_eagerly=True)
    X.run_experiment(_spec(), syn, tmp_path, accelerator=acc)
    X.run_experiment(_spec(seed=5), syn, tmp_path, accelerator=acc)
    rec = json.loads((tmp_path / "demo" / "record.json").read_text())
    assert rec["params"]["seed"] == 5 and rec["params"]["spec_key"] == _spec(seed=5).key()


def test_header_table_shows_parameters_data_and_hardware():
    P = X.resolve_params("03_finetune", profile="smoke")
    table = X.header_table(P, D.make_synthetic(n_per_class=2))
    groups = set(table.index.get_level_values(0))
    assert groups == {"parameter", "data", "hardware"}
    assert table.loc[("parameter", "profile"), "value"] == "smoke"
    assert "cores" in table.loc[("hardware", "cpu"), "value"]


# ------------------------------------------------------------------------------------------
# make experiments
# ------------------------------------------------------------------------------------------


def _template(path: Path, body: str) -> None:
    import sys as _sys

    _sys.path.insert(0, str(REPO / "tests"))
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "cpu"\nout_dir = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("import sys\nprint('noise', file=sys.stderr)\n" + body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_run_notebooks_skips_unchanged_and_never_leaves_half_written_chapters(tmp_path):
    templates, book = tmp_path / "notebooks", tmp_path / "book"
    templates.mkdir()
    _template(templates / "00_data.ipynb", "print(profile, out_dir)")
    logs: list[str] = []
    rep = X.run_notebooks("smoke", ["00_data"], templates_dir=templates, book_dir=book, log=logs.append)
    out = book / "chapters" / "00_data.ipynb"
    assert rep[0]["status"] == "ran" and out.is_file()
    nb = nbformat.read(out, as_version=4)
    assert nb.metadata["papermill"]["output_path"] == out.as_posix()  # not papermill's temporary file
    assert nb.metadata["eurosat"]["profile"] == "smoke" and nb.metadata["eurosat"]["parameters"]["out_dir"].endswith("runs/smoke/00_data")
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert any("smoke" in o.get("text", "") for o in outputs)
    assert not any(o.get("name") == "stderr" for o in outputs), "stderr noise must be stripped"
    assert X.run_notebooks("smoke", ["00_data"], templates_dir=templates, book_dir=book, log=logs.append)[0]["status"] == "skipped"
    # a template that fails: the previous chapter stays, no temporary file is left behind
    before = out.read_bytes()
    _template(templates / "00_data.ipynb", "raise RuntimeError('boom')")
    with pytest.raises(Exception, match="boom"):
        X.run_notebooks("smoke", ["00_data"], templates_dir=templates, book_dir=book, log=logs.append)
    assert out.read_bytes() == before
    assert [p.name for p in (book / "chapters").iterdir()] == ["00_data.ipynb"]
    with pytest.raises(X.ParameterError, match="unknown notebook"):
        X.run_notebooks("smoke", ["07_nothing"], templates_dir=templates, book_dir=book)


# ------------------------------------------------------------------------------------------
# Using a trained model: python -m eurosat_lib predict
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_predict_cli_classifies_a_file_a_folder_and_a_zip(tmp_path):
    syn = D.make_synthetic(n_per_class=20)
    X.run_experiment(_spec(), syn, tmp_path / "runs", accelerator=T.Accelerator(run_eagerly=True))
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(syn.images[i * 10]).save(folder / f"img{i}.png")
    (folder / "big.jpg").write_bytes(jpeg_bytes(size=(128, 128)))  # resized to 64 px
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("x/one.jpg", jpeg_bytes())
        zf.writestr("__MACOSX/x/._one.jpg", b"junk")
    out_csv = tmp_path / "pred.csv"
    cmd = [sys.executable, "-m", "eurosat_lib", "predict", str(tmp_path / "runs" / "demo"), str(folder / "img0.png"), str(folder), str(archive), "--csv", str(out_csv)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = out_csv.read_text().strip().splitlines()
    assert rows[0].startswith("image,prediction,confidence,p_AnnualCrop")
    assert len(rows) == 1 + 1 + 4 + 1
    for row in rows[1:]:
        probs = [float(v) for v in row.split(",")[3:]]
        assert abs(sum(probs) - 1) < 1e-3 and row.split(",")[1] in D.CLASS_NAMES
    bad = subprocess.run([sys.executable, "-m", "eurosat_lib", "predict", str(tmp_path / "nope"), str(folder)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "model.keras does not exist" in bad.stderr
