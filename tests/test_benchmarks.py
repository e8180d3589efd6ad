"""benchmarks/: every script runs with ``--quick``, writes its JSON, and make_report renders them.

The ``--quick`` runs are started together in the background, once per test run
(``conftest.once_per_run`` and ``conftest.start_in_background``), and each test waits for its own: they are mostly interpreter start-up, imports and graph
tracing, so running them side by side keeps this file near a minute on 2 cores. Figures from
``--quick`` are meaningless; only the plumbing (and the absence of TensorFlow from the JAX
script) is checked.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, once_per_run, start_in_background, wait_in_background

# Kept on one worker where pytest-xdist's loadgroup works; once_per_run makes it a nicety.
pytestmark = pytest.mark.xdist_group("benchmarks")

BENCH = REPO / "benchmarks"
#: extra arguments and environment per script
RUNS = {
    "data": ([], {}),
    "transfer": ([], {}),
    "backbones": ([], {}),
    "engine": (["--variants", "engine", "engine_run", "plain"], {}),
    "recipes": ([], {}),
    # the CPU reference is measured in a subprocess (the path a GPU machine without
    # backbones.json takes), not read from the backbones.json written beside it
    "gpu_jax": (["--cpu-reference", "measure"], {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}),
}
TIMEOUT = 600


def _start(out: Path) -> None:
    for name, (extra, extra_env) in RUNS.items():
        env = dict(os.environ, EUROSAT_PROGRESS="0", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", **extra_env)
        env["EUROSAT_DATA_DIR"] = str(out / f"cache_{name}")
        cmd = [sys.executable, str(BENCH / f"bench_{name}.py"), "--quick", "--results-dir", str(out), *extra]
        start_in_background(out, name, cmd, env)


@pytest.fixture(scope="session")
def quick_runs(run_dir):
    # conftest's session fixture reaps these before the worker exits (another may wait on them)
    return once_per_run(run_dir, "bench_results", _start)


def finish(out: Path, name: str) -> tuple[dict, str]:
    rc, stdout, stderr = wait_in_background(out, name, timeout=TIMEOUT)
    text = stdout + stderr
    assert rc == 0, f"bench_{name}.py --quick exited {rc}:\n{text[-4000:]}"
    result = json.loads((out / f"{name}.json").read_text())
    assert result["benchmark"] == name and result["quick"] is True and result["schema"] == 1
    assert result["environment"]["cpu_count"] >= 1 and result["environment"]["python"]
    assert result["wall_seconds"] > 0
    assert isinstance(result["ratios"], dict) and result["ratios"]
    assert "-----" in stdout  # the printed table
    return result, text


def positive(*values) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values)


@pytest.mark.slow
def test_bench_data_quick(quick_runs):
    r, text = finish(quick_runs, "data")
    f, q = r["figures"], r["ratios"]
    assert f["num_images"] == 200
    assert positive(
        f["cold_load_seconds"], f["warm_load_seconds"], f["warm_load_in_memory_seconds"], f["fresh_process_load_seconds"],
        f["fresh_process_import_seconds"], f["image_dataset_from_directory_seconds"], f["tf_data_seconds"],
        f["feed_array_sequence_images_per_s"], f["feed_tf_data_images_per_s"], f["cache_bytes"],
    )  # fmt: skip
    assert positive(
        q["warm_vs_image_dataset_from_directory"], q["warm_vs_tf_data"], q["warm_in_process_vs_image_dataset_from_directory"],
        q["cold_vs_warm"], q["feed_array_sequence_vs_tf_data"],
    )  # fmt: skip
    assert set(r["goals"]) == {"fresh_process_warm_load", "warm_vs_image_dataset_from_directory"}
    for g in r["goals"].values():
        assert isinstance(g["met"], bool) and positive(g["target"], g["value"])
    # each goal is judged on its measured figure (lower is better for the load time)
    fresh, ratio = r["goals"]["fresh_process_warm_load"], r["goals"]["warm_vs_image_dataset_from_directory"]
    assert fresh["value"] == f["fresh_process_load_seconds"] and fresh["met"] == (fresh["value"] <= fresh["target"])
    assert ratio["value"] == q["warm_vs_image_dataset_from_directory"] and ratio["met"] == (ratio["value"] >= ratio["target"])
    assert "image_dataset_from_directory" in text and "ArraySequence" in text


@pytest.mark.slow
def test_bench_transfer_quick(quick_runs):
    r, text = finish(quick_runs, "transfer")
    f, q = r["figures"], r["ratios"]
    c, e = f["per_epoch"]["cached_features"], f["per_epoch"]["end_to_end"]
    assert positive(c["steady_epoch_seconds"], c["first_epoch_seconds"], c["feature_seconds"], c["total_seconds"])
    assert positive(e["steady_epoch_seconds"], e["first_epoch_seconds"], e["total_seconds"])
    assert len(c["epoch_seconds"]) == len(e["epoch_seconds"]) == f["epochs"]
    assert 0 <= c["val_accuracy"] <= 1 and 0 <= e["val_accuracy"] <= 1
    assert positive(q["per_epoch_end_to_end_vs_cached"], q["total_end_to_end_vs_cached_incl_features"])
    assert q["val_accuracy_difference"] >= 0
    assert "time_to_accuracy_finetuned_vs_frozen" in q
    # the goal is judged on the measured ratio, not restated: value is the ratio, met follows from it
    g = r["goals"]["per_epoch_speedup"]
    assert g["target"] == 10.0 and g["value"] == q["per_epoch_end_to_end_vs_cached"] and g["met"] == (g["value"] >= 10.0)
    for path in ("frozen", "finetuned"):
        t = f["time_to_accuracy"][path]
        assert t["curve"] and t["epochs_run"] == len(t["curve"]) and positive(t["total_seconds"])
        # "not reached" is reported as such, never as a number
        assert (t["seconds"] is None) == (not t["reached"])
    assert "Time to 90% validation accuracy" in text


@pytest.mark.slow
def test_bench_backbones_quick(quick_runs):
    r, _ = finish(quick_runs, "backbones")
    (c,) = r["figures"]["configs"]
    assert "error" not in c, c
    assert c["backbone"] == "MobileNetV2" and c["backbone_kwargs"] == {"alpha": 0.35}
    assert positive(c["train_images_per_s"], c["inference_images_per_s"], c["trace_train_seconds"],
                    c["trace_inference_seconds"], c["peak_rss_mib"], c["rss_after_import_mib"])  # fmt: skip
    assert c["peak_rss_mib"] >= c["rss_after_import_mib"]
    assert all(positive(v) for v in r["ratios"].values())


@pytest.mark.slow
def test_bench_engine_quick(quick_runs):
    r, text = finish(quick_runs, "engine")
    f, q = r["figures"], r["ratios"]
    (rnd,) = f["rounds"]
    assert set(rnd) == {"engine", "engine_run", "plain"}
    for m in rnd.values():
        assert positive(m["images_per_s"], m["timed_epoch_seconds"], m["first_epoch_seconds"])
        assert m["load_before"]["other_cores"] >= 0 and m["load_after"]["cpu_count"] >= 1
    assert q["engine_over_plain"] == pytest.approx(rnd["engine"]["images_per_s"] / rnd["plain"]["images_per_s"], rel=1e-3)
    assert r["goals"]["engine_vs_plain"]["target"] == 0.95
    # engine_run: fit_phase as a run calls it (validation, checkpoints, TensorBoard), against the bare engine
    assert q["engine_run_over_engine"] == pytest.approx(rnd["engine_run"]["images_per_s"] / rnd["engine"]["images_per_s"], rel=1e-3)
    assert isinstance(f["contended"], list) and "engine / plain" in text


def test_bench_recipes_quick(quick_runs):
    """Two configurations of the smoke study: e3 (one epoch at 32 px) and finish160 (the same,
    then one epoch at 64 px) share one workload and add one; the modelled minutes follow."""
    r, text = finish(quick_runs, "recipes")
    f, q = r["figures"], r["ratios"]
    assert len(f["speeds"]) == 2 and all(positive(*s.values()) for s in f["speeds"].values())
    (rnd,) = f["rounds"]
    assert set(rnd) == set(f["speeds"]) and all(positive(m["first_epoch_seconds"]) for m in rnd.values())
    conf = f["configurations"]
    assert set(conf) == {"e3", "finish160"} and positive(conf["e3"]["modelled_minutes"])
    # finish160 = e3's work plus one more epoch: strictly more minutes, whatever the speeds
    assert q["finish160_over_e3"] > 1.0 and q["e3_over_e3"] == 1.0
    # one round: the per-round ratio is the ratio, and the per-round minutes are the minutes
    assert conf["finish160"]["over_base_range"] == pytest.approx([q["finish160_over_e3"]] * 2)
    assert conf["e3"]["modelled_minutes_by_round"] == pytest.approx([conf["e3"]["modelled_minutes"]])
    assert "recorded / modelled" in text and isinstance(f["contended"], list)
    # the CPU it ran on is named the way the study names its time axes (no smoke study is committed)
    from eurosat_lib.summaries.recipes import machine_name

    assert f["machine"] == machine_name(r["environment"]) and f["recorded_on"] is None


def test_bench_recipes_names_an_unknown_configuration():
    proc = subprocess.run([sys.executable, str(BENCH / "bench_recipes.py"), "--quick", "--recipes", "e3", "nope"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)  # fmt: skip
    assert proc.returncode != 0 and "--recipes ['nope'] are not configurations of the study" in proc.stderr


@pytest.mark.slow
def test_bench_gpu_jax_quick_runs_without_tensorflow(quick_runs):
    r, text = finish(quick_runs, "gpu_jax")
    f, q = r["figures"], r["ratios"]
    assert "bench_gpu_jax: 1 x cpu (cpu)" in text  # the device header
    assert f["device"]["keras_backend"] == "jax" and f["device"]["device_count"] >= 1
    assert r["environment"]["keras_backend"] == "jax"
    # The script blocks `import tensorflow`; eurosat_lib.data/models/training worked regardless.
    assert f["tensorflow_imported"] is False
    assert [g["policy"] for g in f["runs"]] == ["mixed_float16", "float32"]
    for g in f["runs"]:
        assert positive(g["train_images_per_s"], g["inference_images_per_s"], g["compile_train_seconds"])
    assert f["cpu_reference"]["source"] == "measured" and positive(f["cpu_reference"]["train_images_per_s"])
    assert positive(q["mixed_float16_vs_float32_train"], q["best_train_vs_cpu"], q["float32_train_vs_cpu"])


@pytest.mark.slow
def test_make_report_renders_tables_and_plot(quick_runs, tmp_path):
    for name in RUNS:
        finish(quick_runs, name)
    out = quick_runs
    page = tmp_path / "book" / "performance.md"
    r = subprocess.run([sys.executable, str(BENCH / "make_report.py"), "--results-dir", str(out), "--out", str(page)],
                       capture_output=True, text=True, timeout=180, cwd=REPO)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    text = page.read_text()
    png = tmp_path / "book" / "images" / "performance.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "![Benchmark figures](images/performance.png)" in text
    assert "| method | seconds | images/s |" in text and "|---|---:|" in text
    for title in ("Loading and feeding data", "Cached features vs end-to-end training", "Backbones on the CPU", "MobileNetV2 on a GPU with JAX", "Machines"):
        assert f"## {title}" in text
    assert "{warning}" in text  # quick results are flagged as such
    assert not [p for p in page.parent.rglob(".*tmp*")]  # atomic writes left no temporaries


def test_make_report_without_results(tmp_path):
    page = tmp_path / "performance.md"
    r = subprocess.run([sys.executable, str(BENCH / "make_report.py"), "--results-dir", str(tmp_path / "none"), "--out", str(page)],
                       capture_output=True, text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "No benchmark results yet" in page.read_text()
    assert not (tmp_path / "images").exists()


def _common():
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "_common.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cpu_reference_is_read_from_backbones_results(tmp_path):
    common = _common()
    assert common.cpu_reference_from_backbones(tmp_path / "missing.json", 224) is None
    configs = [
        {"backbone": "MobileNetV2", "backbone_kwargs": {"alpha": 0.35}, "image_size": 64, "batch_size": 32,
         "train_images_per_s": 300.0, "inference_images_per_s": 900.0},
        {"backbone": "MobileNetV2", "backbone_kwargs": {"alpha": 0.35}, "image_size": 224, "batch_size": 32,
         "train_images_per_s": 20.0, "inference_images_per_s": 80.0},
        {"backbone": "ResNet50", "image_size": 224, "batch_size": 32, "train_images_per_s": 5.0, "inference_images_per_s": 15.0},
        {"backbone": "MobileNetV2", "image_size": 128, "error": "exit 1"},
    ]  # fmt: skip
    path = tmp_path / "backbones.json"
    path.write_text(json.dumps({"quick": False, "environment": {"cpu_model": "X", "cpu_count": 2}, "figures": {"configs": configs}}))
    ref = common.cpu_reference_from_backbones(path, 224)
    assert ref["train_images_per_s"] == 20.0 and ref["image_size"] == 224 and "alpha=0.35" in ref["label"]
    assert common.cpu_reference_from_backbones(path, 96)["image_size"] == 64  # nearest size
    path.write_text("{not json")
    assert common.cpu_reference_from_backbones(path, 224) is None


def test_results_are_written_atomically_with_the_common_layout(tmp_path):
    common = _common()
    import argparse
    import time

    args = argparse.Namespace(quick=True, results_dir=tmp_path, path=Path("/x"))
    path = common.write_results(args, "demo", figures={"a": 1.23456789, "nan": float("nan")}, ratios={"r": 2.0},
                                goals={"g": common.goal(3.0, 2.0, "demo goal")}, env={"cpu_count": 2}, started=time.perf_counter())  # fmt: skip
    data = json.loads(path.read_text())
    assert data["figures"] == {"a": 1.2346, "nan": None} and data["args"]["path"] == "/x"
    assert data["goals"]["g"]["met"] is True
    assert [p.name for p in tmp_path.iterdir()] == ["demo.json"]
    assert common.goal(None, 2.0, "x")["met"] is False and common.goal(1.0, 2.0, "x", higher_is_better=False)["met"] is True
    assert common.ratio(1.0, 0) is None and common.ratio(6.0, 3.0) == 2.0


def test_engine_sections_never_show_a_contended_timing():
    """Issue 15: a measurement flagged contended appears as "contended", never as a figure, and
    the quoted ratios use only the rounds where neither side was contended."""
    mr = _make_report_module()
    m = lambda v: {"images_per_s": v}  # noqa: E731
    r = {"figures": {"images": 100, "data": "synthetic", "contended": ["round 2 plain"],
                     "rounds": [{"engine": m(90.0), "plain": m(100.0)}, {"plain": m(12.345), "engine": m(80.0)},
                                {"engine": m(110.0), "plain": m(100.0)}]}}  # fmt: skip
    text = "\n".join(mr.section_engine(r))
    assert "12.3" not in text and "| round 2 | 80 | contended |" in text.replace(".00", "")
    assert "0.900, 1.10; median **1.00x**" in text and "Not shown: round 2 plain" in text
    assert mr._clean_ratios(r, "engine", "plain") == pytest.approx([0.9, 1.1])


def _make_report_module():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("make_report_t", BENCH / "make_report.py")
        mr = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mr)
    finally:
        sys.path.remove(str(BENCH))
    return mr


@pytest.mark.parametrize(("isa", "says", "open_question"), [
    (["avx2"], "AMD EPYC (AVX2), with no bfloat16 instructions", True),
    (["avx2", "avx512f", "avx512_bf16"], "with the avx512_bf16 instructions but no AMX", False),
    (["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"], "with AMX bfloat16 matrix units", False),
    (None, "which SIMD instructions it had was not recorded", True),
])  # fmt: skip
def test_precision_section_states_the_measuring_cpus_own_bf16_support(isa, says, open_question):
    """The XLA / mixed-bfloat16 section once said "this CPU has the avx512_bf16 instructions"
    above a measurement taken on an AVX2-only EPYC: what it says about the CPU now comes from the
    result's recorded ``cpu_isa``, and a verdict from a CPU without bfloat16 instructions says the
    question is still open for one that has them."""
    mr = _make_report_module()
    m = lambda v: {"images_per_s": v}  # noqa: E731
    r = {"environment": {"cpu_model": "AMD EPYC", "cpu_isa": isa, "cpu_count": 2},
         "figures": {"images": 100, "data": "real", "contended": [],
                     "rounds": [{"engine": m(50.0), "engine_xla": m(12.0), "engine_bf16": m(25.0)},
                                {"engine_bf16": m(30.0), "engine_xla": m(14.0), "engine": m(60.0)}]}}  # fmt: skip
    text = "\n".join(mr.section_engine_precision(r))
    assert says in text
    assert ("avx512_bf16 instructions but" in text) == (isa is not None and "avx512_bf16" in isa and "amx_bf16" not in isa)
    assert ("is not measured here" in text) == open_question
    assert "mixed bfloat16 / float32 engine, rounds without contention: 0.500, 0.500 — slower in every round" in text
    table = mr.machine_table({"engine_xla_bf16": r})
    assert ("not recorded" in table) == (isa is None)


def _precision_result(isa, rounds):
    m = lambda v: {"images_per_s": v}  # noqa: E731
    return {"environment": {"cpu_model": "AMD EPYC", "cpu_isa": isa, "cpu_count": 2},
            "figures": {"images": 100, "data": "real", "contended": [],
                        "rounds": [{k: m(v) for k, v in rd.items()} for rd in rounds]}}  # fmt: skip


def test_a_bf16_cpu_answers_the_open_question_and_one_fast_round_is_no_win():
    """Mixed bfloat16 measured on a CPU with avx512_bf16 (340, 339 and 190 images/s for the float32
    engine as the machine drifted): one round where bfloat16 came out ahead is not a verdict, the
    median is; and the AVX2 section then points to it instead of calling the question open."""
    mr = _make_report_module()
    bf16 = _precision_result(["avx2", "avx512f", "avx512_bf16"], [
        {"engine": 340.0, "engine_xla": 14.1, "engine_bf16": 104.3},
        {"engine_bf16": 207.2, "engine_xla": 14.2, "engine": 339.3},
        {"engine": 189.9, "engine_xla": 22.5, "engine_bf16": 206.8}])  # fmt: skip
    text = "\n".join(mr.section_engine_precision(bf16))
    assert "mixed bfloat16 / float32 engine, rounds without contention: 0.307, 0.611, 1.09; median 0.611x" in text
    assert "not faster than float32 in 2 of 3 rounds: kept off on this CPU." in text
    assert "XLA / float32 engine, rounds without contention: 0.041, 0.042, 0.118 — slower in every round" in text
    assert "ran at 189.9 to 340.0 images/s" in text and "is not measured here" not in text
    steady = _precision_result(["avx2", "avx512f", "avx512_bf16"], [{"engine": 100.0, "engine_bf16": 110.0},
                                                                     {"engine_bf16": 98.0, "engine": 100.0}])  # fmt: skip
    assert "median 1.04x: not slower on this CPU." in "\n".join(mr.section_engine_precision(steady))
    avx2 = _precision_result(["avx2"], [{"engine": 50.0, "engine_xla": 12.0, "engine_bf16": 25.0}])
    both = mr.render({"engine_xla_bf16": avx2, "engine_xla_bf16_avx512": bf16}, "images/performance.png")
    assert "## XLA and mixed bfloat16 on a CPU with bfloat16 instructions" in both
    assert "is not measured here" not in both and "the section *XLA and mixed bfloat16 on a CPU with bfloat16" in both
    alone = mr.render({"engine_xla_bf16": avx2}, "images/performance.png")
    assert "is not measured here" in alone and "with bfloat16 instructions" not in alone  # optional: not "Not run yet"


def test_engine_section_says_what_a_runs_bookkeeping_costs():
    """engine_run (validation, checkpoints, TensorBoard) against the bare engine, per round and as a
    median slowdown; a median within 3 % is called indistinguishable from the drift, not a cost."""
    mr = _make_report_module()
    r = _precision_result(["avx2"], [{"engine": 100.0, "engine_run": 80.0, "plain": 100.0},
                                     {"plain": 90.0, "engine_run": 85.0, "engine": 100.0}])  # fmt: skip
    text = "\n".join(mr.section_engine(r))
    assert "engine_run / engine per round: 0.800, 0.850; median 0.825x: that bookkeeping slows an epoch of 100 images by about 21 %." in text
    # a fixed cost per epoch (0.25 s and 0.176 s here): its share of a whole-split epoch is what a run pays
    assert "about 0.213 s per epoch (median over rounds), so on an epoch of the whole training split (16,200 images, 162.0 s" in text
    assert "about 0 %." in text
    r["figures"]["rounds"][0]["engine_run"]["images_per_s"] = 101.0
    r["figures"]["rounds"][1]["engine_run"]["images_per_s"] = 97.0
    assert "median 0.990x: no cost this measurement can tell from the drift." in "\n".join(mr.section_engine(r))
    assert "engine_run" not in "\n".join(mr.section_engine(_precision_result(["avx2"], [{"engine": 1.0, "plain": 1.0}])))


def _bench_recipes_module():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_recipes_t", BENCH / "bench_recipes.py")
        br = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = br  # its dataclass looks its module up there
        spec.loader.exec_module(br)
    finally:
        sys.path.remove(str(BENCH))
        sys.modules.pop("bench_recipes_t", None)
    return br


def test_recipe_cost_ratio_range_pairs_the_configurations_within_each_round():
    """bench_recipes: each round's ratio to base uses that round's speeds for both (a paired
    comparison); the range is the lowest and highest over rounds, the ratio itself uses medians."""
    br = _bench_recipes_module()
    from eurosat_lib.experiments import recipe_study as RS

    by_name = {r.name: r for r in RS.RECIPES}
    plan = [(by_name[n], RS.spec_for(by_name[n], RS.PROFILES["cpu"], 0)) for n in ("base", "e10", "px160")]
    w128, w160 = br.phase_workloads(plan[0][1])[0][1], br.phase_workloads(plan[2][1])[0][1]
    # round 1: both sizes at full speed; round 2: 160 px slowed to half (drift hitting one workload)
    r1 = {w128.label: {"train_images_per_s": 100.0, "infer_images_per_s": 200.0},
          w160.label: {"train_images_per_s": 60.0, "infer_images_per_s": 120.0}}
    r2 = {w128.label: {"train_images_per_s": 100.0, "infer_images_per_s": 200.0},
          w160.label: {"train_images_per_s": 30.0, "infer_images_per_s": 60.0}}
    speeds = {w128: r1[w128.label], w160: {"train_images_per_s": 45.0, "infer_images_per_s": 90.0}}
    conf = br.configuration_minutes(plan, speeds, [r1, r2], 16200, 5400, 10, "base")
    base_m = br.modelled_minutes(plan[0][1], 16200, 5400, speeds, 200.0)
    assert conf["base"]["modelled_minutes"] == pytest.approx(base_m) and conf["base"]["over_base_range"] == [1.0, 1.0]
    # e10 is base's workload for 10 epochs instead of 6: the same ratio in every round
    lo, hi = conf["e10"]["over_base_range"]
    assert lo == pytest.approx(hi) == pytest.approx(conf["e10"]["over_base"])
    # px160 costs twice as much in round 2 as in round 1 (its head features too), base the same
    m1, m2 = conf["px160"]["modelled_minutes_by_round"]
    assert m2 == pytest.approx(2 * m1)
    assert conf["px160"]["over_base_range"] == pytest.approx([m1 / base_m, m2 / base_m])
    assert m1 / base_m < conf["px160"]["over_base"] < m2 / base_m


def test_recipe_minutes_model_counts_only_the_validation_images_a_phase_scores():
    """bench_recipes: a phase validating on a subset pays for the subset each epoch, not the split."""
    br = _bench_recipes_module()
    from eurosat_lib.experiments import recipe_study as RS

    by_name = {r.name: r for r in RS.RECIPES}
    full, fast = (RS.spec_for(by_name[n], RS.PROFILES["cpu"], 0) for n in ("e10_px160", "fast160"))
    w = br.phase_workloads(full)[0][1]
    assert br.phase_workloads(fast)[0][1] == w  # the same workload: only validation and epochs differ
    speeds = {w: {"train_images_per_s": 100.0, "infer_images_per_s": 200.0}}
    # head features (16,200 + 5,400) / 200; then per epoch 16,200 / 100 + watched / 200
    assert br.modelled_minutes(full, 16200, 5400, speeds, 200.0) * 60 == pytest.approx(108 + 10 * (162 + 27))
    assert br.modelled_minutes(fast, 16200, 5400, speeds, 200.0) * 60 == pytest.approx(108 + 8 * (162 + 2.5))
