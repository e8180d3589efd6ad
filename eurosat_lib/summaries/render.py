"""Formatting shared by every chapter's section of the results page.

Numbers become text here in one way for the whole page: percentages, counts and durations, mean ±
sd over seeds, Markdown tables, the ⚠ flags a run carries, and comparisons stated as a difference
with its 95 % interval and a verdict word (:mod:`eurosat_lib.stats`). :class:`RecordContext` finds
the run records a summary names, so flags are read from the records themselves. Nothing here
imports TensorFlow.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

#: Flags that make a run's number unusable as a finding (it measured a broken run).
BROKEN_FLAGS = ("chance-level", "diverged")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when it is missing or unreadable.

    Args:
        path: The file.

    Returns:
        The parsed object, or None.
    """
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def relative_source(path: Path, book_dir: Path) -> str:
    """``path`` relative to the repository (the folder holding ``book_dir``), with forward slashes.

    Args:
        path: A file under the book.
        book_dir: The book's folder.

    Returns:
        The relative path as the page cites it.
    """
    return os.path.relpath(path, Path(book_dir).parent).replace(os.sep, "/")


def pct(x: float | None, digits: int = 2) -> str:
    """A share as a percentage, ``"93.46 %"``; ``"–"`` when missing.

    Args:
        x: The share (0..1), None or NaN.
        digits: Decimals.

    Returns:
        The text.
    """
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f} %"


