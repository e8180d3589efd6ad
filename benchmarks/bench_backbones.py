"""Backbone cost on this machine: training and inference images/s, graph tracing time, peak memory.

For each backbone (default MobileNetV2 alpha 0.35, EfficientNetB0, ResNet50; ``weights=None`` —
speed does not depend on the weights' values) at each input size (default 64 and 224 px), a
FRESH Python process builds ``eurosat_lib.models.build_model(...)`` with every layer trainable
and measures:

* ``trace_train_seconds`` — the first ``train_on_batch``: tracing the train step into a graph
  (plus one step). On 2 CPU cores this alone is 10-50 s or more for these networks; it is paid
  once per process (per notebook kernel, per compiled model), and excluded from throughput;
* ``train_images_per_s`` — ``--steps`` timed train steps after ``--warmup`` untimed ones;
* ``trace_inference_seconds`` / ``inference_images_per_s`` — the same for ``predict_on_batch``;
* ``peak_rss_mib`` — the process's peak resident memory (``getrusage``), with the resident
  memory right after importing the framework (``rss_after_import_mib``) for reference. One
  process per configuration, so peaks do not mix.

    python benchmarks/bench_backbones.py                       # 3 backbones x {64, 224} px (~15-25 min on 2 cores)
    python benchmarks/bench_backbones.py --sizes 224 --batch-size 64
    python benchmarks/bench_backbones.py --backbones MobileNetV2:alpha=1.0,ResNet50
    python benchmarks/bench_backbones.py --quick               # one truncated backbone at 32 px, seconds
"""

from __future__ import annotations

import json
import sys
import time

from _common import (
    child_env,
    emit_child_result,
    make_parser,
    peak_rss_mib,
    current_rss_mib,
    print_table,
    ratio,
    run_json_child,
    write_results,
)

NAME = "backbones"
DEFAULT_BACKBONES = "MobileNetV2:alpha=0.35,EfficientNetB0,ResNet50"


def parse_backbone(text: str) -> tuple[str, dict]:
    """``"MobileNetV2:alpha=0.35"`` -> ``("MobileNetV2", {"alpha": 0.35})``."""
    name, _, rest = text.partition(":")
    kwargs = {}
    for item in filter(None, rest.split(";")):
        k, _, v = item.partition("=")
        try:
            kwargs[k.strip()] = json.loads(v)
        except ValueError:
            kwargs[k.strip()] = v.strip()
    return name.strip(), kwargs


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--backbones", default=None,
                   help=f"comma-separated NAME[:key=value;...] (default {DEFAULT_BACKBONES}; MobileNetV2:alpha=0.35 with --quick)")
    p.add_argument("--sizes", default=None, help="comma-separated input sizes (default 64,224; 32 with --quick)")
    p.add_argument("--batch-size", type=int, default=None, help="default 32, 4 with --quick")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 10, 2 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps after the tracing one (default 2, 1 with --quick)")
    p.add_argument("--truncate-at", default=None, help="cut every backbone after this block (default none; expanded_conv with --quick)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per configuration")
    p.add_argument("--worker", action="store_true", help=argparse_hidden())
    p.add_argument("--backbone", default=None, help=argparse_hidden())
    p.add_argument("--size", type=int, default=None, help=argparse_hidden())
    args = p.parse_args(argv)
    q = args.quick
    for k, (quick_v, full_v) in dict(backbones=("MobileNetV2:alpha=0.35", DEFAULT_BACKBONES), sizes=("32", "64,224"),
                                     batch_size=(4, 32), steps=(2, 10), warmup=(1, 2),
                                     truncate_at=("expanded_conv", None)).items():  # fmt: skip
        if getattr(args, k) is None:
            setattr(args, k, quick_v if q else full_v)
    return args


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


# --------------------------------------------------------------------------------------------
# Worker: one configuration, in its own process
# --------------------------------------------------------------------------------------------


def worker(args) -> int:
    t0 = time.perf_counter()
    import keras
    import numpy as np

    from eurosat_lib import models as M
    from eurosat_lib.runs import environment

    import_s = time.perf_counter() - t0
    rss_import = peak_rss_mib()
    name, kwargs = parse_backbone(args.backbone)
    bs = args.batch_size
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(bs, 64, 64, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=(bs,))

    t = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = M.build_model(name, weights=None, image_size=args.size, backbone_kwargs=kwargs, truncate_at=args.truncate_at)
    M.set_trainable(model, "all", freeze_bn=False)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    build_s = time.perf_counter() - t
    params = M.count_params(model)

    def timed_steps(fn) -> tuple[float, float]:
        t = time.perf_counter()
        fn()
        first = time.perf_counter() - t
        for _ in range(args.warmup):
            fn()
        t = time.perf_counter()
        for _ in range(args.steps):
            fn()
        return first, args.steps * bs / (time.perf_counter() - t)

    def train_step():
        float(model.train_on_batch(x, y))  # the float() waits for the step to finish

    def predict_step():
        np.asarray(model.predict_on_batch(x))

    trace_train, train_ips = timed_steps(train_step)
    trace_inf, inf_ips = timed_steps(predict_step)
    env = environment()
    emit_child_result({
        "backbone": name,
        "backbone_kwargs": kwargs,
        "image_size": args.size,
        "truncate_at": args.truncate_at,
        "batch_size": bs,
        "params": params["total"],
        "import_seconds": import_s,
        "build_seconds": build_s,
        "trace_train_seconds": trace_train,
        "train_images_per_s": train_ips,
        "trace_inference_seconds": trace_inf,
        "inference_images_per_s": inf_ips,
        "rss_after_import_mib": rss_import,
        "peak_rss_mib": peak_rss_mib(),
        "rss_at_end_mib": current_rss_mib(),
        "keras_backend": keras.backend.backend(),
        "environment": env,
    })  # fmt: skip
    return 0


