"""eurosat_lib.experiments: parameters, run folders (reuse/resume), make experiments, the CLI."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
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
from eurosat_lib.experiments import params as PP


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


FIRST_CELL = 'import eurosat_lib.models\nP = X.params_from(globals(), "03_finetune")'


def _kernel(*cells: str) -> dict:
    """A notebook namespace after running ``cells`` (the last is the running one), as IPython keeps it."""
    ns: dict = {"X": X, "np": np}
    for source in cells[:-1]:
        exec(source, ns)
    del ns["__builtins__"]
    history = ["", *cells]
    return {**ns, "In": history, "_ih": history, "Out": {}, "get_ipython": print}


def test_a_misspelled_notebook_parameter_fails_naming_the_closest():
    """papermill ... -p profile smoke -p backbonee VGG16: the injected name is refused, not ignored."""
    params_cell = PP.parameters_cell("03_finetune")
    injected = '# Parameters\nprofile = "smoke"\nbackbonee = "VGG16"\n'
    ns = _kernel(params_cell, injected, FIRST_CELL)
    with pytest.raises(X.ParameterError, match=r"unknown parameter\(s\) \['backbonee'\] for 03_finetune \('backbonee': did you mean 'backbone'\?\)"):
        X.params_from(ns, "03_finetune")
    # the same values, correctly spelled, are taken from the injected cell
    P = X.params_from(_kernel(params_cell, '# Parameters\nprofile = "smoke"\nbackbone = "ResNet50"\n', FIRST_CELL), "03_finetune")
    assert P.profile == "smoke" and P.backbone == "ResNet50" and P.image_size == 64
    # variables of other cells (the first cell re-run in Jupyter after later ones) are not parameters
    rerun = _kernel(params_cell, "best = 0.9", "table = X.resolve_params('03_finetune')", FIRST_CELL)
    assert X.params_from(rerun, "03_finetune").profile == "cpu"
    # papermill writes non-finite floats as float('nan'): still a parameters cell, still checked
    with pytest.raises(X.ParameterError, match=r"'lr_finetun': did you mean 'lr_finetune'"):
        X.params_from(_kernel(params_cell, "# Parameters\nlr_finetun = float('nan')\n", FIRST_CELL), "03_finetune")
    # outside IPython every plain-data variable counts; modules, functions and objects do not
    ns = {"profile": "smoke", "image_size": 48, "plt": object(), "np": np, "X": X, "_private": 1}
    assert X.params_from(ns, "03_finetune").image_size == 48
    with pytest.raises(X.ParameterError, match=r"'imagesize': did you mean 'image_size'"):
        X.params_from({**ns, "imagesize": 96}, "03_finetune")
    with pytest.raises(X.ParameterError, match=r"unknown parameter\(s\) \['backbonee'\] for 03_finetune.*did you mean 'backbone'"):
        X.resolve_params("03_finetune", backbonee="VGG16")


def test_list_parameters_accept_a_list_literal_and_the_hint_says_how():
    """papermill's -p passes "[0,1]" as text; list-typed parameters read it as a list."""
    P = X.resolve_params("03_finetune", profile="smoke", seeds="[0,1]", learning_rates=" [1e-4, 3e-4]")
    assert P.seeds == [0, 1] and P.learning_rates == [1e-4, 3e-4]
    assert X.resolve_params("06_truncation", cuts="[0.5, 1.0]").cuts == [0.5, 1.0]
    assert X.resolve_params("06_truncation", cuts="stages").cuts == "stages"
    with pytest.raises(X.ParameterError, match=r"""parameter 'seeds' must be .*got '0,1'.* -p seeds "\[0, 1\]" \(a list\), or -y "seeds: \[0, 1\]\""""):
        X.resolve_params("03_finetune", seeds="0,1")
    with pytest.raises(X.ParameterError, match=r"parameter 'seeds' got the text '\[0, 1', which is not a Python list\. With papermill: -p seeds"):
        X.resolve_params("03_finetune", seeds="[0, 1")
    # a parameter that is not a list stays text, and its hint stays -p name <value>
    with pytest.raises(X.ParameterError, match=r"parameter 'image_size' must be a positive integer, got '\[64\]'.*-p image_size <value>"):
        X.resolve_params("03_finetune", image_size="[64]")


