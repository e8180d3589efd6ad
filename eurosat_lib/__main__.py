"""Command line: ``python -m eurosat_lib <command>`` (also installed as ``eurosat``).

    python -m eurosat_lib predict RUN_DIR IMAGES... [--top 3] [--csv out.csv]
    python -m eurosat_lib experiments --profile cpu [--only 03_finetune] [--force]
    python -m eurosat_lib report --profile cpu     # book/results.md from the run records
    python -m eurosat_lib study crossover --profile cpu [--plan]   # a long study, resumable
    python -m eurosat_lib study similarity --profile cpu [--plan]  # chapter 2's source-similarity study
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

from .data import IMAGE_SIZE, IMAGE_SUFFIXES


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
            try:
                zf = zipfile.ZipFile(p)
            except (zipfile.BadZipFile, OSError) as e:
                raise ValueError(f"{p} is not a readable zip archive ({e})") from e
            with zf:
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


#: Images more than this factor away from EuroSAT's 64 px patches are resized with a warning:
#: the models learned 64 px at 10 m/pixel, and a 4000 px scene shrunk to 64 px is another scale.
SCALE_WARN_FACTOR = 2


def _decode(name: str, blob: bytes) -> np.ndarray:
    """One image as ``(64, 64, 3)`` uint8; ValueError naming ``name`` if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob)) as img:
            img = img.convert("RGB")
            if img.size != (IMAGE_SIZE, IMAGE_SIZE):
                # The models take EuroSAT's 64x64 patches (10 m/px); other sizes are resized.
                img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as e:
        raise ValueError(
            f"{name} is too large to open safely ({e}); "
            "the models classify EuroSAT's 64x64 px patches at 10 m/pixel: cut the scene into 64 px tiles first"
        ) from e
    except UnidentifiedImageError as e:
        # Pillow's own message names the in-memory buffer (<_io.BytesIO ...>), not the file.
        raise ValueError(f"{name} is not a readable image (unknown or damaged format)") from e
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{name} is not a readable image ({e})") from e


def _image_size(blob: bytes) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as img:
            return img.size
    except Exception:  # noqa: BLE001 - _decode reports unreadable files with their name
        return None


def read_images(paths: list[str], skip_bad: bool = False) -> tuple[list[str], np.ndarray, list[str]]:
    """Decode every image under ``paths`` for prediction.

    Args:
        paths: image files, folders or zip archives.
        skip_bad: skip undecodable files (returned in the third item) instead of failing.

    Returns:
        ``(names, images (N, 64, 64, 3) uint8, skipped messages)``.

    Raises:
        FileNotFoundError: a path does not exist or holds no images.
        ValueError: an image cannot be decoded (without ``skip_bad``), naming the file.
    """
    names, images, skipped, off_scale = [], [], [], []
    for name, blob in _iter_images(paths):
        try:
            images.append(_decode(name, blob))
        except ValueError as e:
            if not skip_bad:
                raise ValueError(f"{e}. Pass --skip-bad to skip such files and list them") from e
            skipped.append(str(e))
            continue
        names.append(name)
        size = _image_size(blob)
        if size and (max(size) > IMAGE_SIZE * SCALE_WARN_FACTOR or min(size) < IMAGE_SIZE / SCALE_WARN_FACTOR):
            off_scale.append(f"{name} ({size[0]}x{size[1]})")
    if off_scale:
        print(
            f"warning: {len(off_scale)} image(s) are far from EuroSAT's 64x64 px patches at 10 m/pixel and were "
            f"resized to 64x64, which changes their scale ({', '.join(off_scale[:5])}"
            f"{' ...' if len(off_scale) > 5 else ''}); predictions for them are unreliable: cut large scenes into "
            "64 px tiles at 10 m/pixel",
            file=sys.stderr,
        )
    if not images:
        raise ValueError("no image could be decoded: " + "; ".join(skipped[:5]))
    return names, np.stack(images), skipped


def _check_model_file(path: Path) -> None:
    """A ``.keras`` file is a zip with ``config.json``; say so before Keras calls it 'not found'."""
    try:
        with zipfile.ZipFile(path) as zf:
            if "config.json" not in zf.namelist():
                raise zipfile.BadZipFile("no config.json inside")
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(
            f"model file {path} is corrupt or truncated ({e}; {path.stat().st_size:,} bytes): delete it and "
            "re-create it by re-running the run that saved it"
        ) from e


def cmd_predict(args: argparse.Namespace) -> int:
    from ._io import atomic_path
    from .data import CLASS_NAMES
    from .runs import run_model_path

    # Bad input fails before the seconds-long Keras/TensorFlow import and model load.
    _check_model_file(run_model_path(args.run_dir))
    names, batch, skipped = read_images(args.images, skip_bad=args.skip_bad)
    from .experiments import load_run_model

    probs = np.asarray(load_run_model(args.run_dir).predict(batch, batch_size=256, verbose=0))
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
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s):", *skipped, sep="\n  ", file=sys.stderr)
    return 0