def num(x: Any, fmt: str = "{:,.0f}") -> str:
    """A number formatted with ``fmt``; ``"–"`` when missing.

    Args:
        x: The number, None or NaN.
        fmt: A ``str.format`` pattern.

    Returns:
        The text.
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return fmt.format(x)


def duration(s: float | None) -> str:
    """Seconds as the page states a training time: seconds below 90 s, minutes from there on.

    Args:
        s: Seconds, or None.

    Returns:
        ``"45 s"``, ``"2.0 min"`` or ``"–"``.
    """
    if s is None:
        return "–"
    return f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s"


def md_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], right: Sequence[str] = ()) -> str:
    """A Markdown table from ``rows`` with ``columns`` given as (key, header).

    Rendered by :meth:`pandas.DataFrame.to_markdown` (tabulate) with no padding and no number
    parsing, so every cell is the text the renderer made, unchanged; a missing key shows ``"–"``.

    Args:
        rows: One mapping per row.
        columns: ``(key, header)`` pairs in column order.
        right: Keys of the columns aligned right (``---:``), the others keep the plain ``---``.

    Returns:
        The table, one line per row, without a trailing newline.
    """
    import pandas as pd
    from tabulate import DataRow, TableFormat

    rule = ["---:" if k in set(right) else "---" for k, _ in columns]
    # The pages' tables have always used a short rule whatever the column width, and unpadded cells.
    fmt = TableFormat(lineabove=None, linebelowheader=lambda widths, aligns: "|" + "|".join(rule) + "|",
                      linebetweenrows=None, linebelow=None, headerrow=DataRow("| ", " | ", " |"),
                      datarow=DataRow("| ", " | ", " |"), padding=0, with_header_hide=None)  # fmt: skip
    frame = pd.DataFrame([[str(r.get(k, "–")) for k, _ in columns] for r in rows], columns=[h for _, h in columns])
    return frame.to_markdown(index=False, tablefmt=fmt, stralign=None, numalign=None, disable_numparse=True)


def is_number(x: Any) -> bool:
    """True for a real number (JSON ``null`` and NaN are missing values).

    Args:
        x: Any value.

    Returns:
        Whether it is a real number (Python's or numpy's: a table's integer column holds
        ``numpy.int64``) that is not NaN.
    """
    import numbers

    return isinstance(x, numbers.Real) and not math.isnan(x)


def mean_sd(values: Any, digits: int = 1, scale: float = 100.0, unit: str = " %") -> str:
    """``"93.4 ± 0.5 %"`` over seeds; a lone value without ± (one seed has no spread).

    Args:
        values: The per-seed values (None and NaN are skipped).
        digits: Decimals.
        scale: Factor applied before formatting (100 for percentages).
        unit: Text after the number.

    Returns:
        The text, ``"–"`` when no value is left.
    """
    import numpy as np

    v = np.asarray([x for x in values if x is not None and x == x], dtype=float)
    if v.size == 0:
        return "–"
    if v.size == 1:
        return f"{scale * v[0]:.{digits}f}{unit}"
    return f"{scale * v.mean():.{digits}f} ± {scale * v.std(ddof=1):.{digits}f}{unit}"


def record_warnings(record: Mapping[str, Any] | None) -> list[str]:
    """A record's sanity flags: its ``warnings`` field, or computed from its numbers if it predates them.

    Args:
        record: A run record (``record.json`` content) or None.

    Returns:
        The flags, empty for no record.
    """
    from ..sanity import flags_from_record

    if not record:
        return []
    w = record.get("warnings")
    return list(w) if isinstance(w, list) else flags_from_record(record)


def flag_note(warnings_per_run: Sequence[Sequence[str]]) -> str:
    """``" ⚠ chance-level (2/2 runs)"`` for a group of runs; ``""`` when none is flagged.

    Args:
        warnings_per_run: Each run's flags.

    Returns:
        The note to append to the group's number.
    """
    runs = list(warnings_per_run)
    counts: dict[str, int] = {}
    for w in runs:
        for f in w:
            counts[f] = counts.get(f, 0) + 1
    if not counts:
        return ""
    from ..sanity import FLAGS

    order = [f for f in FLAGS if f in counts] + sorted(f for f in counts if f not in FLAGS)
    if len(runs) == 1:
        return " ⚠ " + ", ".join(order)
    return " ⚠ " + ", ".join(f"{f} ({counts[f]}/{len(runs)} runs)" for f in order)


def is_broken(warnings_per_run: Sequence[Sequence[str]]) -> bool:
    """True if any run of the group is chance-level or diverged: its number is not a finding.

    Args:
        warnings_per_run: Each run's flags.

    Returns:
        Whether the group holds a broken run.
    """
    return any(f in BROKEN_FLAGS for w in warnings_per_run for f in w)


def compare_text(d: Any, a_flags: Sequence[Sequence[str]] = (), b_flags: Sequence[Sequence[str]] = (),
                 words: Mapping[str, str] | None = None) -> str:
    """A comparison as the page states it: difference, 95 % interval, verdict word — or why none.

    A comparison with a chance-level or diverged arm is not stated; a ``worse`` verdict for an arm
    that was still improving (or ``better`` against one) is marked as a lower bound of the gap
    that more training could change, and a tie with an arm still improving says that more
    training could change it.

    Args:
        d: A :class:`eurosat_lib.stats` difference (``verdict`` and interval).
        a_flags: Flags of the runs of arm a.
        b_flags: Flags of the runs of arm b.
        words: The verdict words for a quantity where higher is not better, e.g. a train–test
            gap: ``{"better": "larger", "worse": "smaller"}`` (the verdict itself reads higher as better).

    Returns:
        The sentence fragment.
    """
    from ..stats import format_diff

    if is_broken(a_flags) or is_broken(b_flags):
        return "not compared: a flagged run (see ⚠) is not a finding"
    word = d.verdict
    text = f"{format_diff(d)}: **{(words or {}).get(word, word)}**"
    still = lambda fl: any("not converged" in w for w in fl)  # noqa: E731
    if (word == "worse" and still(a_flags)) or (word == "better" and still(b_flags)):
        text += " (the lower arm was still improving: the gap is partly its budget)"
    elif word == "no measurable difference" and (still(a_flags) or still(b_flags)):
        # A tie between a finished arm and one still climbing is a statement about the budget,
        # not about the two setups: more training could open a gap either way.
        text += " (⚠ an arm was still improving when its training stopped: more training could change this)"
    return text


class RecordContext:
    """Where renderers find the run records their summaries name (paths relative to the repository).

    Args:
        root: The repository root run paths are relative to (None: no records are read).
        chapter_dir: The chapter's run folder.
        images_dir: Where figures of the page are written.
    """

    def __init__(self, root: Path | None = None, chapter_dir: Path | None = None, images_dir: Path | None = None):
        self.root, self.chapter_dir, self.images_dir = root, chapter_dir, images_dir
        self._cache: dict[str, dict[str, Any] | None] = {}

    def record(self, run: Any) -> dict[str, Any] | None:
        """The record of a run folder.

        Args:
            run: The folder, relative to the root or absolute.

        Returns:
            Its ``record.json`` content, None if unknown or unreadable.
        """
        if not isinstance(run, str) or self.root is None:
            return None
        if run not in self._cache:
            path = Path(run) if Path(run).is_absolute() else self.root / run
            self._cache[run] = read_json(path / "record.json")
        return self._cache[run]

    def warnings(self, runs: Sequence[Any]) -> list[list[str]]:
        """Each run's sanity flags.

        Args:
            runs: Run folders.

        Returns:
            One list of flags per run.
        """
        return [record_warnings(self.record(r)) for r in runs]

    def n_eval(self, runs: Sequence[Any], split: str) -> int | None:
        """Images the runs were scored on for ``split`` (the smallest, if they differ).

        Args:
            runs: Run folders.
            split: ``"val"`` or ``"test"``.

        Returns:
            The count, None if unknown.
        """
        ns = [((self.record(r) or {}).get("metrics") or {}).get(split, {}).get("n") for r in runs]
        ns = [n for n in ns if isinstance(n, int) and n > 0]
        return min(ns) if ns else None


def working_context(ctx: RecordContext | None = None) -> RecordContext:
    """``ctx``, or one reading records relative to the working directory.

    A chapter runs from the repository root (``make experiments``, or papermill as the README
    says), where its tables' run paths start.

    Args:
        ctx: A context, or None.

    Returns:
        The context to read records through.
    """
    return ctx if ctx is not None else RecordContext(root=Path.cwd())


def run_image_size(record: Mapping[str, Any] | None) -> int | None:
    """The input size a run's network actually saw (its parameters, else its model description).

    Args:
        record: A run record or None.

    Returns:
        The size in pixels, None if unknown.
    """
    if not record:
        return None
    size = (record.get("params") or {}).get("image_size") or (record.get("model_info") or {}).get("image_size")
    return int(size) if isinstance(size, (int, float)) else None


def chapter_sizes(chapter_dir: Path | None) -> dict[int, int]:
    """Input size -> number of completed runs at that size, over a chapter's run folders.

    Args:
        chapter_dir: The chapter's run folder (None: none).

    Returns:
        The counts per size.
    """
    out: dict[int, int] = {}
    if chapter_dir is None or not chapter_dir.is_dir():
        return out
    for path in sorted(chapter_dir.glob("*/record.json")):
        size = run_image_size(read_json(path))
        if size:
            out[size] = out.get(size, 0) + 1
    return out


def setting_text(parameters: Mapping[str, Any], with_n: bool = True, ctx: RecordContext | None = None) -> str:
    """Backbone, input size(s), images per class and seeds; the sizes are read from the chapter's records.

    Args:
        parameters: The chapter's parameters.
        with_n: Whether to state the training images per class.
        ctx: Where the chapter's records are.

    Returns:
        The setting, comma-separated.
    """
    p = parameters
    bits = []
    if p.get("backbone"):
        alpha = p.get("alpha")
        bits.append(f"{p['backbone']}" + (f" α = {alpha}" if alpha else ""))
    sizes = chapter_sizes(ctx.chapter_dir) if ctx is not None else {}
    if sizes:
        main = max(sizes, key=lambda k: (sizes[k], k == p.get("image_size")))
        others = ", ".join(f"{k} px in {v} of {sum(sizes.values())} runs" for k, v in sorted(sizes.items()) if k != main)
        bits.append(f"{main} px" + (f" ({others})" if others else ""))
    elif p.get("image_size"):
        bits.append(f"{p['image_size']} px")
    if with_n and p.get("n_per_class"):
        bits.append(f"{p['n_per_class']} training images per class")
    if p.get("seeds"):
        bits.append(f"{len(p['seeds'])} seed(s)")
    return ", ".join(bits)


def chapter_link(notebook: str, title: str) -> str:
    """A Markdown link to an executed chapter of the book.

    Args:
        notebook: The chapter's notebook name.
        title: The link text.

    Returns:
        The link.
    """
    return f"[{title}](chapters/{notebook}.ipynb)"


def paired_values(df: Any, key: str, a: Any, b: Any, col: str) -> tuple[list[float], list[float], list[Any], list[Any]]:
    """Values of ``col`` for groups ``key == a`` and ``key == b``, aligned by seed, and their run paths.

    Args:
        df: One row per run (columns ``seed``, ``key``, ``col``, optionally ``run``).
        key: The grouping column.
        a: Group a's key.
        b: Group b's key.
        col: The measured column.

    Returns:
        ``(values of a, values of b, runs of a, runs of b)`` over the seeds both have.
    """
    ga = df[df[key] == a].set_index("seed")
    gb = df[df[key] == b].set_index("seed")
    seeds = [s for s in ga.index if s in gb.index and is_number(ga.loc[s, col]) and is_number(gb.loc[s, col])]
    runs = lambda g: [g.loc[s, "run"] for s in seeds] if "run" in g else []  # noqa: E731
    return [float(ga.loc[s, col]) for s in seeds], [float(gb.loc[s, col]) for s in seeds], runs(ga), runs(gb)


def versus(df: Any, key: str, a: Any, b: Any, col: str, ctx: RecordContext) -> str:
    """:func:`compare_text` of group ``a`` against group ``b`` (paired by seed).

    Args:
        df: One row per run.
        key: The grouping column.
        a: The compared group.
        b: The reference group.
        col: The measured column (``test_*`` columns are scored on the test split).
        ctx: Where the runs' records are.

    Returns:
        The comparison, ``"(reference)"`` for the reference itself, ``"–"`` with no shared seed.
    """
    from ..stats import paired_diff

    if a == b:
        return "(reference)"
    xa, xb, ra, rb = paired_values(df, key, a, b, col)
    if not xa:
        return "–"
    n_eval = ctx.n_eval(ra + rb, "test" if col.startswith("test") else "val")
    return compare_text(paired_diff(xa, xb, n_eval=n_eval), ctx.warnings(ra), ctx.warnings(rb))


def group_flags(g: Any, ctx: RecordContext) -> list[list[str]]:
    """The flags of a group's runs (its ``run`` column).

    Args:
        g: Rows of one group.
        ctx: Where the runs' records are.

    Returns:
        One list of flags per run, empty without a ``run`` column.
    """
    return ctx.warnings(list(g["run"])) if "run" in g else []


def sizes_text(ctx: RecordContext, runs: Sequence[Any], fallback: Any = None) -> str:
    """The input size(s) the runs actually trained at, read from their records (``"64 px"``).

    Args:
        ctx: Where the runs' records are.
        runs: Run folders.
        fallback: The size to state when no record says.

    Returns:
        The sizes, ``" / "``-separated, or ``"–"``.
    """
    got = sorted({int(r["params"]["image_size"]) for r in (ctx.record(x) for x in runs) if r and r.get("params", {}).get("image_size")})
    if not got and is_number(fallback):
        got = [int(fallback)]
    return " / ".join(f"{v} px" for v in got) if got else "–"
