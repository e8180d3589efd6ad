"""Executed chapters show no TensorFlow/absl warning, retracing message, progress bar or traceback.

Kept apart from tests/test_book.py on purpose: these fail on chapters executed before the cause
was removed (``experiments.core.predict`` re-traced Keras' predict function for every model:
"5 out of the last 7 calls to make_predict_function ... triggered tf.function retracing"), and
pass once ``make experiments PROFILE=cpu`` has re-executed them.
"""

from __future__ import annotations

import re

import nbformat
import pytest

from conftest import REPO
from test_book import built_book, rendered  # noqa: F401  (fixtures: the shared build and browser visit)

pytestmark = pytest.mark.xdist_group("book")

CHAPTERS = sorted((REPO / "book" / "chapters").glob("*.ipynb"))
# A warning or log line as TensorFlow, absl, Python's warnings module or tqdm print it.
NOISE = re.compile(
    r"^(WARNING|ERROR|I\d{4}|W\d{4}|E\d{4})[: ]|Warning:|triggered tf\.function retracing|Traceback \(most recent"
    r"|\d+/\d+ \[[=>.]+\]|\|[█▏▎▍▌▋▊▉ ]+\|",
    re.MULTILINE,
)


def _outputs_text(cell) -> list[tuple[str, str]]:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append((o.get("name", ""), o.get("text", "")))
        elif o.get("output_type") == "error":
            out.append(("error", "\n".join(o.get("traceback", []))))
    return out


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_executed_chapter_has_no_stderr_or_warning_output(chapter):
    nb = nbformat.read(chapter, as_version=4)
    problems = []
    for i, cell in enumerate(nb.cells):
        for name, text in _outputs_text(cell):
            if name in ("stderr", "error"):
                problems.append(f"cell {i}: {name} output {text[:120]!r}")
            elif m := NOISE.search(text):
                problems.append(f"cell {i}: {m.group(0)!r} in {text[max(0, m.start() - 20):m.start() + 100]!r}")
    assert not problems, f"{chapter.name}: " + "; ".join(problems[:3])


def test_no_warning_or_traceback_text_on_any_page(rendered):  # noqa: F811
    """The rendered pages (headless Chromium, offline) show no warning or traceback text."""
    bad = re.compile(r"WARNING|Traceback|Warning:|triggered tf\.function retracing")
    found = {f: bad.search(i["text"]).group(0) for f, i in rendered.items() if bad.search(i["text"])}
    assert not found, f"pages show warnings/tracebacks: {found}"


# pandas cuts a cell past ``display.max_colwidth`` and ends it with "..."; a comparison sentence
# cut there loses its verdict word and its ⚠ flag (experiments.params._book_table_display).
CUT_CELL = re.compile(r"<t[dh][^>]*>[^<]*\.\.\.</t[dh]>")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_executed_chapter_tables_show_every_cell_whole(chapter):
    nb = nbformat.read(chapter, as_version=4)
    cut = [(i, m.group(0)[-80:]) for i, cell in enumerate(nb.cells) for o in cell.get("outputs", [])
           for m in CUT_CELL.finditer(str(o.get("data", {}).get("text/html", "")))]  # fmt: skip
    assert not cut, f"{chapter.name}: table cells cut by pandas' column width: {cut[:3]}"
