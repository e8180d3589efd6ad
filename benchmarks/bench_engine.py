"""The training engine against plain Keras: is ``training.fit_phase`` as fast as ``model.fit``?

The same network (MobileNetV2 alpha 0.35, ImageNet weights, every layer unfrozen but BatchNorm
kept in inference mode, horizontal/vertical flips in the model), the same real training images,
the same batch size and optimiser, trained two ways:

* **engine** — ``training.fit_phase`` exactly as the chapters call it (``ArraySequence`` feeding,
  per-epoch seeding, a run folder with its CSV history; no validation, so both sides do the
  same work);
* **engine, bare** — ``fit_phase`` without a run folder (no history file, no weights saved), to
  separate the record keeping from the training loop;
* **engine, as a run** (``engine_run``) — ``fit_phase`` as the recipe study and the headline runs
  call it: resumable checkpoints (``BackupAndRestore``) and the best weights saved every epoch,
  TensorBoard logs, and a validation pass on ``--val-per-class`` images per class (500, as the
  recipe study's long configurations) at the end of each epoch. Its images/s counts the training
  images over the whole epoch, so ``engine_run / engine`` is what that bookkeeping costs;
* **plain Keras** — ``model.compile(...)`` + ``model.fit(x_uint8, y, batch_size, shuffle=True)``.

Each measurement builds a fresh model, trains ``--epochs`` (default 2) epochs and times the
*last* one with a callback, so graph tracing (paid once per compile by both) stays out of the
figure; the first epoch's time is reported apart. Measurements are **interleaved and repeated**
(``--pairs`` rounds, the order alternating each round), because this machine's speed drifts by
tens of per cent within minutes: only ratios taken side by side mean anything. Each measurement
records the load average before and after; one started on a busy machine is flagged.

Goal: engine >= 0.95x plain Keras images/s (median of the per-round ratios).

    python benchmarks/bench_engine.py                 # 4,000 real images, 128 px, 3 rounds (~10 min on 2 cores)
    python benchmarks/bench_engine.py --variants engine plain engine_xla
    python benchmarks/bench_engine.py --variants engine engine_xla engine_bf16   # XLA and mixed_bfloat16 on this CPU
    python benchmarks/bench_engine.py --variants engine engine_run               # what validation + checkpoints cost
    python benchmarks/bench_engine.py --quick         # synthetic, 32 px, seconds; meaningless figures
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

from _common import epoch_clock, finish, goal, make_parser, median, print_table, ratio

NAME = "engine"
VARIANTS = ("engine", "engine_bare", "engine_run", "plain", "engine_xla", "plain_xla", "engine_bf16")


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--n-per-class", type=int, default=None, help="training images per class (default 400, 4 with --quick)")
    p.add_argument("--image-size", type=int, default=None, help="backbone input size (default 128, 32 with --quick)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2, help="epochs per measurement; the last one is timed")
    p.add_argument("--pairs", type=int, default=None, help="interleaved rounds (default 3, 1 with --quick)")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=None,
                   help="what to compare (default engine engine_bare plain; engine plain with --quick)")
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--val-per-class", type=int, default=50, help="validation images per class of engine_run (2 with --quick)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    defaults = dict(n_per_class=(4, 400), image_size=(32, 128), pairs=(1, 3),
                    variants=(["engine", "plain"], ["engine", "engine_bare", "plain"]))  # fmt: skip
    for k, (quick_v, full_v) in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, quick_v if args.quick else full_v)
    return args


def load_train(args):
    from eurosat_lib import data as D

    if args.quick:
        return D.make_synthetic(n_per_class=args.n_per_class, seed=args.seed), "synthetic"
    ds = D.load_eurosat(download=False)
    return ds.get_split("train", n_per_class=args.n_per_class, seed=args.seed), "real EuroSAT training split"


def load_val(args):
    """The validation images ``engine_run`` scores each epoch (the recipe study's 500 by default)."""
    from eurosat_lib import data as D

    if args.quick:
        return D.make_synthetic(n_per_class=min(args.val_per_class, 2), seed=args.seed + 1)
    return D.load_eurosat(download=False).get_split("val", n_per_class=args.val_per_class, seed=args.seed)


def build(args):
    from eurosat_lib import models as M

    weights = None if args.quick else "imagenet"
    model = M.build_model(
        "MobileNetV2", weights=weights, image_size=args.image_size, augment="flip", freeze_bn=True,
        backbone_kwargs={"alpha": 0.35}, seed=args.seed,
    )  # fmt: skip
    return M.set_trainable(model, "all", freeze_bn=True)


def machine_load() -> dict:
    """The machine's load with this process's own share taken off (``runs.machine_load``): a raw
    load average counts the previous measurement of this very script, so it cannot tell a quiet
    machine from a busy one after the first measurement."""
    from eurosat_lib import runs

    return runs.machine_load()


def measure(variant: str, args, train, val=None) -> dict:
    import keras

    from eurosat_lib import training as T

    keras.backend.clear_session()
    T.set_seed(args.seed)
    # mixed_bfloat16 only pays where the CPU has bfloat16 instructions (avx512_bf16 or AMX; the
    # result's environment.cpu_isa says which this one had); the policy must be set before the
    # model is built, and reset after, so the other variants stay float32.
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if variant.endswith("_bf16") else "float32")
    model = build(args)
    clock = epoch_clock()
    xla = variant.endswith("_xla")
    load_before = machine_load()
    if variant.startswith("engine"):
        phase = T.PhaseConfig(name="finetune", epochs=args.epochs, learning_rate=args.learning_rate,
                              batch_size=args.batch_size, unfreeze="all", freeze_bn=True)  # fmt: skip
        acc = T.Accelerator(jit_compile=xla)
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = None if variant == "engine_bare" else tmp
            as_run = variant == "engine_run"
            # the clock is the last callback: an epoch's time includes the checkpoints and logs
            # the callbacks before it write at the epoch's end, and the validation pass before them
            T.fit_phase(model, train, val if as_run else None, phase, seed=args.seed, run_dir=run_dir, accelerator=acc,
                        tensorboard=as_run, checkpoints=as_run, extra_callbacks=[clock])  # fmt: skip
    else:
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], jit_compile=xla)  # fmt: skip
        model.fit(train.images, train.labels, batch_size=args.batch_size, epochs=args.epochs, shuffle=True,
                  callbacks=[clock], verbose=0)  # fmt: skip
    load_after = machine_load()
    keras.mixed_precision.set_global_policy("float32")
    last = clock.seconds[-1]
    return {
        "variant": variant,
        "images_per_s": len(train) / last,
        "timed_epoch_seconds": last,
        "first_epoch_seconds": clock.seconds[0],
        "load_before": load_before,
        "load_after": load_after,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    os.environ.setdefault("EUROSAT_PROGRESS", "0")
    train, what = load_train(args)
    cores = os.cpu_count() or 1
    print(f"{len(train)} images ({what}), {args.image_size} px, batch {args.batch_size}, "
          f"{args.pairs} interleaved rounds of {args.variants}, {cores} cores")  # fmt: skip
    val = load_val(args) if "engine_run" in args.variants else None
    rounds = []
    for r in range(args.pairs):
        order = list(args.variants) if r % 2 == 0 else list(reversed(args.variants))
        rounds.append({v["variant"]: v for v in (measure(name, args, train, val) for name in order)})
        print("  round", r + 1, ", ".join(f"{k}: {v['images_per_s']:.1f} img/s" for k, v in rounds[-1].items()))

    # A measurement is contended when other processes (this one's own share taken off) kept more
    # than half the cores busy at its start or end: the rule every run record uses.
    from eurosat_lib import runs

    contended = [f"round {i + 1} {k}" for i, rd in enumerate(rounds) for k, v in rd.items()
                 if runs.is_contended(v["load_before"], v["load_after"])]  # fmt: skip
    rows, figures = [], {"images": len(train), "data": what, "rounds": rounds, "contended": contended}
    for name in args.variants:
        speeds = [rd[name]["images_per_s"] for rd in rounds]
        figures[f"{name}_images_per_s"] = median(speeds)
        rows.append((name, median(speeds), min(speeds), max(speeds), median(rd[name]["first_epoch_seconds"] for rd in rounds)))
    print_table("Images/s of the timed epoch (median over rounds)", ["variant", "median", "min", "max", "first epoch s"], rows)

    ratios = {}
    for num, den in (("engine", "plain"), ("engine_bare", "plain"), ("engine_xla", "plain_xla"), ("engine_xla", "engine"),
                     ("engine_bf16", "engine"), ("engine_run", "engine")):
        if num in args.variants and den in args.variants:
            per_round = [ratio(rd[num]["images_per_s"], rd[den]["images_per_s"]) for rd in rounds]
            ratios[f"{num}_over_{den}"] = median(per_round)
            ratios[f"{num}_over_{den}_per_round"] = per_round
            print(f"{num} / {den}: median {median(per_round):.3f}, rounds {', '.join(f'{x:.3f}' for x in per_round)}")
    goals = {}
    if "engine_over_plain" in ratios:
        goals["engine_vs_plain"] = goal(ratios["engine_over_plain"], 0.95, "fit_phase images/s over plain model.fit, same model and data")
    first, last = rounds[0][next(iter(rounds[0]))]["load_before"], rounds[-1][list(rounds[-1])[-1]]["load_after"]
    notes = [f"other processes' load before the first / after the last measurement: "
             f"{first['other_cores']} / {last['other_cores']} cores of {cores} (load average {first['loadavg']} / {last['loadavg']})"]  # fmt: skip
    if contended:
        notes.append("CONTENDED (another job kept a core busy when these started): " + ", ".join(contended))
    if len(rounds) > 1 and "engine_over_plain_per_round" in ratios:
        spread = statistics.pstdev(ratios.get("engine_over_plain_per_round") or [0.0])
        notes.append(f"round-to-round spread of engine/plain: {spread:.3f}")
    return finish(args, NAME, figures=figures, ratios=ratios, goals=goals, notes=notes, started=started)


if __name__ == "__main__":
    sys.exit(main())
