"""Transfer learning speed: head training on cached features vs end-to-end, and time to accuracy.

1. **Per-epoch time** of training the same head on the same training subset, with the same
   frozen ImageNet MobileNetV2 (alpha 0.35, 128 px by default):

   * *cached features* — ``PhaseConfig(use_feature_cache=True)``: the backbone runs once over the
     images (``feature_seconds``, reported apart), then each epoch trains the head alone;
   * *end to end* — every epoch pushes every image through the frozen backbone.

   Both report the validation accuracy they reach on the same validation subset (they should
   agree: same model, same data, same seed). The first epoch of each includes graph tracing and
   is reported apart; the per-epoch figure is the median of the later epochs. Goal: >= 10x.

2. **Time to accuracy**: wall seconds from the start of training (feature extraction and graph
   tracing included — the user waits for them) until validation accuracy first reaches
   ``--target`` (0.90), for the *frozen* path (head on cached features) and the *fine-tuned* path
   (``--head-epochs`` on cached features, then unfreezing the top ``--unfreeze-fraction`` of the
   blocks at ``--finetune-lr``). Epochs are capped; "not reached" is reported as such.

    python benchmarks/bench_transfer.py                      # 100 images/class, 128 px (~10-20 min on 2 cores)
    python benchmarks/bench_transfer.py --n-per-class 300    # bigger subset
    python benchmarks/bench_transfer.py --quick              # synthetic data, truncated backbone, seconds
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from _common import finish, goal, make_parser, median, print_table, ratio, scratch_dir

NAME = "transfer"


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=("auto", "real", "synthetic"), default=None,
                   help="real EuroSAT (auto: if found on disk) or synthetic; default auto, synthetic with --quick")
    p.add_argument("--n-per-class", type=int, default=None, help="training images per class (default 100, 4 with --quick)")
    p.add_argument("--val-n-per-class", type=int, default=None, help="validation images per class (default 50, 3 with --quick)")
    p.add_argument("--image-size", type=int, default=None, help="backbone input size (default 128, 32 with --quick)")
    p.add_argument("--alpha", type=float, default=0.35, help="MobileNetV2 width")
    p.add_argument("--weights", default="imagenet", help="'imagenet' or 'none'")
    p.add_argument("--truncate-at", default=None, help="cut the backbone after this block (default none; expanded_conv with --quick)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=None, help="epochs of the per-epoch comparison (default 3, 2 with --quick)")
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--target", type=float, default=0.90, help="validation accuracy for time-to-accuracy")
    p.add_argument("--max-epochs-frozen", type=int, default=None, help="cap of the frozen path (default 30, 2 with --quick)")
    p.add_argument("--head-epochs", type=int, default=None, help="head epochs before fine-tuning (default 5, 1 with --quick)")
    p.add_argument("--max-epochs-finetune", type=int, default=None, help="cap of the fine-tuning phase (default 10, 1 with --quick)")
    p.add_argument("--unfreeze-fraction", type=float, default=0.5, help="top fraction of backbone blocks unfrozen when fine-tuning")
    p.add_argument("--finetune-lr", type=float, default=1e-4)
    p.add_argument("--skip-time-to-accuracy", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    q = args.quick
    defaults = dict(data=("synthetic", "auto"), n_per_class=(4, 100), val_n_per_class=(3, 50), image_size=(32, 128),
                    epochs=(2, 3), max_epochs_frozen=(2, 30), head_epochs=(1, 5), max_epochs_finetune=(1, 10),
                    truncate_at=("expanded_conv", None))  # fmt: skip
    for k, (quick_v, full_v) in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, quick_v if q else full_v)
    if args.weights.lower() == "none":
        args.weights = None
    return args


# --------------------------------------------------------------------------------------------
# Callbacks
# --------------------------------------------------------------------------------------------


def make_callbacks():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []
            self.val_accuracy: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._t)
            self.val_accuracy.append(float((logs or {}).get("val_accuracy", float("nan"))))

    class TimeToTarget(keras.callbacks.Callback):
        """EarlyStopping-like: records the wall time when val_accuracy first reaches ``target``, then stops."""

        def __init__(self, target: float, t0: float):
            super().__init__()
            self.target, self.t0 = target, t0
            self.reached: float | None = None
            self.reached_at: dict | None = None
            self.curve: list[dict] = []
            self.phase = ""
            self.epochs = 0

        def on_epoch_end(self, epoch, logs=None):
            acc = float((logs or {}).get("val_accuracy", float("nan")))
            elapsed = time.perf_counter() - self.t0
            self.epochs += 1
            self.curve.append({"seconds": elapsed, "val_accuracy": acc, "phase": self.phase, "epoch": self.epochs})
            if self.reached is None and acc >= self.target:
                self.reached = elapsed
                self.reached_at = {"phase": self.phase, "epoch": self.epochs}
                self.model.stop_training = True

        def summary(self, **extra) -> dict:
            """The time-to-accuracy record of one path (seconds is None when the target was missed)."""
            return {"seconds": self.reached, "reached": self.reached is not None, "reached_at": self.reached_at,
                    "epochs_run": self.epochs, "total_seconds": time.perf_counter() - self.t0, "curve": self.curve,
                    "best_val_accuracy": max((p["val_accuracy"] for p in self.curve), default=None), **extra}  # fmt: skip

    return EpochTimer, TimeToTarget


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def load_data(args, notes):
    from eurosat_lib import data as D

    if args.data in ("auto", "real"):
        try:
            t = time.perf_counter()
            data = D.load_eurosat(download=False)
            notes.append(f"data: real EuroSAT ({len(data):,} images, loaded in {time.perf_counter() - t:.1f} s)")
            return data
        except FileNotFoundError:
            if args.data == "real":
                raise
    data = D.make_synthetic(n_per_class=max(40, 2 * args.n_per_class, 4 * args.val_n_per_class), seed=0)
    notes.append(f"data: SYNTHETIC ({len(data)} images) — accuracy figures are not EuroSAT's")
    return data


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    with scratch_dir("eurosat-bench-transfer-") as tmp:
        return _run(args, tmp, started)


def _run(args, tmp: Path, started: float) -> int:
    import keras

    from eurosat_lib import data as D
    from eurosat_lib import models as M
    from eurosat_lib import training as T
    from eurosat_lib.experiments import weights_available

    notes: list[str] = []
    data = load_data(args, notes)  # from the normal cache: loading is not what is measured here
    train = D.nested_subset(data.get_split("train"), n_per_class=args.n_per_class, seed=args.seed)
    val = D.nested_subset(data.get_split("val"), n_per_class=args.val_n_per_class, seed=0)
    bkw = {"alpha": args.alpha}
    if args.weights == "imagenet" and not weights_available("MobileNetV2", "imagenet", **bkw):
        notes.append("ImageNet weights for MobileNetV2 not found locally: weights=None (random features)")
        args.weights = None
    label = f"MobileNetV2 a={args.alpha} ({args.weights or 'random'} weights), {args.image_size} px" + (
        f", truncated after {args.truncate_at}" if args.truncate_at else ""
    )
    print(f"bench_transfer: {label}; train {len(train)} images, val {len(val)} images")
    EpochTimer, TimeToTarget = make_callbacks()

    def build():
        T.set_seed(args.seed)
        return M.build_model(
            "MobileNetV2", weights=args.weights, image_size=args.image_size, backbone_kwargs=bkw,
            truncate_at=args.truncate_at, seed=args.seed,
        )  # fmt: skip

    def fresh_feature_cache(tag: str) -> None:
        # Features are cached on disk keyed by weights+images: a fresh dir per measurement, so
        # every path pays its own extraction, as a first run does.
        os.environ["EUROSAT_DATA_DIR"] = str(tmp / tag)

    # --- 1. per-epoch time, cached features vs end to end ------------------------------------
    per_epoch = {}
    for kind, cached in (("cached_features", True), ("end_to_end", False)):
        fresh_feature_cache(kind)
        model = build()
        timer = EpochTimer()
        phase = T.PhaseConfig("head", epochs=args.epochs, learning_rate=args.head_lr, batch_size=args.batch_size,
                              unfreeze="frozen", use_feature_cache=cached)  # fmt: skip
        t = time.perf_counter()
        res = T.fit_phase(model, train, val, phase, seed=args.seed, extra_callbacks=[timer])
        total = time.perf_counter() - t
        steady = timer.seconds[1:] or timer.seconds
        per_epoch[kind] = {
            "epoch_seconds": timer.seconds,
            "first_epoch_seconds": timer.seconds[0],
            "steady_epoch_seconds": median(steady),
            "feature_seconds": res.feature_seconds,
            "total_seconds": total,
            "val_accuracy": timer.val_accuracy[-1],
            "val_accuracy_per_epoch": timer.val_accuracy,
            "train_images_per_s": len(train) / median(steady),
        }
        del model
        keras.backend.clear_session()
    c, e = per_epoch["cached_features"], per_epoch["end_to_end"]

    # --- 2. time to accuracy ---------------------------------------------------------------
    tta: dict = {}
    if not args.skip_time_to_accuracy:
        # frozen: head on cached features until the target or the cap
        fresh_feature_cache("tta_frozen")
        model = build()
        t0 = time.perf_counter()
        cb = TimeToTarget(args.target, t0)
        cb.phase = "head"
        T.fit_phase(model, train, val, T.PhaseConfig("head", epochs=args.max_epochs_frozen, learning_rate=args.head_lr,
                                                     batch_size=args.batch_size, unfreeze="frozen", use_feature_cache=True),
                    seed=args.seed, extra_callbacks=[cb])  # fmt: skip
        tta["frozen"] = cb.summary()
        del model
        keras.backend.clear_session()

        # fine-tuned: a few head epochs on cached features, then unfreeze the top blocks
        fresh_feature_cache("tta_finetune")
        model = build()
        blocks = M.block_names(model)
        k = max(1, round(args.unfreeze_fraction * len(blocks)))
        policy = "all" if args.unfreeze_fraction >= 1 else blocks[len(blocks) - k]
        t0 = time.perf_counter()
        cb = TimeToTarget(args.target, t0)
        cb.phase = "head"
        T.fit_phase(model, train, val, T.PhaseConfig("head", epochs=args.head_epochs, learning_rate=args.head_lr,
                                                     batch_size=args.batch_size, unfreeze="frozen", use_feature_cache=True),
                    seed=args.seed, extra_callbacks=[cb])  # fmt: skip
        if cb.reached is None:
            cb.phase = "finetune"
            T.fit_phase(model, train, val, T.PhaseConfig("finetune", epochs=args.max_epochs_finetune, learning_rate=args.finetune_lr,
                                                         batch_size=args.batch_size, unfreeze=policy),
                        seed=args.seed, extra_callbacks=[cb])  # fmt: skip
        tta["finetuned"] = cb.summary(unfreeze=policy)
        del model
        keras.backend.clear_session()

    figures = {
        "model": label,
        "train_images": len(train),
        "val_images": len(val),
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "per_epoch": per_epoch,
        "target_val_accuracy": args.target,
        "time_to_accuracy": tta,
    }
    ratios = {
        "per_epoch_end_to_end_vs_cached": ratio(e["steady_epoch_seconds"], c["steady_epoch_seconds"]),
        "total_end_to_end_vs_cached_incl_features": ratio(e["total_seconds"], c["total_seconds"]),
        "val_accuracy_difference": abs(e["val_accuracy"] - c["val_accuracy"]),
    }
    if tta:
        ratios["time_to_accuracy_finetuned_vs_frozen"] = ratio(tta["finetuned"]["seconds"], tta["frozen"]["seconds"])
    goals = {
        "per_epoch_speedup": goal(ratios["per_epoch_end_to_end_vs_cached"], 10.0, "head epoch on cached features vs end to end, x faster"),
    }
    if args.quick:
        notes.append("--quick: synthetic data and a truncated backbone; the figures only show that the script works")

    # --- report ----------------------------------------------------------------------------
    print_table(
        f"Head training, frozen {label}: {len(train)} train / {len(val)} val images, {args.epochs} epochs, batch {args.batch_size}",
        ["path", "steady s/epoch", "first epoch s", "features s", "total s", "images/s", "val acc", "x slower"],
        [
            ("cached features", c["steady_epoch_seconds"], c["first_epoch_seconds"], c["feature_seconds"], c["total_seconds"],
             c["train_images_per_s"], c["val_accuracy"], 1.0),
            ("end to end (frozen base)", e["steady_epoch_seconds"], e["first_epoch_seconds"], None, e["total_seconds"],
             e["train_images_per_s"], e["val_accuracy"], ratios["per_epoch_end_to_end_vs_cached"]),
        ],
    )  # fmt: skip
    print(f"(first epochs include graph tracing; total includes feature extraction; |val acc difference| = "
          f"{ratios['val_accuracy_difference']:.4f}; total-time ratio {ratios['total_end_to_end_vs_cached_incl_features']:.2f}x)")
    if tta:
        rows = []
        for name in ("frozen", "finetuned"):
            r = tta[name]
            where = f"{r['reached_at']['phase']} epoch {r['reached_at']['epoch']}" if r["reached"] else f"not reached in {r['epochs_run']} epochs"
            rows.append((name, r["seconds"] if r["reached"] else "not reached", where, r["best_val_accuracy"], r["total_seconds"],
                         ratio(r["seconds"], tta["frozen"]["seconds"]) if r["reached"] else None))
        print_table(f"Time to {args.target:.0%} validation accuracy (wall seconds from the start of training)",
                    ["path", "seconds", "reached at", "best val acc", "ran s", "x frozen"], rows)  # fmt: skip
    return finish(args, NAME, figures=figures, ratios=ratios, goals=goals, notes=notes, started=started)


if __name__ == "__main__":
    sys.exit(main())
