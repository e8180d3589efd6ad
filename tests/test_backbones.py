"""Chapter 05 study module (eurosat_lib.experiments.backbones): candidates, recipe specs, choice."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from eurosat_lib import data as D
from eurosat_lib import models as M
from eurosat_lib.experiments import ParameterError, resolve_params
from eurosat_lib.experiments import backbones as BB
from eurosat_lib.experiments import finetune as FT
from eurosat_lib.experiments.core import RunResult


def test_parse_candidate():
    assert BB.parse_candidate("MobileNetV2:0.35") == ("MobileNetV2", 0.35)
    assert BB.parse_candidate(" resnet50 ") == ("ResNet50", None)  # registry spelling
    assert BB.parse_candidate("MobileNet:0.25") == ("MobileNet", 0.25)
    with pytest.raises(ValueError, match="only MobileNets take a width multiplier"):
        BB.parse_candidate("ResNet50:0.5")
    with pytest.raises(ValueError, match="not a number"):
        BB.parse_candidate("MobileNetV2:big")
    with pytest.raises(ValueError, match="Unknown backbone 'ResNet5'"):
        BB.parse_candidate("ResNet5")


@pytest.mark.parametrize(
    "given, message",
    [
        ({"candidates": ["MobileNetV2:0.35", "ResNet5"]}, r"parameter 'candidates' is invalid: Unknown backbone"),
        ({"candidates": ["ResNet50", "resnet50"]}, r"parameter 'candidates' lists the same candidate twice"),
        ({"candidates": []}, r"parameter 'candidates' must be a non-empty list"),
        ({"scratch_if_missing": "yes"}, r"parameter 'scratch_if_missing' must be True or False"),
        ({"scratch_seeds": 0}, r"parameter 'scratch_seeds' must be a number of seeds"),
    ],
)
def test_bad_parameters_fail_naming_them(given, message):
    with pytest.raises(ParameterError, match=message):
        resolve_params(BB.NOTEBOOK, profile="smoke", **given)


@pytest.fixture
def on_disk(monkeypatch):
    """Pretend exactly these (backbone, alpha) ImageNet files are on disk; downloads fail."""
    have = {("MobileNetV2", 0.35), ("MobileNet", 0.25)}
    monkeypatch.setattr(BB, "weights_available", lambda b, w, **kw: (b, kw.get("alpha")) in have)
    monkeypatch.setattr(M, "find_local_weights", lambda b, **kw: f"/weights/{b}_{kw.get('alpha')}.h5")

    real = M.resolve_weights

    def no_download(backbone, weights, **kw):
        if weights != "imagenet":
            return real(backbone, weights, **kw)
        raise M.WeightsUnavailableError(f"ImageNet weights for {backbone} are not available: 'x_notop.h5'")

    monkeypatch.setattr(M, "resolve_weights", no_download)


def test_candidates_are_pretrained_where_weights_exist_else_from_scratch(on_disk):
    P = resolve_params(BB.NOTEBOOK, profile="cpu", candidates=["MobileNetV2:0.35", "MobileNet:0.25", "ResNet50", "MobileNetV2:0.5"])
    cands = BB.resolve_candidates(P)
    assert [c.pretrained for c in cands] == [True, True, False, False]
    assert [c.image_size for c in cands] == [P.image_size, P.image_size, P.scratch_image_size, P.scratch_image_size]
    assert cands[2].label == f"ResNet50 · from scratch · {P.scratch_image_size}px" and cands[2].weights_file is None
    assert cands[0].label == f"MobileNetV2-0.35 · ImageNet · {P.image_size}px" and cands[0].weights_file.endswith(".h5")
    table = BB.candidates_table(cands)
    assert list(table["init"]) == ["ImageNet", "ImageNet", "from scratch", "from scratch"]
    # weights=none: everything from scratch, at the scratch size.
    P0 = resolve_params(BB.NOTEBOOK, profile="cpu", weights="none", candidates=["MobileNetV2:0.35"])
    assert not BB.resolve_candidates(P0)[0].pretrained


def test_missing_weights_fail_fast_when_scratch_is_not_allowed(on_disk):
    P = resolve_params(BB.NOTEBOOK, profile="gpu", candidates=["MobileNetV2:0.35", "EfficientNetB0"])
    assert P.scratch_if_missing is False
    with pytest.raises(M.WeightsUnavailableError, match="EfficientNetB0"):
        BB.resolve_candidates(P)
    P = resolve_params(BB.NOTEBOOK, profile="cpu", candidates=["Xception"], scratch_image_size=64)
    with pytest.raises(ParameterError, match=r"'Xception' needs inputs of at least 71 px, got 64 \(parameter scratch_image_size\)"):
        BB.resolve_candidates(P)


def test_candidate_specs_pretrained_use_the_chapter_3_recipe_scratch_its_own(on_disk):
    P = resolve_params(BB.NOTEBOOK, profile="cpu", candidates=["MobileNetV2:0.35", "ResNet50"])
    pre, scr = BB.resolve_candidates(P)
    a, b = BB.candidate_spec(P, pre, seed=1), BB.candidate_spec(P, scr, seed=0)
    ns = pre.namespace(P)
    ns.test_n_per_class = P.leaderboard_test_n_per_class
    ref = FT.recipe_spec(ns, name=a.name, fraction=P.unfreeze_fraction, lr=P.lr_finetune, seed=1, full_test=True)
    assert a.phases[0] == ref.phases[0] and a.backbone_kwargs == {"alpha": 0.35} and a.weights == "imagenet"
    head, tune = a.phases
    assert head.use_feature_cache and tune.unfreeze == FT.unfreeze_policy("MobileNetV2", P.unfreeze_fraction) and tune.freeze_bn
    # The fine-tune runs to its plateau (issue 12: 3 constant-rate epochs left 4 of 5 runs still
    # climbing back): cosine over a cap, early stopping on validation accuracy; otherwise chapter 3's phase.
    assert tune.schedule == "cosine" and tune.early_stopping == 3 and tune.early_stopping_monitor == "val_accuracy"
    assert tune.epochs == P.epochs_finetune >= 10 and tune.learning_rate == ref.phases[1].learning_rate == P.lr_finetune
    assert dataclasses.replace(tune, schedule=ref.phases[1].schedule, early_stopping=ref.phases[1].early_stopping,
                               early_stopping_monitor=ref.phases[1].early_stopping_monitor) == ref.phases[1]
    # From scratch: never a head phase on a frozen random backbone; one phase, every layer and
    # BatchNorm training from the first step, cosine schedule, early stopping, the same epoch cap.
    (only,) = b.phases
    assert b.weights is None and b.backbone_kwargs == {} and b.image_size == P.scratch_image_size and b.freeze_bn is False
    assert only.name == "scratch" and not only.use_feature_cache and only.unfreeze == "all" and not only.freeze_bn
    assert only.learning_rate == P.lr_scratch and only.schedule == "cosine" and only.early_stopping == BB.SCRATCH_PATIENCE
    # early stopping watches accuracy: the loss of a scratch network rises while its accuracy climbs
    assert only.early_stopping_monitor == "val_accuracy" and b.to_dict()["phases"][0]["early_stopping_monitor"] == "val_accuracy"
    assert only.epochs == P.scratch_epochs >= P.epochs_finetune and b.augment == "flip"
    assert b.tags["bn_momentum"] == M.SCRATCH_BN_MOMENTUM and b.tags["init"] == "from scratch"
    with pytest.raises(ValueError, match="without ImageNet weights"):
        BB.scratch_spec(P, pre, seed=0)
    for s in (a, b):
        assert s.eval_splits == ("val", "test") and s.test_n_per_class == P.leaderboard_test_n_per_class
        assert s.tags["chapter"] == BB.NOTEBOOK and s.val_n_per_class == P.val_n_per_class and s.n_per_class == P.n_per_class
    assert a.name == "mobilenetv2-0.35_imagenet_128px_seed1" and b.name == "resnet50_scratch_64px_seed0"
    assert BB.seeds_for(P, pre) == P.seeds and BB.seeds_for(P, scr) == list(range(P.scratch_seeds))


def _board() -> pd.DataFrame:
    rows = []
    for cand, init, accs, params, ips in [
        ("A", "ImageNet", [0.90, 0.92], 0.4e6, 900.0),
        ("B", "ImageNet", [0.93, 0.93], 0.7e6, 500.0),
        ("C", "from scratch", [0.60], 25e6, 100.0),
        ("D", "ImageNet", [0.93], 0.3e6, 400.0),
    ]:
        for seed, acc in enumerate(accs):
            rows.append({"candidate": cand, "backbone": cand, "init": init, "image_size": 128, "seed": seed,
                         "val_accuracy": acc, "val_macro_f1": acc, "test_accuracy": acc - 0.01, "test_macro_f1": acc,
                         "total_params": params, "inference_images_per_s": ips, "fit_seconds": 10.0})  # fmt: skip
    return pd.DataFrame(rows)


def test_summary_choice_and_pareto_front():
    df = _board()
    board = BB.summarise(df)
    assert list(board.index) == ["D", "B", "A", "C"]  # B and D tie on validation: fewer parameters first
    assert board.loc["A", "seeds"] == 2 and np.isclose(board.loc["A", "val_accuracy"], 0.91)
    assert np.isclose(board.loc["B", "params_M"], 0.7)
    assert BB.choose(df) == "D"
    assert set(BB.pareto_front(board)) == {"A", "B"}  # D is as accurate as B but slower; C is beaten by all


class _UniformModel:
    def __init__(self):
        self.calls = 0

    def predict(self, images, batch_size=256, verbose=0):
        self.calls += 1
        p = np.full((len(images), 10), 0.05, dtype=np.float32)
        p[:, 0] = 0.55
        return p

    def __call__(self, images, training=False):  # training.predict_batches calls the model per batch
        return self.predict(images)


def test_final_test_scores_only_the_chosen_candidate_and_reuses_saved_metrics(tmp_path):
    data = D.make_synthetic(n_per_class=10)
    P = resolve_params(BB.NOTEBOOK, profile="cpu", out_dir=str(tmp_path), test_n_per_class=2)
    model = _UniformModel()
    runs = {}
    for label, seed in (("A", 0), ("A", 1), ("B", 0)):
        d = tmp_path / f"{label}{seed}"
        d.mkdir()
        runs[(label, seed)] = RunResult(record={"params": {"spec_key": f"k{label}{seed}"}}, run_dir=d, model=model)
    final, metrics = BB.final_test(P, data, runs, "A")
    assert list(final["seed"]) == [0, 1] and (final["test_n"] == 20).all() and model.calls == 2
    assert np.allclose(final["test_accuracy"], 0.1)  # always class 0: 2 of 20
    assert set(metrics) == {0, 1} and np.array(metrics[0]["confusion_matrix"]).shape == (10, 10)
    assert json.loads((tmp_path / "A0" / "final_test.json").read_text())["key"]["n"] == 20
    assert not (tmp_path / "B0" / "final_test.json").exists()
    BB.final_test(P, data, runs, "A")
    assert model.calls == 2  # reused from final_test.json
    P_all = resolve_params(BB.NOTEBOOK, profile="cpu", out_dir=str(tmp_path), test_n_per_class=None)
    final_all, _ = BB.final_test(P_all, data, runs, "A")
    assert (final_all["test_n"] == len(data.get_split("test"))).all() and model.calls == 4  # new subset: recomputed
    with pytest.raises(ValueError, match="no runs of candidate 'Z'"):
        BB.final_test(P, data, runs, "Z")


def test_a_scratch_candidate_trains_every_layer_from_the_first_step_at_smoke_size(tmp_path):
    """A real (smoke-size) run of a candidate without weights: its record shows one all-layers
    phase, no head phase on frozen random features, and almost every backbone weight trainable."""
    data = D.make_synthetic(n_per_class=30, seed=0)
    P = resolve_params(BB.NOTEBOOK, profile="smoke", out_dir=str(tmp_path), weights="none",
                       candidates=["MobileNetV2:0.35"], data_source="synthetic")  # fmt: skip
    (cand,) = BB.resolve_candidates(P)
    assert not cand.pretrained
    df, runs = BB.compare_backbones(P, data, [cand])
    rec = runs[(cand.label, 0)].record
    assert [ph["name"] for ph in rec["history"]] == ["scratch"]
    assert rec["params"]["phases"][0]["unfreeze"] == "all" and rec["params"]["phases"][0]["use_feature_cache"] is False
    bp = rec["model_info"]["backbone_params"]
    # only BatchNorm's moving statistics are non-trainable
    assert bp["trainable"] > 0.95 * bp["total"], bp
    assert rec["model_info"]["bn_frozen"] is False
    assert df["init"].tolist() == ["from scratch"]


def test_cpu_profile_scores_every_candidate_on_the_whole_validation_split(on_disk):
    P = resolve_params(BB.NOTEBOOK, profile="cpu", candidates=["MobileNetV2:0.35", "ResNet50"])
    assert P.val_n_per_class is None and len(P.seeds) >= 5 and P.scratch_seeds >= 3  # issue 12's power
    pre, scr = BB.resolve_candidates(P)
    a, b = BB.candidate_spec(P, pre, seed=0), BB.candidate_spec(P, scr, seed=0)
    assert a.val_n_per_class is None and b.val_n_per_class is None  # scored on all at the end ...
    assert a.phases[-1].val_n_per_class == b.phases[-1].val_n_per_class == P.monitor_n_per_class == 30  # ... watched on a subset
    assert a.phases[0].val_n_per_class is None  # the head phase on cached features watches all: seconds


def _board_runs(tmp_path, accs, inits, flagged=()):
    rows = []
    for c, vals in accs.items():
        for seed, v in enumerate(vals):
            folder = tmp_path / f"{c}_{seed}"
            folder.mkdir()
            rec = {"params": {"image_size": 128}, "metrics": {"val": {"accuracy": v, "n": 5400}, "test": {"accuracy": v, "n": 500}},
                   "warnings": ["chance-level"] if c in flagged else []}  # fmt: skip
            (folder / "record.json").write_text(json.dumps(rec))
            rows.append({"candidate": c, "init": inits[c], "image_size": 128, "seed": seed, "val_accuracy": v,
                         "val_macro_f1": v, "test_accuracy": v, "test_macro_f1": v, "total_params": 1e6,
                         "inference_images_per_s": 100.0, "fit_seconds": 60.0, "run": str(folder)})  # fmt: skip
    runs = pd.DataFrame(rows)
    return runs, BB.summarise(runs)


def test_leaderboard_and_test_paragraphs_use_the_paired_interval(tmp_path):
    from eurosat_lib.summaries import RecordContext
    from eurosat_lib.summaries import backbones as SB

    ctx = RecordContext(root=tmp_path)
    a = [0.90, 0.91, 0.89, 0.90, 0.92]
    accs = {"A": a, "B": [v - 0.002 + 0.01 * (-1) ** i for i, v in enumerate(a)], "C": [v - 0.05 for v in a]}
    runs, board = _board_runs(tmp_path, accs, {"A": "ImageNet", "B": "ImageNet", "C": "from scratch"})
    text = SB.leaderboard_paragraph(runs, board, ["A"], ctx=ctx)
    assert "**A**" in text and "5,400 validation images" in text
    b_part = text.split("**B**")[1].split(";")[0]
    assert "no measurable difference" in b_part  # 0.2 points on noise of a point: not "worse"
    c_part = text.split("**C**")[1].split(";")[0]
    assert "**worse**" in c_part and "from scratch, **C**" in text
    final = pd.DataFrame({"seed": range(5), "test_accuracy": a, "test_macro_f1": a, "test_n": 5400})
    same = SB.test_paragraph(runs, "A", final, ctx=ctx)
    assert "the same candidate is first" in same and "5,400 images" in same
    other = SB.test_paragraph(runs.assign(test_accuracy=runs["test_accuracy"].where(runs["candidate"] != "B", 0.99)), "A", final, ctx=ctx)
    assert "**B** is first" in other and "**better**" in other and "optimistic" in other
    # a flagged candidate is never compared
    (tmp_path / "flagged").mkdir()
    runs2, board2 = _board_runs(tmp_path / "flagged", accs, {"A": "ImageNet", "B": "ImageNet", "C": "from scratch"}, flagged=("C",))
    assert "not compared" in SB.leaderboard_paragraph(runs2, board2, ctx=ctx).split("**C**")[1]