# --------------------------------------------------------------------------------------------
# Parent: one child per configuration
# --------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    backbones = [b for b in args.backbones.split(",") if b.strip()]
    sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    configs, env = [], None
    for bb in backbones:
        for size in sizes:
            cmd = [sys.executable, __file__, "--worker", "--backbone", bb, "--size", str(size), "--batch-size", str(args.batch_size),
                   "--steps", str(args.steps), "--warmup", str(args.warmup)]  # fmt: skip
            if args.truncate_at:
                cmd += ["--truncate-at", args.truncate_at]
            print(f"bench_backbones: {bb} at {size} px ...", flush=True)
            res = run_json_child(cmd, env=child_env(), timeout=args.timeout)
            if "error" in res:
                name, kwargs = parse_backbone(bb)
                print(f"  FAILED: {res['error'][-500:]}", flush=True)
                res = {"backbone": name, "backbone_kwargs": kwargs, "image_size": size, "batch_size": args.batch_size, **res}
            else:
                env = env or res.pop("environment")
                res.pop("environment", None)
                print(f"  trace {res['trace_train_seconds']:.1f} s, train {res['train_images_per_s']:.1f} img/s, "
                      f"inference {res['inference_images_per_s']:.1f} img/s, peak {res['peak_rss_mib']:.0f} MiB", flush=True)  # fmt: skip
            configs.append(res)
    ok = [c for c in configs if "error" not in c]

    def label(c):
        kw = "".join(f" {k}={v}" for k, v in (c.get("backbone_kwargs") or {}).items())
        return f"{c['backbone']}{kw}" + (f" (to {c['truncate_at']})" if c.get("truncate_at") else "")

    # Ratios: each configuration relative to the fastest one at the same size.
    ratios: dict = {}
    for size in sizes:
        same = [c for c in ok if c["image_size"] == size]
        if not same:
            continue
        fastest_train = max(c["train_images_per_s"] for c in same)
        fastest_inf = max(c["inference_images_per_s"] for c in same)
        for c in same:
            c["train_slowdown_vs_fastest"] = ratio(fastest_train, c["train_images_per_s"])
            c["inference_slowdown_vs_fastest"] = ratio(fastest_inf, c["inference_images_per_s"])
            c["inference_vs_train_speed"] = ratio(c["inference_images_per_s"], c["train_images_per_s"])
            ratios[f"{label(c)} @{size}: train slowdown vs fastest"] = c["train_slowdown_vs_fastest"]
    for bb in {label(c) for c in ok}:
        mine = sorted((c for c in ok if label(c) == bb), key=lambda c: c["image_size"])
        if len(mine) >= 2:
            lo, hi = mine[0], mine[-1]
            ratios[f"{bb}: train {lo['image_size']}px vs {hi['image_size']}px"] = ratio(lo["train_images_per_s"], hi["train_images_per_s"])

    print_table(
        f"Backbones on this CPU (batch {args.batch_size}, weights=None, all layers trainable; throughput excludes tracing)",
        ["backbone", "px", "params", "train img/s", "x slower", "infer img/s", "x slower", "trace train s", "trace infer s",
         "peak RSS MiB", "RSS after import"],
        [(label(c), c["image_size"], c.get("params"), c.get("train_images_per_s"), c.get("train_slowdown_vs_fastest"),
          c.get("inference_images_per_s"), c.get("inference_slowdown_vs_fastest"), c.get("trace_train_seconds"),
          c.get("trace_inference_seconds"), c.get("peak_rss_mib"), c.get("rss_after_import_mib")) for c in configs],
    )  # fmt: skip
    print("(x slower: relative to the fastest backbone at the same size; one fresh process per row)")
    notes = [
        "graph tracing of a train step is paid once per process and compiled model; it is excluded from images/s "
        "and reported as trace_train_seconds",
        "peak RSS includes the framework itself (see rss_after_import_mib)",
    ]
    if args.quick:
        notes.append("--quick: a truncated backbone at a tiny size; the figures only show that the script works")
    failed = [c for c in configs if "error" in c]
    if failed:
        notes.append(f"{len(failed)} configuration(s) failed: " + ", ".join(f"{label(c)}@{c['image_size']}" for c in failed))
    if env is None:
        from _common import environment

        env = environment()
    write_results(args, NAME, figures={"configs": configs, "batch_size": args.batch_size, "steps": args.steps,
                                       "warmup": args.warmup},
                  ratios=ratios, notes=notes, env=env, started=started)  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
