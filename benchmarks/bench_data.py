"""Data loading and feeding: eurosat_lib's decoded-array cache vs Keras/tf.data JPEG pipelines.

Measures, on the real archive (``../shared/data/EuroSAT_RGB.zip``, found like the library does):

* **cold load** — ``load_eurosat()`` into an empty cache dir (fingerprint, decode all 27,000
  JPEGs, checksum, write the cache);
* **warm load** — ``load_eurosat()`` again (memory-mapped, the default), in this process (best of
  ``--repeats``), read into memory (``mmap=False``), and in a FRESH Python process (what a user
  sees when a notebook starts; the import is reported apart);
* **baselines** on the extracted folder: ``keras.utils.image_dataset_from_directory(...,
  image_size=(64, 64))`` and a plain ``tf.data`` JPEG pipeline (list_files -> read_file ->
  decode_jpeg -> batch), each iterated into NumPy arrays;
* **feeding** — images/s of one training epoch of a trivial model (GlobalAveragePooling + Dense
  on uint8 input) fed by ``eurosat_lib.training.ArraySequence`` vs by the tf.data pipeline
  (graph tracing excluded by a short warm-up fit on each).

Goals: fresh-process warm load < 2 s; warm load >= 20x faster than image_dataset_from_directory.

    python benchmarks/bench_data.py            # full size (~2-5 min on 2 cores)
    python benchmarks/bench_data.py --quick    # 20 images per class, seconds
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from _common import (
    REPO,
    child_env,
    finish,
    goal,
    make_parser,
    median,
    print_table,
    ratio,
    scratch_dir,
)

NAME = "data"

_FRESH_LOAD = """
import json, sys, time
t0 = time.perf_counter()
from eurosat_lib import data as D
t1 = time.perf_counter()
d = D.load_eurosat(sys.argv[1], with_split=sys.argv[2] == "1")
_ = int(d.images[-1, -1, -1, -1]) + int(d.labels[-1])
t2 = time.perf_counter()
print("RESULT " + json.dumps({"import_seconds": t1 - t0, "load_seconds": t2 - t1, "num_images": len(d),
                              "tensorflow_imported": "tensorflow" in sys.modules}))
