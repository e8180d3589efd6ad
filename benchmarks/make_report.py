"""Turn ``benchmarks/results/*.json`` into the book's performance page and its figure.

    python benchmarks/make_report.py      # -> book/performance.md + book/images/performance.png

Reads whichever of ``data.json``, ``transfer.json``, ``backbones.json`` and ``gpu_jax.json`` exist
(the page says which benchmarks have not been run), writes a Markdown page with the figures,
the ratios, the goals and the machines they were measured on, and one PNG with a panel per
benchmark. Both files are written atomically. Needs matplotlib only (no TensorFlow).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from _common import REPO, RESULTS_DIR, fmt, lib_io, median

ORDER = ("data", "transfer", "backbones", "engine", "engine_xla_bf16", "engine_xla_bf16_avx512", "gpu_jax")
#: Results a reader need not run (they need a particular CPU): never listed under "Not run yet".
OPTIONAL = ("engine_xla_bf16_avx512",)
TITLES = {
    "data": "Loading and feeding data",
    "transfer": "Cached features vs end-to-end training",
    "backbones": "Backbones on the CPU",
    "engine": "The training engine against plain Keras",
    "engine_xla_bf16": "XLA and mixed bfloat16 against float32",
    "engine_xla_bf16_avx512": "XLA and mixed bfloat16 on a CPU with bfloat16 instructions",
    "gpu_jax": "MobileNetV2 on a GPU with JAX",
}
SCRIPTS = {name: f"benchmarks/bench_{name}.py" for name in ORDER}
SCRIPTS["engine_xla_bf16"] = "benchmarks/bench_engine.py --variants engine engine_xla engine_bf16 --results-dir DIR (saved as engine_xla_bf16.json)"
SCRIPTS["engine_xla_bf16_avx512"] = ("benchmarks/bench_engine.py --variants engine engine_xla engine_bf16 --results-dir DIR "
                                     "(on a CPU with avx512_bf16 or AMX; saved as engine_xla_bf16_avx512.json)")



#: Figure style of the performance page: the width it is drawn at and the smallest font used.
FIG_WIDTH_IN = 7.5
SMALL_PT = 10
LEGIBLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": SMALL_PT,
           "ytick.labelsize": SMALL_PT, "legend.fontsize": SMALL_PT}  # fmt: skip

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--out", type=Path, default=REPO / "book" / "performance.md", help="the Markdown page")
    p.add_argument("--image", type=Path, default=None, help="the PNG (default: images/performance.png beside --out)")
    args = p.parse_args(argv)
    if args.image is None:
        args.image = args.out.parent / "images" / "performance.png"
    return args


def load_results(folder: Path) -> dict[str, dict]:
    out = {}
    for name in ORDER:
        path = folder / f"{name}.json"
        if path.is_file():
            try:
                out[name] = json.loads(path.read_text())
            except ValueError as e:
                print(f"make_report: skipping unreadable {path}: {e}", file=sys.stderr)
    return out


# --------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; columns after the first that hold numbers are aligned right.

    Args:
        headers: Column headers.
        rows: One sequence of values per row (formatted by ``fmt``; ``|`` in a cell is escaped).

    Returns:
        The table (the results page's :func:`~eurosat_lib.summaries.render.md_table`).
    """
    from eurosat_lib.summaries.render import md_table as render_table

    def numeric(i):
        vals = [row[i] for row in rows if i < len(row) and row[i] is not None]
        return i > 0 and any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)

    keys = [str(i) for i in range(len(headers))]
    cells = [{str(i): fmt(v).replace("|", "\\|") for i, v in enumerate(row)} for row in rows]
    return render_table(cells, list(zip(keys, headers)), right=[k for i, k in enumerate(keys) if numeric(i)])


def x(v) -> str | None:
    return None if v is None else f"{fmt(float(v))}x"


