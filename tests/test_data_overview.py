"""Tests for eurosat_lib.experiments.data_overview (chapter 00): split table, leakage checks,
exact channel statistics, ImageNet normalisation arithmetic, the JSON summary."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import keras
import numpy as np
import pandas as pd
import pytest

from eurosat_lib import data as D
from eurosat_lib.experiments import ParameterError, resolve_params
from eurosat_lib.experiments import data_overview as DO


@pytest.fixture(scope="module")
def synth():
    return D.make_synthetic(n_per_class=12, seed=1)


def _manifest(rows):
    return pd.DataFrame(rows, columns=["file_id", "label", "split"])


def test_split_sizes_of_the_committed_manifest():
    sizes = DO.split_sizes(DO.read_manifest_table())
    total = sizes.loc["all classes"]
    assert (total["train"], total["val"], total["test"], total["total"]) == (16_200, 5_400, 5_400, 27_000)
    assert list(sizes.index[:-1]) == list(D.CLASS_NAMES)
    for name, n in D.CLASS_COUNTS.items():
        row = sizes.loc[name]
        assert row["total"] == n
        assert (row["train"], row["val"], row["test"]) == (0.6 * n, 0.2 * n, 0.2 * n)
    assert np.allclose(sizes["train share"], 0.6)


def test_leakage_checks_find_ids_in_two_splits_and_label_mismatches():
    clean = _manifest([("Forest/Forest_1", "Forest", "train"), ("River/River_1", "River", "test")])
    checks = DO.leakage_checks(clean)
    assert checks["manifest_ids_in_two_splits"] == checks["manifest_duplicate_ids"] == 0
    assert checks["manifest_label_mismatch"] == 0
    leaky = _manifest([
        ("Forest/Forest_1", "Forest", "train"),
        ("Forest/Forest_1", "Forest", "test"),   # the same file in two splits
        ("River/River_1", "River", "val"),
        ("River/River_1", "River", "val"),       # listed twice, one split: a duplicate, no leak
        ("River/River_2", "SeaLake", "val"),     # label disagrees with the folder
    ])  # fmt: skip
    checks = DO.leakage_checks(leaky)
    assert checks["manifest_duplicate_ids"] == 2
    assert checks["manifest_ids_in_two_splits"] == 1
    assert checks["manifest_label_mismatch"] == 1
    assert checks["examples"] == ["Forest/Forest_1"]


def test_leakage_checks_see_a_copied_image_across_splits(synth):
    manifest = _manifest(list(zip(synth.file_ids, [synth.class_names[i] for i in synth.labels], synth.split)))
    checks = DO.leakage_checks(manifest, synth)
    assert checks["data_ids_in_two_splits"] == 0
    assert checks["identical_images_across_splits"] == 0
    # Plant a copy of a training image in the test split under another file id.
    i_train = int(np.flatnonzero(synth.split == "train")[0])
    i_test = int(np.flatnonzero(synth.split == "test")[0])
    images = synth.images.copy()
    images[i_test] = images[i_train]
    checks = DO.leakage_checks(manifest, replace(synth, images=images))
    assert checks["identical_images_across_splits"] == 1
    assert checks["data_ids_in_two_splits"] == 0  # the file-id check alone would have missed it
    assert sorted([str(synth.file_ids[i_train]), str(synth.file_ids[i_test])]) in checks["examples"]


def test_channel_stats_are_exact_and_use_the_training_split(synth):
    stats = DO.channel_stats(synth, split="train")
    train = synth.get_split("train")
    px = train.images.reshape(-1, 3).astype(np.float64)
    assert np.allclose(stats.loc["all", "mean"], px.mean(axis=0), atol=1e-9)
    assert np.allclose(stats.loc["all", "std"], px.std(axis=0), atol=1e-9)
    assert stats.loc["all", ("images", "")] == len(train)
    c = 3
    cls = train.images[train.labels == c].reshape(-1, 3).astype(np.float64)
    assert np.allclose(stats.loc[synth.class_names[c], "std"], cls.std(axis=0), atol=1e-9)
    assert list(stats.index) == [*synth.class_names, "all"]
    everything = DO.channel_stats(synth, split=None)
    assert everything.loc["all", ("images", "")] == len(synth)


def test_preprocessed_stats_match_keras_preprocess_input(synth):
    stats = DO.channel_stats(synth, split="train")
    pre = DO.preprocessed_stats(stats)
    x = synth.get_split("train").images.astype("float32")
    for row, module in (("tf: x/127.5 − 1", "mobilenet_v2"), ("caffe: x − ImageNet mean", "resnet50"),
                        ("torch: (x/255 − mean)/std", "densenet")):  # fmt: skip
        y = np.asarray(getattr(keras.applications, module).preprocess_input(x.copy()), dtype=np.float64)
        if module == "resnet50":
            y = y[..., ::-1]  # caffe returns BGR; the table is in RGB order
        y = y.reshape(-1, 3)
        assert np.allclose(pre.loc[row, "mean"], y.mean(axis=0), atol=1e-3), row
        assert np.allclose(pre.loc[row, "std"], y.std(axis=0), atol=1e-3), row


def test_imagenet_statistics_would_give_zero_mean_unit_std_under_torch():
    mean = np.array(DO.IMAGENET_MEAN) * 255
    std = np.array(DO.IMAGENET_STD) * 255
    cols = pd.MultiIndex.from_tuples([("mean", c) for c in DO.CHANNELS] + [("std", c) for c in DO.CHANNELS])
    stats = pd.DataFrame([list(mean) + list(std)], index=["all"], columns=cols)
    torch = DO.preprocessed_stats(stats).loc["torch: (x/255 − mean)/std"]
    assert np.allclose(torch["mean"], 0) and np.allclose(torch["std"], 1)
    norm = DO.normalization_table(stats)
    assert np.allclose(norm.loc["EuroSAT − ImageNet"], 0)
    assert np.allclose(norm.loc["ImageNet", "mean"], [0.485, 0.456, 0.406])


def test_summary_json_is_written_atomically(synth, tmp_path):
    manifest = DO.read_manifest_table()
    sizes = DO.split_sizes(manifest)
    stats = DO.channel_stats(synth)
    checks = DO.leakage_checks(manifest)
    info = DO.summary(synth, sizes, stats, checks)
    path = DO.write_summary(SimpleNamespace(out_dir=str(tmp_path / "out")), info)
    assert path.name == DO.SUMMARY_FILE
    back = json.loads(path.read_text())
    assert back["split_sizes"] == {"train": 16_200, "val": 5_400, "test": 5_400}
    assert back["split_class_counts"]["test"]["Pasture"] == 400
    assert back["class_counts"] == synth.class_counts()
    assert back["channel_mean_01"]["red"] == pytest.approx(back["channel_mean_255"]["red"] / 255)
    assert back["leakage"]["manifest_ids_in_two_splits"] == 0
    assert [p.name for p in path.parent.iterdir()] == [DO.SUMMARY_FILE]  # no temporary left behind


def test_notebook_parameters():
    P = resolve_params("00_data", profile="smoke")
    assert P.seed == 0 and P.grid_per_class >= 1
    with pytest.raises(ParameterError, match="'seed'"):
        resolve_params("00_data", profile="cpu", seed=-1)
