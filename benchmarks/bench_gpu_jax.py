"""MobileNetV2 training and inference speed on a GPU with Keras on JAX (no TensorFlow needed).

One command on a GPU machine that has JAX (CUDA) + Keras but NOT TensorFlow::

    python benchmarks/bench_gpu_jax.py            # MobileNetV2 alpha 1.0, 224 px, batch 128

measures, for each dtype policy in ``--policies`` (default ``mixed_bfloat16``, ``mixed_float16``,
``float32``): training images/s (``model.fit`` over ``--steps`` batches after a short
warm-up fit that compiles the step; the compile time is reported apart) and inference images/s
(``model.predict``), and prints them beside a CPU figure: the MobileNetV2 row of
``benchmarks/results/backbones.json`` if present (run ``bench_backbones.py`` first on the CPU
machine; the file travels with the working tree), else a short run of the same model on JAX's
CPU backend in a subprocess (``--cpu-reference``).

The script sets ``KERAS_BACKEND=jax`` itself and, by default, makes ``import tensorflow`` fail
(as on a machine without it), so anything that still pulls TensorFlow in breaks loudly here;
``--allow-tensorflow`` turns that off. Without a GPU it does nothing unless ``--quick`` or
``--allow-cpu`` is given (so ``make bench`` on a CPU machine does not spend an hour here).

    KERAS_BACKEND=jax JAX_PLATFORMS=cpu python benchmarks/bench_gpu_jax.py --quick   # 32 px, truncated, seconds
"""

from __future__ import annotations

import importlib.abc
import os
import sys
import time

if "keras" in sys.modules and os.environ.get("KERAS_BACKEND", "jax") != "jax":
    raise SystemExit("bench_gpu_jax.py: keras was already imported with another backend; run it as a script")
os.environ["KERAS_BACKEND"] = "jax"

from _common import (  # noqa: E402  (after the backend is chosen)
    child_env,
    cpu_reference_from_backbones,
    emit_child_result,
    make_parser,
    peak_rss_mib,
    print_table,
    ratio,
    results_dir,
    run_json_child,
    write_results,
)

NAME = "gpu_jax"


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    """Make ``import tensorflow`` fail as on a machine where it is not installed; log attempts."""

    blocked = ("tensorflow", "tensorboard", "tf_keras")

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.blocked:
            self.attempts.append(f"{fullname} (from {_importer()})")
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by bench_gpu_jax.py)", name=fullname)
        return None


def _importer() -> str:
    """``path:line`` of the code that asked for the import (outside importlib)."""
    import traceback

    for frame in reversed(traceback.extract_stack()[:-2]):
        if "importlib" not in frame.filename and "_bootstrap" not in frame.filename:
            parts = frame.filename.replace(os.sep, "/").split("/")
            short = "/".join(parts[parts.index("site-packages") + 1 :] if "site-packages" in parts else parts[-2:])
            return f"{short}:{frame.lineno}"
    return "?"


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--image-size", type=int, default=None, help="default 224, 32 with --quick")
    p.add_argument("--batch-size", type=int, default=None, help="default 128, 8 with --quick")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=None, help="timed batches (default 50, 2 with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="batches of the compiling warm-up fit (default 3, 1 with --quick)")
    p.add_argument("--policies", default=None,
                   help="comma-separated Keras dtype policies, measured in this order (default "
                        "mixed_bfloat16,mixed_float16,float32; mixed_float16,float32 with --quick)")  # fmt: skip
    p.add_argument("--truncate-at", default=None, help="cut the backbone after this block (default none; expanded_conv with --quick)")
    p.add_argument("--cpu-reference", choices=("auto", "results", "measure", "skip"), default="auto",
                   help="CPU figure: from backbones.json (results), a short JAX-CPU run (measure), or results else measure (auto)")
    p.add_argument("--cpu-batch-size", type=int, default=None, help="batch of the CPU run (default 16, 8 with --quick)")
    p.add_argument("--cpu-steps", type=int, default=None, help="timed batches of the CPU run (default 3, 2 with --quick)")
    p.add_argument("--cpu-timeout", type=float, default=600)
    p.add_argument("--allow-cpu", action="store_true", help="run the full measurement even without a GPU")
    p.add_argument("--allow-tensorflow", action="store_true", help="do not block `import tensorflow`")
    p.add_argument("--worker-cpu", action="store_true", help=__import__("argparse").SUPPRESS)
    args = p.parse_args(argv)
    q = args.quick
    for k, (quick_v, full_v) in dict(image_size=(32, 224), batch_size=(8, 128), steps=(2, 50), warmup=(1, 3),
                                     policies=("mixed_float16,float32", "mixed_bfloat16,mixed_float16,float32"),
                                     truncate_at=("expanded_conv", None), cpu_batch_size=(8, 16), cpu_steps=(2, 3)).items():  # fmt: skip
        if getattr(args, k) is None:
            setattr(args, k, quick_v if q else full_v)
    return args