def section_data(r: dict) -> list[str]:
    f, q = r["figures"], r["ratios"]
    n = f["num_images"]
    fresh = f["fresh_process_load_seconds"]
    rows = [
        ("eurosat_lib, cold (decode + write cache)", f["cold_load_seconds"], n / f["cold_load_seconds"], x(f["cold_load_seconds"] / fresh)),
        ("eurosat_lib, warm, in the same process (memory-mapped, the default)", f["warm_load_seconds"], n / f["warm_load_seconds"], x(f["warm_load_seconds"] / fresh)),
        ("eurosat_lib, warm, read into memory (`mmap=False`)", f["warm_load_in_memory_seconds"], n / f["warm_load_in_memory_seconds"], x(f["warm_load_in_memory_seconds"] / fresh)),
        ("**eurosat_lib, warm, fresh process** (the load call)", fresh, n / fresh, "1x"),
        ("keras `image_dataset_from_directory`", f["image_dataset_from_directory_seconds"], n / f["image_dataset_from_directory_seconds"],
         x(q["warm_vs_image_dataset_from_directory"])),
        ("`tf.data` list_files → read_file → decode_jpeg", f["tf_data_seconds"], n / f["tf_data_seconds"], x(q["warm_vs_tf_data"])),
    ]  # fmt: skip
    feed = [
        ("`ArraySequence` (cached arrays)", f["feed_array_sequence_epoch_seconds"], f["feed_array_sequence_images_per_s"],
         x(q["feed_array_sequence_vs_tf_data"])),
        ("`tf.data` JPEG pipeline", f["feed_tf_data_epoch_seconds"], f["feed_tf_data_images_per_s"], "1x"),
    ]  # fmt: skip
    return [
        f"All {n:,} images into NumPy arrays. The last column is each method's time divided by the warm load "
        "in a fresh Python process — what a reader sees when a notebook starts.",
        "",
        md_table(["method", "seconds", "images/s", "time vs warm load"], rows),
        "",
        f"A fresh process also spends {fmt(f['fresh_process_import_seconds'])} s importing `eurosat_lib` "
        f"(whole process: {fmt(f['fresh_process_wall_seconds'])} s); the cache takes {f['cache_bytes'] / 2**20:,.0f} MiB.",
        "",
        f"Feeding a trivial model (global average pooling + dense on uint8 input) for one epoch, batch {f['feed_batch_size']}:",
        "",
        md_table(["pipeline", "epoch seconds", "images/s", "speed vs tf.data"], feed),
    ]


def section_transfer(r: dict) -> list[str]:
    f, q = r["figures"], r["ratios"]
    c, e = f["per_epoch"]["cached_features"], f["per_epoch"]["end_to_end"]
    out = [
        f"{f['model']}: the same head trained for {f['epochs']} epochs on {f['train_images']:,} images (batch "
        f"{f['batch_size']}), validated on {f['val_images']:,}. The per-epoch time is the median of the epochs after "
        "the first; the first one includes graph tracing.",
        "",
        md_table(
            ["path", "seconds / epoch", "first epoch s", "feature extraction s", "total s", "val accuracy", "slower"],
            [
                ("head on cached features", c["steady_epoch_seconds"], c["first_epoch_seconds"], c["feature_seconds"], c["total_seconds"], c["val_accuracy"], "1x"),
                ("end to end, frozen base", e["steady_epoch_seconds"], e["first_epoch_seconds"], None, e["total_seconds"], e["val_accuracy"], x(q["per_epoch_end_to_end_vs_cached"])),
            ],
        ),  # fmt: skip
        "",
        f"Including the one-off feature extraction, {f['epochs']} epochs end to end take "
        f"{x(q['total_end_to_end_vs_cached_incl_features'])} as long; the two paths' validation accuracies differ by "
        f"{fmt(q['val_accuracy_difference'])}.",
    ]
    tta = f.get("time_to_accuracy") or {}
    if tta:
        rows = []
        for name, label in (("frozen", "frozen base, head on cached features"), ("finetuned", "head, then fine-tuning")):
            t = tta[name]
            where = f"{t['reached_at']['phase']}, epoch {t['reached_at']['epoch']}" if t["reached"] else f"not reached in {t['epochs_run']} epochs"
            rows.append((label, t["seconds"] if t["reached"] else "not reached", where, t["best_val_accuracy"], t["total_seconds"]))
        out += [
            "",
            f"Time to {f['target_val_accuracy']:.0%} validation accuracy, counted from the start of training (feature "
            "extraction and graph tracing included):",
            "",
            md_table(["path", "seconds", "reached at", "best val accuracy", "seconds run"], rows),
        ]
    return out