def test_chapters_are_one_explicit_list_of_typed_dataclasses():
    assert X.NOTEBOOKS == tuple(X.CHAPTERS) == tuple(p.stem for p in sorted((REPO / "notebooks").glob("*.ipynb")))
    for notebook in X.NOTEBOOKS:
        cls = X.chapter_params(notebook)
        assert issubclass(cls, X.ChapterParams) and dataclasses.is_dataclass(cls) and cls.NOTEBOOK == notebook
        for profile in X.PROFILES:
            P = X.resolve_params(notebook, profile=profile)
            assert type(P) is cls and P.notebook == notebook and P.profile == profile
            assert list(vars(P)) == cls.names()  # what the header and summary.json show: the declared fields
    # a wrong value names the field however the instance is made
    P = X.resolve_params("03_finetune", profile="smoke")
    with pytest.raises(X.ParameterError, match=r"parameter 'lr_finetune' must be a positive number, got -1"):
        dataclasses.replace(P, lr_finetune=-1)
    # the registry is the list in params.CHAPTERS: importing the package registers nothing
    init = ast.parse((REPO / "eurosat_lib" / "experiments" / "__init__.py").read_text())
    imported = {a.name for n in ast.walk(init) if isinstance(n, ast.ImportFrom) and n.module is None for a in n.names}
    imported |= {n.module for n in ast.walk(init) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {module for module, _ in X.CHAPTERS.values()}, imported


def test_chapter_modules_import_no_private_names():
    for path in sorted((REPO / "eurosat_lib" / "experiments").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                assert not private, f"{path.name} imports private {private} from {node.module}"


@pytest.mark.parametrize("notebook", PP.NOTEBOOKS)
def test_template_parameters_cell_agrees_with_the_chapter_dataclass(notebook):
    nb = nbformat.read(REPO / "notebooks" / f"{notebook}.ipynb", as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{notebook}: {len(cells)} parameters cells"
    source = cells[0].source
    assigned = {t.id: ast.literal_eval(node.value) for node in ast.parse(source).body for t in node.targets}
    cls = X.chapter_params(notebook)
    assert set(assigned) == set(cls.names()), (
        f"{notebook}: the parameters cell lacks {sorted(set(cls.names()) - set(assigned))} "
        f"and has undeclared {sorted(set(assigned) - set(cls.names()))}"
    )
    cpu = cls.defaults(X.params.DEFAULT_PROFILE)
    assert {k: v for k, v in assigned.items() if v is not None and v != cpu[k]} == {}, f"{notebook}: cell values differ from the default profile"
    regenerate = 'python -c "from eurosat_lib.experiments.params import sync_parameters_cells as s; s()"'
    assert source == PP.parameters_cell(notebook), f"{notebook}: the parameters cell is not the generated one; run {regenerate}"


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


def test_a_run_from_a_weights_file_is_trained_again_when_the_file_changes(tmp_path, monkeypatch):
    """A source network retrained since (its weights are never committed) writes other weights to
    the same path: a target run trained from the old file is not reused."""
    import keras

    def save_backbone(seed: int) -> Path:
        keras.utils.set_random_seed(seed)
        base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None)
        path = tmp_path / "source_backbone.weights.h5"
        base.save_weights(str(path))
        return path

    syn = D.make_synthetic(n_per_class=20)
    acc = T.Accelerator(run_eagerly=True)
    trained = []
    real = T.train_phases
    monkeypatch.setattr(T, "train_phases", lambda *a, **k: trained.append(1) or real(*a, **k))
    path = save_backbone(0)
    spec = _spec(weights=str(path))
    X.run_experiment(spec, syn, tmp_path / "runs", accelerator=acc)
    digest = X.weights_file_digest(path)
    assert len(digest) == 64 and X.recorded_weights_digest(tmp_path / "runs" / "demo") == digest
    X.run_experiment(spec, syn, tmp_path / "runs", accelerator=acc)
    assert len(trained) == 1  # the same file: reused
    save_backbone(1)  # the source retrained: same path, other weights
    X.run_experiment(spec, syn, tmp_path / "runs", accelerator=acc)
    assert len(trained) == 2 and X.recorded_weights_digest(tmp_path / "runs" / "demo") == X.weights_file_digest(path) != digest
    # weights by name, or a file not there (a fresh clone before the source is retrained): no digest, no check
    assert X.weights_file_digest("imagenet") is None and X.weights_file_digest(tmp_path / "missing.h5") is None


def test_header_shows_only_the_chapters_parameters_in_a_closed_dropdown():
    P = X.resolve_params("00_data", profile="smoke")
    html = X.header_table(P, D.make_synthetic(n_per_class=2), notes={"cut after": "block_5"}).data
    assert html.startswith("<details") and "<details open" not in html and html.rstrip().endswith("</details>")
    summary = re.search(r"<summary>(.*?)</summary>", html, re.S).group(1)
    assert "profile <b>smoke</b>" in summary and "5 parameters" in summary and "20 images" in summary
    assert "CPU only" in summary or "GPU" in summary
    rows = re.findall(r"<th>([^<]+)</th>\s*<td>([^<]*)</td>", html)
    names = [n for n, _ in rows]
    assert names[: len(P.names())] == P.names() == ["profile", "data_source", "out_dir", "seed", "grid_per_class"]
    assert {"epochs_head", "lr_finetune", "backbone", "train_fraction"}.isdisjoint(names)  # chapter 00 trains nothing
    assert {"content_digest", "num_images", "cpu", "keras", "cut after"} <= set(names)
    groups = re.findall(r'<th rowspan="\d+" valign="top">(\w+)</th>', html)
    assert groups == ["parameter", "data", "hardware"]  # "note" has one row: no rowspan
    lists = X.header_table(X.resolve_params("03_finetune", profile="smoke")).data
    assert "<td>[0.1]</td>" in lists and "<td>[0]</td>" in lists  # unfreeze_fractions, seeds as typed


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
    # the book shows one parameters cell: papermill's injected copy is removed from the page
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata.tags
    assert not any("remove-cell" in c.metadata.get("tags", []) for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert X.run_notebooks("smoke", ["00_data"], templates_dir=templates, book_dir=book, log=logs.append)[0]["status"] == "skipped"
    assert nb.metadata["eurosat"]["resolved"]["grid_per_class"] == 3 and "out_dir" not in nb.metadata["eurosat"]["resolved"]
    # the same cells and -p parameters under a changed profile default are a different chapter
    from eurosat_lib.experiments.data_overview import DataParams

    orig = DataParams.defaults.__func__
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DataParams, "defaults", classmethod(lambda cls, profile="cpu": {**orig(cls, profile), "grid_per_class": 5}))
        assert X.run_notebooks("smoke", ["00_data"], templates_dir=templates, book_dir=book, log=logs.append)[0]["status"] == "ran"
        assert "the profile's values changed: grid_per_class 3 -> 5" in logs[-2]
    # a chapter executed before the stamp held the profile's values is stale, and says why
    nb = nbformat.read(out, as_version=4)
    del nb.metadata["eurosat"]["resolved"]
    nbformat.write(nb, out)
    assert X.run_notebooks("smoke", ["00_data"], templates_dir=templates, book_dir=book, log=logs.append)[0]["status"] == "ran"
    assert "executed before the profile's values were stamped" in logs[-2]
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