def measure(policy: str, *, image_size: int, batch_size: int, steps: int, warmup: int, alpha: float, truncate_at) -> dict:
    """Train and inference images/s of MobileNetV2 under one dtype policy (compile time apart)."""
    import jax
    import keras
    import numpy as np

    from eurosat_lib import models as M

    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        t = time.perf_counter()
        model = M.build_model("MobileNetV2", weights=None, image_size=image_size, backbone_kwargs={"alpha": alpha},
                              truncate_at=truncate_at)  # fmt: skip
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        build_s = time.perf_counter() - t
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, size=(steps * batch_size, 64, 64, 3), dtype=np.uint8)
        y = rng.integers(0, 10, size=(steps * batch_size,))
        xw, yw = x[: warmup * batch_size], y[: warmup * batch_size]

        t = time.perf_counter()
        model.fit(xw, yw, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)  # compiles the train step
        compile_train = time.perf_counter() - t
        t = time.perf_counter()
        hist = model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)  # logs -> host: synchronised
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        model.predict(xw, batch_size=batch_size, verbose=0)
        compile_inf = time.perf_counter() - t
        t = time.perf_counter()
        model.predict(x, batch_size=batch_size, verbose=0)
        inf_s = time.perf_counter() - t
        out = {
            "policy": policy,
            "build_seconds": build_s,
            "compile_train_seconds": compile_train,
            "train_images_per_s": len(x) / train_s,
            "train_seconds": train_s,
            "compile_inference_seconds": compile_inf,
            "inference_images_per_s": len(x) / inf_s,
            "final_loss": float(hist.history["loss"][-1]),
            "params": M.count_params(model)["total"],
        }
        stats = None
        try:
            stats = jax.devices()[0].memory_stats()
        except Exception:  # noqa: BLE001 - not every platform reports memory
            pass
        if stats and "peak_bytes_in_use" in stats:
            out["device_peak_mib"] = stats["peak_bytes_in_use"] / 2**20
        return out
    finally:
        keras.backend.clear_session()
        keras.mixed_precision.set_global_policy("float32")