def _label(c: dict) -> str:
    kw = "".join(f" {k}={v}" for k, v in (c.get("backbone_kwargs") or {}).items())
    return f"{c['backbone']}{kw}" + (f" (to {c['truncate_at']})" if c.get("truncate_at") else "")


def section_backbones(r: dict) -> list[str]:
    f = r["figures"]
    rows = [
        (_label(c), c["image_size"], f"{c['params']:,}" if isinstance(c.get("params"), int) else c.get("params"), c.get("train_images_per_s"), x(c.get("train_slowdown_vs_fastest")),
         c.get("inference_images_per_s"), c.get("trace_train_seconds"), c.get("peak_rss_mib"), c.get("error", "")[:60] or None)
        for c in f["configs"]
    ]  # fmt: skip
    return [
        f"`weights=None`, every layer trainable, batch {f['batch_size']}, {f['steps']} timed steps after "
        f"{f['warmup']} warm-up steps; one fresh process per row. *Tracing* is the one-off cost of turning the "
        "train step into a graph, paid again by every new process or re-compiled model, and left out of the "
        "throughput. *Slower* compares with the fastest backbone at the same size.",
        "",
        md_table(["backbone", "px", "parameters", "train images/s", "slower", "inference images/s", "tracing s", "peak memory MiB", "error"], rows),
    ]


def section_gpu(r: dict) -> list[str]:
    f, q = r["figures"], r["ratios"]
    d = f["device"]
    cpu = f.get("cpu_reference")
    f32 = next((g for g in f["runs"] if g["policy"] == "float32"), None)
    rows = [
        (g["policy"], g["train_images_per_s"], x(g["train_images_per_s"] / f32["train_images_per_s"]) if f32 else None,
         g["inference_images_per_s"], g["compile_train_seconds"], g.get("device_peak_mib"),
         x(g["train_images_per_s"] / cpu["train_images_per_s"]) if cpu else None)
        for g in f["runs"]
    ]  # fmt: skip
    if cpu:
        rows.append((f"CPU: {cpu['label']}", cpu["train_images_per_s"], None, cpu.get("inference_images_per_s"), cpu.get("compile_train_seconds"), None, "1x"))
    out = [
        f"{f['model']} on {d['device_count']} × {d['device_kind']} ({d['platform']}), JAX {d['jax']}, Keras {d['keras']}. "
        f"TensorFlow imported: {'**yes**' if f['tensorflow_imported'] else 'no'}.",
        "",
        md_table(["policy", "train images/s", "vs float32", "inference images/s", "compile s", "device peak MiB", "vs CPU"], rows),
    ]
    if "best_train_vs_cpu" in q:
        out += ["", f"Best training throughput ({f['best_policy']}) is {x(q['best_train_vs_cpu'])} the CPU figure."]
    return out


def _engine_rounds(r: dict) -> tuple[list[str], list[tuple], list[str]]:
    """Per-round images/s, with measurements flagged contended left out (never shown as figures)."""
    f = r["figures"]
    variants = list(f["rounds"][0]) if f["rounds"] else []
    contended = set(f.get("contended") or [])
    rows, hidden = [], []
    for i, rd in enumerate(f["rounds"], 1):
        cells = []
        for v in variants:
            if f"round {i} {v}" in contended:
                cells.append("contended")
                hidden.append(f"round {i} {v}")
            else:
                cells.append(rd[v]["images_per_s"])
        rows.append((f"round {i}", *cells))
    return variants, rows, hidden


def _clean_rounds(r: dict, *variants: str) -> list[dict]:
    """The rounds that measured every one of ``variants``, none of them under contention."""
    contended = set(r["figures"].get("contended") or [])
    return [rd for i, rd in enumerate(r["figures"]["rounds"], 1)
            if all(v in rd and f"round {i} {v}" not in contended for v in variants)]  # fmt: skip


def _clean_ratios(r: dict, num: str, den: str) -> list[float]:
    """``num/den`` of the rounds where neither measurement was taken under contention."""
    return [rd[num]["images_per_s"] / rd[den]["images_per_s"] for rd in _clean_rounds(r, num, den)]