def cmd_experiments(args: argparse.Namespace) -> int:
    from .experiments import run_notebooks

    run_notebooks(args.profile, args.only or None, force=args.force)
    # The results chapter is generated from the records the notebooks just wrote.
    return cmd_report(args)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_cost_snippet, build_recipes_page, build_results_page

    book_dir = Path(args.book_dir or "book")
    # The page belongs in the project's book: without --book-dir, a folder that is not the
    # book (no _toc.yml) means we were started elsewhere, and writing would leave a stray page.
    if not (book_dir / "_toc.yml").is_file() and not (args.book_dir and book_dir.is_dir()):
        raise FileNotFoundError(
            f"{book_dir.resolve()} is not this project's book (no _toc.yml there): run the command from "
            "the repository root, or pass --book-dir pointing at the book's source folder"
        )
    path = build_results_page(book_dir, args.profile)
    print(f"results page: {path}")
    recipes = build_recipes_page(book_dir, args.profile)
    if recipes is not None:
        print(f"recipe study page: {recipes}")
    print(f"edition cost (included by gpu.md): {build_cost_snippet(book_dir, args.profile)}")
    return 0


#: Long studies the command line runs outside a notebook (``python -m eurosat_lib study NAME``):
#: name -> (the module under ``eurosat_lib.experiments`` with a ``cli(P, data, plan_only, log)``
#: function, the chapter whose parameters and run folder it uses).
STUDIES = {
    "crossover": ("crossover", "03_finetune"),
    "similarity": ("similarity", "02_negative_transfer"),
}


def _overrides(pairs: list[list[str]] | None) -> dict[str, object]:
    """``-p name value`` pairs as parameter values (Python literals where they parse, else text)."""
    import ast

    out: dict[str, object] = {}
    for name, text in pairs or []:
        try:
            out[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[name] = text
    return out


def cmd_study(args: argparse.Namespace) -> int:
    import importlib

    from .experiments import load_data, resolve_params

    module, notebook = STUDIES[args.name]
    # Like `make experiments`: the chapter's runs live in the book, book/runs/<profile>/<chapter>.
    out_dir = args.out_dir or str(Path("book") / "runs" / args.profile / notebook)
    study = importlib.import_module(f"eurosat_lib.experiments.{module}")
    P = resolve_params(notebook, profile=args.profile, out_dir=out_dir, **_overrides(args.param))
    data = load_data(P.data_source, P.profile)
    print(f"{args.name} study, profile {P.profile}: run folders under {study.study_dir(P)}", flush=True)
    study.cli(P, data, plan_only=args.plan, log=lambda line: print(line, flush=True))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from . import config, data
    from .experiments import hardware_summary

    # Every diagnostic is printed even when one of them fails: info is what people run when
    # something is wrong, so one bad setting must not hide the others.
    problems = []
    try:
        archive = str(data.find_archive())
    except (OSError, ValueError) as e:
        archive = None
        problems.append(str(e))
    weights_dirs = config.weights_search_dirs()
    weight_files = sorted(
        str(f) for d in weights_dirs if d.is_dir() for f in d.iterdir() if f.suffix in (".h5", ".keras") and f.is_file()
    )
    print(json.dumps({
        "cache_dir": str(config.cache_dir()),
        "archive": archive,
        "weights_dirs": [str(d) for d in weights_dirs],
        "weight_files": weight_files,
        **hardware_summary(),
        **({"problems": problems} if problems else {}),
    }, indent=1))  # fmt: skip
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eurosat_lib", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="classify images with a trained run's model")
    p.add_argument("run_dir", help="run folder holding model.keras")
    p.add_argument("images", nargs="+", help="image files, folders or zip archives")
    p.add_argument("--csv", help="write the table to this file instead of stdout")
    p.add_argument("--json", action="store_true", help="JSON instead of CSV")
    p.add_argument("--top", type=int, default=3, help="with --csv: also print the top-k classes per image")
    p.add_argument("--skip-bad", action="store_true", help="skip undecodable images (listed on stderr) instead of stopping")
    p.set_defaults(func=cmd_predict)
    e = sub.add_parser("experiments", help="run the notebooks into the book (make experiments)")
    e.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "gpu"])
    e.add_argument("--only", nargs="*", help="notebook names, e.g. 03_finetune")
    e.add_argument("--force", action="store_true", help="re-run even if unchanged")
    e.add_argument("--book-dir", default=None, help=argparse.SUPPRESS)
    e.set_defaults(func=cmd_experiments)
    r = sub.add_parser("report", help="regenerate book/results.md (and book/recipes.md) from the run records")
    r.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "gpu"])
    r.add_argument("--book-dir", help="the book's source folder (default: book/ of the repository you are in)")
    r.set_defaults(func=cmd_report)
    st = sub.add_parser("study", help="run a long study into the book's run folders (resumes; finished runs are reused)")
    st.add_argument("name", choices=sorted(STUDIES), help="which study")
    st.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "gpu"])
    st.add_argument("--out-dir", default=None, help="the chapter's run folder (default book/runs/<profile>/<chapter>)")
    st.add_argument("--plan", action="store_true", help="list the runs, cheapest first, and train nothing")
    st.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                    help="a chapter parameter, as with papermill (e.g. -p crossover_seeds 2); checked like the notebook's")
    st.set_defaults(func=cmd_study)
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
