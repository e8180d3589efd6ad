"""Command line: ``python -m eurosat_lib <command>`` (also installed as ``eurosat``).

    python -m eurosat_lib predict RUN_DIR IMAGES... [--top 3] [--csv out.csv]
    python -m eurosat_lib experiments --profile cpu [--only 03_finetune] [--force]
    python -m eurosat_lib report --profile cpu     # book/results.md from the run records
    python -m eurosat_lib info
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}


def _iter_images(paths: list[str]) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) for every image in the given files, folders and zips, in sorted order."""
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist; pass image files, folders or zip archives")
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
            if not files:
                raise FileNotFoundError(f"folder {p} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            for f in files:
                yield str(f), f.read_bytes()
        elif p.suffix.lower() == ".zip":
            with zipfile.ZipFile(p) as zf:
                names = sorted(
                    n for n in zf.namelist()
                    if Path(n).suffix.lower() in IMAGE_SUFFIXES and "__MACOSX" not in n and not Path(n).name.startswith(".")
                )  # fmt: skip
                if not names:
                    raise FileNotFoundError(f"zip {p} holds no images")
                for n in names:
                    yield f"{p}:{n}", zf.read(n)
        else:
            yield str(p), p.read_bytes()


def _decode(name: str, blob: bytes) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as img:
            img = img.convert("RGB")
            if img.size != (64, 64):
                # The models take EuroSAT's 64x64 patches (10 m/px); other sizes are resized.
                img = img.resize((64, 64), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{name} is not a readable image ({e})") from e


def cmd_predict(args: argparse.Namespace) -> int:
    from ._io import atomic_path
    from .data import CLASS_NAMES
    from .runs import run_model_path

    # Bad input fails before the seconds-long Keras/TensorFlow import and model load.
    run_model_path(args.run_dir)
    names, images = [], []
    for name, blob in _iter_images(args.images):
        names.append(name)
        images.append(_decode(name, blob))
    from .experiments import load_run_model

    probs = np.asarray(load_run_model(args.run_dir).predict(np.stack(images), batch_size=256, verbose=0))
    with contextlib.ExitStack() as stack:
        out = sys.stdout
        if args.csv:  # written to a temporary file and renamed: never a half-written table
            out = stack.enter_context(open(stack.enter_context(atomic_path(args.csv)), "w", newline=""))
        if args.json:
            rows = [
                {"image": n, "prediction": CLASS_NAMES[int(p.argmax())], "probabilities": {c: round(float(v), 5) for c, v in zip(CLASS_NAMES, p)}}
                for n, p in zip(names, probs)
            ]
            json.dump(rows, out, indent=1)
            out.write("\n")
        else:
            w = csv.writer(out)
            w.writerow(["image", "prediction", "confidence", *[f"p_{c}" for c in CLASS_NAMES]])
            for n, p in zip(names, probs):
                w.writerow([n, CLASS_NAMES[int(p.argmax())], f"{p.max():.4f}", *[f"{v:.4f}" for v in p]])
    if args.top and not args.json and args.csv:
        for n, p in zip(names, probs):
            top = np.argsort(p)[::-1][: args.top]
            print(n, " ".join(f"{CLASS_NAMES[i]}={p[i]:.3f}" for i in top))
    return 0


def cmd_experiments(args: argparse.Namespace) -> int:
    from .experiments import run_notebooks

    run_notebooks(args.profile, args.only or None, force=args.force)
    # The results chapter is generated from the records the notebooks just wrote.
    return cmd_report(args)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_results_page

    path = build_results_page(args.book_dir, args.profile)
    print(f"results page: {path}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from . import config, data
    from .experiments import hardware_summary

    print(json.dumps({
        "cache_dir": str(config.cache_dir()),
        "archive": str(data.find_archive()),
        "weights_dirs": [str(d) for d in config.weights_search_dirs()],
        **hardware_summary(),
    }, indent=1))  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eurosat_lib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="classify images with a trained run's model")
    p.add_argument("run_dir", help="run folder holding model.keras")
    p.add_argument("images", nargs="+", help="image files, folders or zip archives")
    p.add_argument("--csv", help="write the table to this file instead of stdout")
    p.add_argument("--json", action="store_true", help="JSON instead of CSV")
    p.add_argument("--top", type=int, default=3, help="with --csv: also print the top-k classes per image")
    p.set_defaults(func=cmd_predict)
    e = sub.add_parser("experiments", help="run the notebooks into the book (make experiments)")
    e.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "gpu"])
    e.add_argument("--only", nargs="*", help="notebook names, e.g. 03_finetune")
    e.add_argument("--force", action="store_true", help="re-run even if unchanged")
    e.add_argument("--book-dir", default="book", help=argparse.SUPPRESS)
    e.set_defaults(func=cmd_experiments)
    r = sub.add_parser("report", help="regenerate book/results.md from the run records")
    r.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "gpu"])
    r.add_argument("--book-dir", default="book", help="the book's source folder")
    r.set_defaults(func=cmd_report)
    i = sub.add_parser("info", help="where data and weights are looked for; versions and hardware")
    i.set_defaults(func=cmd_info)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