def section_engine(r: dict) -> list[str]:
    f = r["figures"]
    variants, rows, hidden = _engine_rounds(r)
    clean = _clean_ratios(r, "engine", "plain")
    text = [
        f"One epoch of MobileNetV2 (α = 0.35, ImageNet weights, all layers trainable, BatchNorm frozen, flips) on "
        f"{f['images']:,} {f['data']} images, trained through `training.fit_phase` (engine) and through a plain "
        "`model.fit` on the same arrays (plain), alternating which goes first, in one process. Images/s of the "
        "second (timed) epoch of each measurement:",
        "",
        md_table(["", *variants], rows),
        "",
    ]
    if clean:
        med = median(clean)
        text.append(f"engine / plain per round: {', '.join(fmt(c) for c in clean)}; median **{fmt(med)}x** "
                    f"(goal ≥ 0.95x). The rounds differ by up to {fmt(max(clean) - min(clean))} — the machine's own "
                    "speed drifts that much within minutes, which is why only ratios taken side by side are quoted.")  # fmt: skip
    run = _clean_ratios(r, "engine_run", "engine")
    if run:
        med = median(run)
        text.append(f"engine_run is `fit_phase` as the recipe study's runs call it: a validation pass at the end of each "
                    "epoch, resumable checkpoints and the best weights saved, TensorBoard logs; its images/s counts the "
                    f"training images over that whole epoch. engine_run / engine per round: {', '.join(fmt(c) for c in run)}; "
                    f"median {fmt(med)}x" + (f": that bookkeeping slows an epoch of {f['images']:,} images by about "
                                             f"{100 * (1 / med - 1):.0f} %." if med < 0.97 else
                                             ": no cost this measurement can tell from the drift."))  # fmt: skip
        fixed = median(_fixed_seconds(r, "engine_run", "engine"))
        eng = median([rd["engine"]["images_per_s"] for rd in _clean_rounds(r, "engine")])
        if med < 0.97 and fixed > 0 and eng:
            # the bookkeeping is a fixed cost per epoch (the same 500 validation images, the same
            # checkpoint files), so its share shrinks as the epoch grows: say what it is on a real one
            full = FULL_TRAIN_IMAGES / eng
            text.append(f"It is a cost per epoch, not per image: about {fmt(fixed)} s per epoch (median over rounds), "
                        f"so on an epoch of the whole training split ({FULL_TRAIN_IMAGES:,} images, {fmt(full)} s at the "
                        f"engine's median speed here) about {100 * fixed / full:.0f} %.")  # fmt: skip
    if hidden:
        text.append(f"Not shown: {', '.join(hidden)} (another job kept a core busy when it ran).")
    return text


#: Images in EuroSAT's training split (60 % of 27,000): one epoch of a chapter's or the study's run.
FULL_TRAIN_IMAGES = 16_200


def _fixed_seconds(r: dict, num: str, den: str) -> list[float]:
    """Per round without contention, the seconds ``num``'s epoch took beyond ``den``'s on the same images."""
    n = r["figures"]["images"]
    return [n / rd[num]["images_per_s"] - n / rd[den]["images_per_s"] for rd in _clean_rounds(r, num, den)]


def bf16_hardware(environment: dict) -> str:
    """What the measuring CPU offers bfloat16 arithmetic, from the result's own ``cpu_isa`` (never
    assumed: the VMs behind these results change between sessions, and an AVX2-only one once ran
    this measurement while the page claimed avx512_bf16)."""
    isa = environment.get("cpu_isa")
    model = environment.get("cpu_model") or "this CPU"
    if isa is None:
        return f"{model}; which SIMD instructions it had was not recorded"
    if "amx_bf16" in isa:
        return f"{model}, with AMX bfloat16 matrix units"
    if "avx512_bf16" in isa:
        return f"{model}, with the avx512_bf16 instructions but no AMX matrix units"
    widest = "AVX-512" if "avx512f" in isa else "AVX2" if "avx2" in isa else "no AVX2"
    return f"{model} ({widest}), with no bfloat16 instructions (neither avx512_bf16 nor AMX)"