def device_header() -> dict:
    import jax
    import keras

    devs = jax.devices()
    kinds = sorted({d.device_kind for d in devs})
    return {
        "platform": devs[0].platform,
        "device_kind": ", ".join(kinds),
        "device_count": len(devs),
        "jax": jax.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
    }


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    if args.quick and not args.worker_cpu and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        # --quick only: share compiled XLA programs with the CPU-reference subprocess. Building
        # MobileNetV2 on JAX's CPU backend compiles every initializer op (~25 s of CPU on 2 cores);
        # the child then loads them instead. Full runs keep compile times honest (no cache).
        import atexit
        import shutil
        import tempfile

        cache = tempfile.mkdtemp(prefix="bench-gpu-jax-xla-")
        atexit.register(shutil.rmtree, cache, True)
        os.environ.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                          JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")  # fmt: skip
        # ... and compile those tiny programs without LLVM's expensive passes (a third of the
        # quick run's CPU time on 2 cores); --quick figures only show that the script works.
        os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
    blocker = None
    if not args.allow_tensorflow:
        # JAX's persistent compilation cache reads entries through etils.epath, which asks
        # importlib.util.find_spec("tensorflow") whether to use tf.io.gfile. On a machine without
        # TensorFlow that is None; the blocker below raises instead, and every cache read failed
        # (the cache above was never used). This is etils' own switch for "do not use TensorFlow".
        os.environ.setdefault("EPATH_USE_TF", "false")
        blocker = _NoTensorFlow()
        sys.meta_path.insert(0, blocker)
    t = time.perf_counter()
    import keras

    # The library's modules a JAX-only GPU machine needs; none may pull TensorFlow in.
    from eurosat_lib import data, models, training  # noqa: F401

    from _common import environment

    import_s = time.perf_counter() - t
    assert keras.backend.backend() == "jax", keras.backend.backend()
    kw = dict(image_size=args.image_size, alpha=args.alpha, truncate_at=args.truncate_at)

    if args.worker_cpu:  # the CPU reference run, in its own process with JAX_PLATFORMS=cpu
        r = measure("float32", batch_size=args.batch_size, steps=args.steps, warmup=args.warmup, **kw)
        emit_child_result({**r, "device": device_header(), "batch_size": args.batch_size, "image_size": args.image_size,
                           "peak_rss_mib": peak_rss_mib()})  # fmt: skip
        return 0

    dev = device_header()
    print("=" * 78)
    print(f"bench_gpu_jax: {dev['device_count']} x {dev['device_kind']} ({dev['platform']}); "
          f"JAX {dev['jax']}, Keras {dev['keras']} on {dev['keras_backend']}")  # fmt: skip
    print("=" * 78, flush=True)
    if dev["platform"] != "gpu" and not (args.quick or args.allow_cpu):
        print("No GPU visible to JAX: nothing measured (use --quick for a smoke run, or --allow-cpu to measure anyway).")
        return 0

    model_label = f"MobileNetV2 a={args.alpha}, {args.image_size} px, batch {args.batch_size}, weights=None" + (
        f", truncated after {args.truncate_at}" if args.truncate_at else ""
    )
    runs = []
    for policy in [p.strip() for p in args.policies.split(",") if p.strip()]:
        print(f"measuring {policy} ...", flush=True)
        r = measure(policy, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup, **kw)
        print(f"  train {r['train_images_per_s']:.1f} img/s (compile {r['compile_train_seconds']:.1f} s), "
              f"inference {r['inference_images_per_s']:.1f} img/s", flush=True)  # fmt: skip
        runs.append(r)

    # --- the CPU figure to compare with ------------------------------------------------------
    cpu = None
    notes: list[str] = []
    if args.cpu_reference in ("auto", "results"):
        cpu = cpu_reference_from_backbones(results_dir(args) / "backbones.json", args.image_size)
        if cpu is not None and (cpu["backbone_kwargs"].get("alpha", 1.0) != args.alpha or cpu["image_size"] != args.image_size):
            notes.append(f"CPU figure is a different configuration ({cpu['label']}); compare with care")
    if cpu is None and args.cpu_reference in ("auto", "measure"):
        print(f"measuring the CPU reference (JAX on CPU, batch {args.cpu_batch_size}) ...", flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker-cpu", "--image-size", str(args.image_size),
               "--batch-size", str(args.cpu_batch_size), "--steps", str(args.cpu_steps), "--warmup", "1",
               "--alpha", str(args.alpha)] + (["--truncate-at", args.truncate_at] if args.truncate_at else [])  # fmt: skip
        if args.allow_tensorflow:
            cmd.append("--allow-tensorflow")
        r = run_json_child(cmd, env=child_env(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="", KERAS_BACKEND="jax"),
                           timeout=args.cpu_timeout)  # fmt: skip
        if "error" in r:
            notes.append(f"CPU reference run failed: {r['error'][-300:]}")
        else:
            cpu = {"source": "measured", "label": f"{model_label.replace(f'batch {args.batch_size}', f'batch {args.cpu_batch_size}')}, JAX on CPU",
                   "train_images_per_s": r["train_images_per_s"], "inference_images_per_s": r["inference_images_per_s"],
                   "compile_train_seconds": r["compile_train_seconds"], "batch_size": args.cpu_batch_size}  # fmt: skip

    by = {r["policy"]: r for r in runs}
    f32 = by.get("float32")
    best = max(runs, key=lambda r: r["train_images_per_s"])
    ratios = {}
    for r in runs:
        if f32 is not None and r is not f32:
            ratios[f"{r['policy']}_vs_float32_train"] = ratio(r["train_images_per_s"], f32["train_images_per_s"])
            ratios[f"{r['policy']}_vs_float32_inference"] = ratio(r["inference_images_per_s"], f32["inference_images_per_s"])
    if cpu is not None:
        ratios["best_train_vs_cpu"] = ratio(best["train_images_per_s"], cpu["train_images_per_s"])
        if f32 is not None:
            ratios["float32_train_vs_cpu"] = ratio(f32["train_images_per_s"], cpu["train_images_per_s"])
        if cpu.get("inference_images_per_s"):
            best_inf = max(r["inference_images_per_s"] for r in runs)
            ratios["best_inference_vs_cpu"] = ratio(best_inf, cpu["inference_images_per_s"])

    if any("device_peak_mib" in r for r in runs):
        notes.append("device peak memory is the process's peak so far (JAX cannot reset it): policies run in the "
                     "order given, least memory first by default, so each reading is that policy's own peak")  # fmt: skip
    if len(runs) > 1:
        notes.append("compile times after the first policy benefit from caches the first one warmed")
    tf_loaded = "tensorflow" in sys.modules
    attempts = sorted(set(blocker.attempts)) if blocker else []
    if attempts:
        # The run got here, so whatever asked coped with TensorFlow's absence (e.g. Keras'
        # set_random_seed probes for TF to seed it too); a hard dependency would have failed.
        notes.append(f"import of TensorFlow attempted and blocked, and handled by the caller: {'; '.join(attempts)}")
    if args.quick:
        notes.append("--quick: a truncated model at a tiny size (on CPU here); the figures only show that the script works")

    rows = [(r["policy"], r["train_images_per_s"], ratio(r["train_images_per_s"], f32["train_images_per_s"]) if f32 else None,
             r["inference_images_per_s"], r["compile_train_seconds"], r.get("device_peak_mib"),
             ratio(r["train_images_per_s"], cpu["train_images_per_s"]) if cpu else None) for r in runs]  # fmt: skip
    if cpu is not None:
        rows.append((f"CPU: {cpu['label']}", cpu["train_images_per_s"], None, cpu.get("inference_images_per_s"),
                     cpu.get("compile_train_seconds"), None, 1.0))  # fmt: skip
    print_table(f"{model_label} on {dev['device_count']} x {dev['device_kind']}",
                ["policy", "train img/s", "x float32", "infer img/s", "compile train s", "device peak MiB", "x CPU"], rows)  # fmt: skip
    print(f"TensorFlow imported: {'YES' if tf_loaded else 'no'}; import attempts blocked: {attempts or 'none'}")
    for note in notes:
        print(f"note: {note}")
    figures = {
        "device": dev,
        "model": model_label,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "runs": runs,
        "best_policy": best["policy"],
        "cpu_reference": cpu,
        "import_seconds": import_s,
        "tensorflow_imported": tf_loaded,
        "tensorflow_import_attempts": attempts,
    }
    write_results(args, NAME, figures=figures, ratios=ratios, notes=notes, env=environment(), started=started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