"""


def parse_args(argv=None):
    p = make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--archive", type=Path, default=None, help="EuroSAT zip (default: found like load_eurosat does)")
    p.add_argument("--per-class", type=int, default=None,
                   help="use only this many images per class (a smaller zip is written); default all, 20 with --quick")
    p.add_argument("--repeats", type=int, default=None, help="warm-load repetitions (default 3, 1 with --quick)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size of the feeding benchmark")
    p.add_argument("--decode-batch-size", type=int, default=256, help="batch size of the decode baselines")
    p.add_argument("--tmp-dir", type=Path, default=None, help="parent of the temporary cache/extraction dirs")
    args = p.parse_args(argv)
    if args.quick:
        args.per_class = args.per_class or 20
        args.repeats = args.repeats or 1
    args.repeats = args.repeats or 3
    return args


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def find_archive(args) -> Path | None:
    """The EuroSAT zip or extracted folder: ``--archive``, else where ``load_eurosat()`` looks."""
    if args.archive is not None:
        return args.archive
    from eurosat_lib import data as D

    return D.find_archive()


def small_archive(src: Path | None, per_class: int, out: Path) -> tuple[Path, str]:
    """A zip with ``per_class`` images per class: real JPEGs from ``src``, else synthetic ones."""
    from eurosat_lib import data as D

    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zo:
        if src is not None:
            listing = D.open_source(src)  # zip or folder, any of the layouts load_eurosat accepts
            try:
                for cls in D.CLASS_NAMES:
                    for i in range(1, per_class + 1):
                        fid = f"{cls}/{cls}_{i}"
                        zo.writestr(f"EuroSAT_RGB/{fid}.jpg", listing.read(listing.members[fid]))
            finally:
                listing.close()
            return out, f"{per_class} real images per class from {src.name}"
        from PIL import Image

        syn = D.make_synthetic(n_per_class=per_class, seed=0)
        for img, fid in zip(syn.images, syn.file_ids):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=90)
            zo.writestr(f"EuroSAT_RGB/{fid}.jpg", buf.getvalue())
        return out, f"{per_class} synthetic JPEGs per class (real archive not found)"


def extracted_root(folder: Path) -> Path:
    """The folder that holds the 10 class folders."""
    from eurosat_lib import data as D

    for dirpath, dirnames, _ in os.walk(folder):
        if set(D.CLASS_NAMES) <= set(dirnames):
            return Path(dirpath)
    raise RuntimeError(f"no class folders found under {folder}")


# --------------------------------------------------------------------------------------------
# Pipelines
# --------------------------------------------------------------------------------------------


def tf_jpeg_dataset(root: Path, shuffle_seed: int | None = None):
    """list_files -> read_file -> decode_jpeg (+ label from the folder name)."""
    import tensorflow as tf

    from eurosat_lib.data import CLASS_NAMES, IMAGE_SHAPE

    files = tf.data.Dataset.list_files(str(root / "*" / "*.jpg"), shuffle=False)
    n = int(files.cardinality())
    if shuffle_seed is not None:
        files = files.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)
    classes = tf.constant(CLASS_NAMES)

    def load(path):
        img = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        img = tf.ensure_shape(img, IMAGE_SHAPE)
        cls = tf.strings.split(path, os.sep)[-2]
        label = tf.argmax(tf.cast(tf.equal(classes, cls), tf.int32), output_type=tf.int32)
        return img, label

    return files.map(load, num_parallel_calls=tf.data.AUTOTUNE), n


def to_numpy(ds):
    import numpy as np

    xs, ys = [], []
    for xb, yb in ds:
        xs.append(xb.numpy())
        ys.append(yb.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def trivial_model():
    import keras

    inp = keras.Input((64, 64, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inp, out, name="trivial")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    notes: list[str] = []
    with scratch_dir("eurosat-bench-data-", args.tmp_dir) as tmp:
        return _run(args, tmp, notes, started)


def _run(args, tmp: Path, notes: list[str], started: float) -> int:
    import numpy as np

    from eurosat_lib import data as D

    src = find_archive(args)
    if args.per_class:
        archive, what = small_archive(src, args.per_class, tmp / "EuroSAT_RGB.zip")
        with_split = False  # a subset does not match the committed split manifest
    elif src is not None:
        # relative to the repository: result files and the book must not name this machine's paths
        archive, what, with_split = src, f"the full dataset from {os.path.relpath(src, REPO)}", True
    else:
        raise SystemExit("No EuroSAT archive found: pass --archive, put it in ../shared/data, or use --quick")
    print(f"bench_data: {what}")
    notes.append(f"input: {what}")

    cache = tmp / "cache"
    os.environ["EUROSAT_DATA_DIR"] = str(cache)  # a fresh, empty cache dir
    f: dict = {}

    # --- eurosat_lib: cold, then warm (in-process and in fresh processes) --------------------
    t = time.perf_counter()
    data = D.load_eurosat(archive, with_split=with_split)
    f["cold_load_seconds"] = time.perf_counter() - t
    n = len(data)
    f["num_images"] = n
    meta = json.loads((Path(data.info["cache"]) / "meta.json").read_text())
    f["cold_decode_seconds"] = float(meta.get("decode_seconds") or 0.0)
    f["cache_bytes"] = sum(p.stat().st_size for p in Path(data.info["cache"]).iterdir())
    labels_ref = np.asarray(data.labels)
    del data

    def best_warm_load(**kw) -> float:
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            d = D.load_eurosat(archive, with_split=with_split, **kw)
            times.append(time.perf_counter() - t)
            assert len(d) == n
        return min(times)

    f["warm_load_seconds"] = best_warm_load()
    f["warm_load_in_memory_seconds"] = best_warm_load(mmap=False)

    fresh = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-c", _FRESH_LOAD, str(archive), "1" if with_split else "0"],
            env=child_env(EUROSAT_DATA_DIR=str(cache)), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        wall = time.perf_counter() - t
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
        if r.returncode != 0 or not lines:
            raise RuntimeError(f"fresh-process load failed (exit {r.returncode}): {r.stderr[-2000:]}")
        res = json.loads(lines[-1][7:])
        res["process_wall_seconds"] = wall
        fresh.append(res)
    best = min(fresh, key=lambda r: r["load_seconds"])
    f["fresh_process_load_seconds"] = best["load_seconds"]
    f["fresh_process_import_seconds"] = median(r["import_seconds"] for r in fresh)
    f["fresh_process_wall_seconds"] = median(r["process_wall_seconds"] for r in fresh)
    if best["tensorflow_imported"]:
        notes.append(
            "a fresh process's `from eurosat_lib import data` imports TensorFlow (eurosat_lib/__init__ "
            "silences TF's C++ logs by importing it up front); that is most of the import time"
        )

    # --- baselines on the extracted folder -------------------------------------------------
    import keras
    import tensorflow as tf

    t = time.perf_counter()
    if archive.is_dir():
        root = extracted_root(archive)  # already a folder: the baselines read it in place
    else:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp / "extracted")
        root = extracted_root(tmp / "extracted")
    f["extract_seconds"] = time.perf_counter() - t

    t = time.perf_counter()
    ds = keras.utils.image_dataset_from_directory(
        root, labels="inferred", label_mode="int", image_size=(64, 64), batch_size=args.decode_batch_size,
        shuffle=False, verbose=False,
    )  # fmt: skip
    x_idfd, y_idfd = to_numpy(ds)
    f["image_dataset_from_directory_seconds"] = time.perf_counter() - t
    assert len(x_idfd) == n, (len(x_idfd), n)
    assert np.array_equal(np.bincount(y_idfd, minlength=10), np.bincount(labels_ref, minlength=10))
    del x_idfd, y_idfd, ds

    t = time.perf_counter()
    ds, n_files = tf_jpeg_dataset(root)
    x_tf, _ = to_numpy(ds.batch(args.decode_batch_size).prefetch(tf.data.AUTOTUNE))
    f["tf_data_seconds"] = time.perf_counter() - t
    assert len(x_tf) == n == n_files
    del x_tf, ds

    # --- feeding a model for one epoch -----------------------------------------------------
    from eurosat_lib.training import ArraySequence

    data = D.load_eurosat(archive, with_split=with_split)
    bs = args.batch_size
    feed = {}
    for kind in ("array_sequence", "tf_data"):
        keras.utils.set_random_seed(0)
        model = trivial_model()
        if kind == "array_sequence":
            seq = ArraySequence(data.images, data.labels, bs, shuffle=True, seed=0)
            warm_up = ArraySequence(data.images[: 2 * bs], data.labels[: 2 * bs], bs)
        else:
            tds, _ = tf_jpeg_dataset(root, shuffle_seed=0)
            seq = tds.batch(bs).prefetch(tf.data.AUTOTUNE)
            warm_up = seq.take(2)
        t = time.perf_counter()
        model.fit(warm_up, epochs=1, verbose=0, shuffle=False)  # graph tracing happens here
        trace = time.perf_counter() - t
        t = time.perf_counter()
        model.fit(seq, epochs=1, verbose=0, shuffle=False)
        secs = time.perf_counter() - t
        feed[kind] = {"epoch_seconds": secs, "images_per_s": n / secs, "warmup_seconds": trace}
        keras.backend.clear_session()
    f["feed_batch_size"] = bs
    f["feed_array_sequence_images_per_s"] = feed["array_sequence"]["images_per_s"]
    f["feed_tf_data_images_per_s"] = feed["tf_data"]["images_per_s"]
    f["feed_array_sequence_epoch_seconds"] = feed["array_sequence"]["epoch_seconds"]
    f["feed_tf_data_epoch_seconds"] = feed["tf_data"]["epoch_seconds"]

    ratios = {
        # headline: what a user sees (fresh process, load call) vs the Keras folder loader
        "warm_vs_image_dataset_from_directory": ratio(f["image_dataset_from_directory_seconds"], f["fresh_process_load_seconds"]),
        "warm_vs_tf_data": ratio(f["tf_data_seconds"], f["fresh_process_load_seconds"]),
        "warm_in_process_vs_image_dataset_from_directory": ratio(f["image_dataset_from_directory_seconds"], f["warm_load_seconds"]),
        "warm_in_process_vs_tf_data": ratio(f["tf_data_seconds"], f["warm_load_seconds"]),
        "cold_vs_warm": ratio(f["cold_load_seconds"], f["warm_load_seconds"]),
        "cold_vs_image_dataset_from_directory": ratio(f["image_dataset_from_directory_seconds"], f["cold_load_seconds"]),
        "feed_array_sequence_vs_tf_data": ratio(f["feed_array_sequence_images_per_s"], f["feed_tf_data_images_per_s"]),
    }  # fmt: skip
    goals = {
        "fresh_process_warm_load": goal(f["fresh_process_load_seconds"], 2.0, "warm load_eurosat() in a fresh process, seconds", higher_is_better=False),
        "warm_vs_image_dataset_from_directory": goal(ratios["warm_vs_image_dataset_from_directory"], 20.0, "warm load vs image_dataset_from_directory, x faster"),
    }  # fmt: skip
    if args.quick:
        notes.append("--quick: tiny input; the figures only show that the script works")

    # --- report ----------------------------------------------------------------------------
    print_table(
        f"Loading {n:,} images into NumPy arrays",
        ["method", "seconds", "images/s", "time / fresh warm load (x)"],
        [
            ("eurosat_lib cold (decode + write cache)", f["cold_load_seconds"], n / f["cold_load_seconds"], ratio(f["cold_load_seconds"], f["fresh_process_load_seconds"])),
            ("eurosat_lib warm, in process (memory-mapped)", f["warm_load_seconds"], n / f["warm_load_seconds"], ratio(f["warm_load_seconds"], f["fresh_process_load_seconds"])),
            ("eurosat_lib warm, read into memory", f["warm_load_in_memory_seconds"], n / f["warm_load_in_memory_seconds"], ratio(f["warm_load_in_memory_seconds"], f["fresh_process_load_seconds"])),
            ("eurosat_lib warm, fresh process (load call)", f["fresh_process_load_seconds"], n / f["fresh_process_load_seconds"], 1.0),
            ("  + its import of eurosat_lib", f["fresh_process_import_seconds"], None, None),
            ("keras image_dataset_from_directory", f["image_dataset_from_directory_seconds"], n / f["image_dataset_from_directory_seconds"], ratios["warm_vs_image_dataset_from_directory"]),
            ("tf.data list_files/read/decode_jpeg", f["tf_data_seconds"], n / f["tf_data_seconds"], ratios["warm_vs_tf_data"]),
        ],
    )  # fmt: skip
    print_table(
        f"Feeding a trivial model for one epoch ({n:,} images, batch {bs})",
        ["pipeline", "epoch s", "images/s", "ratio vs tf.data", "warm-up (trace) s"],
        [
            ("ArraySequence (cached arrays)", feed["array_sequence"]["epoch_seconds"], feed["array_sequence"]["images_per_s"], ratios["feed_array_sequence_vs_tf_data"], feed["array_sequence"]["warmup_seconds"]),
            ("tf.data JPEG pipeline", feed["tf_data"]["epoch_seconds"], feed["tf_data"]["images_per_s"], 1.0, feed["tf_data"]["warmup_seconds"]),
        ],
    )  # fmt: skip
    return finish(args, NAME, figures=f, ratios=ratios, goals=goals, notes=notes, started=started)


if __name__ == "__main__":
    sys.exit(main())