def has_bf16(environment: dict) -> bool:
    """Whether the measuring CPU recorded bfloat16 instructions (avx512_bf16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & set(environment.get("cpu_isa") or ()))


def ratio_verdict(ratios: Sequence[float]) -> str:
    """What a variant's per-round speed ratios to the float32 engine say, in words.

    A variant is kept off unless its median over rounds is at least 0.95x: one round faster than the
    engine is not a win when the machine's own speed drifts between rounds.
    """
    med = median(ratios)
    faster = sum(c >= 1.0 for c in ratios)
    if max(ratios) < 0.95:
        return " — slower in every round: kept off on this CPU."
    if med < 0.95:
        return (f"; median {fmt(med)}x, not faster than float32 in {len(ratios) - faster} of {len(ratios)} rounds: "
                "kept off on this CPU.")
    return f"; median {fmt(med)}x: not slower on this CPU."


def section_engine_precision(r: dict, answered_in: str | None = None) -> list[str]:
    """XLA and mixed bfloat16 against the float32 engine, per round, with what the measuring CPU offers.

    Args:
        r: A ``bench_engine.py --variants engine engine_xla engine_bf16`` result.
        answered_in: The title of the section that measured a CPU with bfloat16 instructions, when
            this one had none (the open question is then answered there, not left open).
    """
    variants, rows, hidden = _engine_rounds(r)
    env = r.get("environment") or {}
    text = [
        "The same engine measurement with XLA compilation (`jit_compile=True`) and with Keras' `mixed_bfloat16` "
        f"policy, on {bf16_hardware(env)}. Images/s of the timed epoch:",
        "",
        md_table(["", *variants], rows),
        "",
    ]
    for v, what in (("engine_xla", "XLA"), ("engine_bf16", "mixed bfloat16")):
        c = _clean_ratios(r, v, "engine")
        if c:
            text.append(f"{what} / float32 engine, rounds without contention: {', '.join(fmt(x) for x in c)}" + ratio_verdict(c))
    own = [rd["engine"]["images_per_s"] for rd in _clean_rounds(r, "engine")]
    if len(own) > 1 and max(own) > 1.2 * min(own):
        text.append(f"The float32 engine itself ran at {fmt(min(own))} to {fmt(max(own))} images/s in these rounds (the "
                    "machine's drift, same work): a single round's ratio is not a verdict, the median over rounds is.")  # fmt: skip
    if not has_bf16(env):
        text.append(f"This CPU has no bfloat16 instructions: the section *{answered_in}* measures one that has them."
                    if answered_in else
                    "Whether mixed bfloat16 pays on a CPU that has bfloat16 instructions (avx512_bf16 or AMX) is not "
                    "measured here: the same command on such a machine answers it.")  # fmt: skip
    if hidden:
        text.append(f"Not shown: {', '.join(hidden)} (another job kept a core busy when it ran).")
    return text


def section(name: str, results: dict[str, dict]) -> list[str]:
    """One benchmark's section; the precision section on a CPU without bfloat16 points to one with it."""
    if name == "engine_xla_bf16":
        other = results.get("engine_xla_bf16_avx512")
        answered = TITLES["engine_xla_bf16_avx512"] if other and has_bf16(other.get("environment") or {}) else None
        return section_engine_precision(results[name], answered)
    return SECTIONS[name](results[name])


SECTIONS = {"engine": section_engine, "engine_xla_bf16": section_engine_precision,
            "engine_xla_bf16_avx512": section_engine_precision, "data": section_data, "transfer": section_transfer, "backbones": section_backbones, "gpu_jax": section_gpu}


def machine_table(results: dict[str, dict]) -> str:
    keys = [("cpu_model", "CPU"), ("cpu_isa", "CPU SIMD"), ("cpu_count", "CPU cores"), ("gpus", "GPUs"), ("platform", "platform"),
            ("python", "Python"),
            ("tensorflow", "TensorFlow"), ("keras", "Keras"), ("keras_backend", "Keras backend"), ("jax", "JAX"),
            ("eurosat_lib", "eurosat_lib"), ("timestamp", "measured (UTC)")]  # fmt: skip
    names = list(results)
    rows = []
    for key, label in keys:
        vals = []
        for n in names:
            v = (results[n].get("environment") or {}).get(key)
            vals.append(", ".join(map(str, v)) if isinstance(v, list) else v)
        if key == "gpus":
            vals = [v or "none" for v in vals]
        if key == "cpu_isa":  # results from before cpu_isa was kept say so, not "None"
            vals = [("not recorded" if (results[n].get("environment") or {}).get(key) is None else v or "none")
                    for n, v in zip(names, vals)]  # fmt: skip
        rows.append((label, *vals))
    return md_table(["", *names], rows)


