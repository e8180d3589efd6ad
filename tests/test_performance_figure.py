"""The performance page's figure is legible at the book's text width (issue: figures)."""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.text import Text

from conftest import REPO

BENCH = REPO / "benchmarks"


def test_performance_figure_fits_the_page_with_readable_text(tmp_path, monkeypatch):
    sys.path.insert(0, str(BENCH))
    try:
        import make_report
    finally:
        sys.path.remove(str(BENCH))
    results = make_report.load_results(BENCH / "results")
    if not results:
        pytest.skip("no committed benchmark results in benchmarks/results")
    figures = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    make_report.plot(results, tmp_path / "performance.png")
    (fig,) = figures
    assert fig.get_figwidth() <= 8, "wider than the page: the browser shrinks it and its text with it"
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    small = sorted({(t.get_text()[:30], t.get_fontsize()) for t in texts if t.get_fontsize() < 9})
    assert not small, f"text under 9 pt: {small[:5]}"
    for ax in fig.axes:
        for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
            boxes = [t.get_window_extent(renderer) for t in ticks if t.get_text().strip()]
            clash = [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]
            assert not clash, f"{ax.get_title()!r}: overlapping tick labels {clash[:3]}"
    plt.close("all")