def goals_table(results: dict[str, dict]) -> str | None:
    rows = []
    for name, r in results.items():
        for g in (r.get("goals") or {}).values():
            op = ">=" if g.get("higher_is_better", True) else "<="
            rows.append((name, g["description"], f"{op} {fmt(float(g['target']))}", g["value"], "met" if g["met"] else "**not met**"))
    return md_table(["benchmark", "goal", "target", "measured", ""], rows) if rows else None


def render(results: dict[str, dict], image_rel: str) -> str:
    # The newest measurement's time, not the clock: the same results always give the same page,
    # so a test can tell a stale committed page from a fresh one.
    stamps = sorted(str((r.get("environment") or {}).get("timestamp") or "") for r in results.values())
    when = f" (latest measurement {stamps[-1]})" if stamps and stamps[-1] else ""
    lines = [
        "# Performance",
        "",
        f"*Generated by `benchmarks/make_report.py` from `benchmarks/results/*.json`{when}. Do not edit by hand: "
        "re-run the benchmarks (see `benchmarks/README.md`) and this script.*",
        "",
        "How long the book's machinery takes, and why it is built the way it is: EuroSAT is decoded once and cached "
        "as arrays; with a frozen backbone the features are computed once and only the head trains; and the "
        "figures below say what each backbone costs on the CPU that ran the book and on a GPU.",
        "",
    ]
    quick = [n for n, r in results.items() if r.get("quick")]
    if quick:
        lines += [":::{warning}", f"Smoke-test results (`--quick`) for: {', '.join(quick)}. Their figures are "
                  "meaningless; re-run those benchmarks without `--quick`.", ":::", ""]  # fmt: skip
    missing = [n for n in ORDER if n not in results and n not in OPTIONAL]
    if not results:
        lines += ["No benchmark results yet. Run the scripts in `benchmarks/` first.", ""]
        return "\n".join(lines)
    lines += [f"![Benchmark figures]({image_rel})", ""]
    g = goals_table(results)
    if g:
        lines += ["## Goals", "", g, ""]
    for name in ORDER:
        if name in results:
            r = results[name]
            lines += [f"## {TITLES[name]}", "", *section(name, results), ""]
            if r.get("notes"):
                lines += ["Notes:", "", *[f"- {n}" for n in r["notes"]], ""]
            lines += [f"*`{SCRIPTS[name]}`, {fmt(r.get('wall_seconds'))} s.*", ""]
    if missing:
        lines += ["## Not run yet", "", *[f"- {TITLES[n]}: `python {SCRIPTS[n]}`" for n in missing], ""]
    lines += ["## Machines", "", machine_table(results), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------------


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    if "data" in results:
        panels.append(("data", _plot_data))
    if "transfer" in results:
        panels.append(("transfer", _plot_transfer_epoch))
        if results["transfer"]["figures"].get("time_to_accuracy"):
            panels.append(("transfer", _plot_tta))
    if "backbones" in results:
        panels.append(("backbones", _plot_backbones))
    if "gpu_jax" in results:
        panels.append(("gpu_jax", _plot_gpu))
    n = max(1, len(panels))
    # One panel per row at about the book's text width (7.5 in at 110 dpi ~ 825 px, shown at
    # ~750 px), with fonts of 10-12 pt: two panels side by side were shrunk to half size on the
    # page and their 7-8 pt labels could not be read.
    cols = 1
    rows = math.ceil(n / cols)
    with plt.rc_context(LEGIBLE):
        fig, axes = plt.subplots(rows, cols, figsize=(FIG_WIDTH_IN, 4.3 * rows), squeeze=False)
        for ax, (name, fn) in zip(axes.flat, panels):
            fn(ax, results[name])
        for ax in list(axes.flat)[len(panels) :]:
            ax.axis("off")
        if not panels:
            axes[0, 0].text(0.5, 0.5, "no results", ha="center", va="center")
        fig.tight_layout()
        with lib_io().atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _plot_data(ax, r):
    f = r["figures"]
    items = [
        ("cold load", f["cold_load_seconds"]),
        ("warm, fresh process", f["fresh_process_load_seconds"]),
        ("warm, in process", f["warm_load_seconds"]),
        ("image_dataset_from_directory", f["image_dataset_from_directory_seconds"]),
        ("tf.data JPEG", f["tf_data_seconds"]),
    ]
    colors = ["#8da0cb", "#1b9e77", "#66c2a5", "#d95f02", "#e7298a"]
    ax.barh([k for k, _ in items], [v for _, v in items], color=colors)
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("seconds (log scale)")
    ax.set_xlim(right=max(v for _, v in items) * 4)  # room for the value labels
    ax.set_title(f"Load {f['num_images']:,} images into NumPy")
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {fmt(v)} s", va="center", fontsize=SMALL_PT)


def _plot_transfer_epoch(ax, r):
    f = r["figures"]["per_epoch"]
    names = ["cached features", "end to end"]
    vals = [f["cached_features"]["steady_epoch_seconds"], f["end_to_end"]["steady_epoch_seconds"]]
    ax.bar(names, vals, color=["#1b9e77", "#d95f02"])
    for i, v in enumerate(vals):
        ax.text(i, v, f"{fmt(v)} s", ha="center", va="bottom", fontsize=SMALL_PT)
    ratio = r["ratios"].get("per_epoch_end_to_end_vs_cached")
    ax.set_ylabel("seconds per epoch")
    ax.set_title("Head training per epoch" + (f" ({fmt(ratio)}x)" if ratio else ""))


def _plot_tta(ax, r):
    f = r["figures"]
    target = f["target_val_accuracy"]
    for name, color in (("frozen", "#1b9e77"), ("finetuned", "#7570b3")):
        t = f["time_to_accuracy"].get(name)
        if not t or not t["curve"]:
            continue
        xs = [p["seconds"] for p in t["curve"]]
        ys = [p["val_accuracy"] for p in t["curve"]]
        ax.plot(xs, ys, marker="o", ms=3, color=color, label=name + ("" if t["reached"] else " (not reached)"))
    ax.axhline(target, color="grey", ls="--", lw=1)
    ax.set_xlim(left=0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("wall seconds from the start of training")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"Time to {target:.0%} validation accuracy")
    ax.legend(fontsize=SMALL_PT)


def _plot_backbones(ax, r):
    configs = [c for c in r["figures"]["configs"] if c.get("train_images_per_s")]
    # Horizontal bars: the labels ("MobileNetV2 alpha=0.35, 224 px") read on one line each,
    # where under vertical bars they overlapped their neighbours.
    labels = [_label(c).split(" (to")[0] + f", {c['image_size']} px" for c in configs]
    idx = list(range(len(configs)))
    h = 0.4
    ax.barh([i - h / 2 for i in idx], [c["train_images_per_s"] for c in configs], h, label="train", color="#d95f02")
    ax.barh([i + h / 2 for i in idx], [c["inference_images_per_s"] for c in configs], h, label="inference", color="#1b9e77")
    ax.set_yticks(idx, labels, fontsize=SMALL_PT)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("images per second (log scale)")
    ax.set_title("Backbones on the CPU")
    ax.legend(fontsize=SMALL_PT, loc="lower right")


def _plot_gpu(ax, r):
    f = r["figures"]
    names = [g["policy"] for g in f["runs"]]
    vals = [g["train_images_per_s"] for g in f["runs"]]
    colors = ["#7570b3"] * len(vals)
    cpu = f.get("cpu_reference")
    if cpu:
        names.append("CPU")
        vals.append(cpu["train_images_per_s"])
        colors.append("#999999")
    ax.bar(names, vals, color=colors)
    ax.set_yscale("log")
    ax.set_ylim(bottom=min(vals) / 3)
    ax.set_ylabel("training images/s (log scale)")
    d = f["device"]
    ax.set_title(f"MobileNetV2 on {d['device_count']} x {d['device_kind']}"[:60])
    for i, v in enumerate(vals):
        ax.text(i, v, fmt(v), ha="center", va="bottom", fontsize=SMALL_PT)


# --------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    results = load_results(args.results_dir)
    image_rel = os.path.relpath(args.image, args.out.parent).replace(os.sep, "/")
    if results:
        plot(results, args.image)
    text = render(results, image_rel)
    with lib_io().atomic_path(args.out, suffix=".md") as tmp:
        tmp.write_text(text)
    print(f"make_report: {len(results)} result file(s) -> {args.out}" + (f" and {args.image}" if results else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
