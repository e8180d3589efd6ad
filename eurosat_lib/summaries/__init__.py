"""Each chapter's typed summary: what the chapter measured, and its section of the results page.

One module per chapter (``data`` for 00, ``transfer`` 01, ``negative_transfer`` 02, ``finetune``
03, ``overfitting`` 04, ``backbones`` 05, ``truncation`` 06), each with a frozen dataclass of the
chapter's numbers (:class:`~eurosat_lib.summaries.base.ChapterSummary`), a ``summarize(P, ...)``
that derives them from the chapter's study tables, ``render_markdown()`` and ``to_json()`` /
``from_json()``. :mod:`eurosat_lib.report` only assembles these sections. Nothing here imports
TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import backbones, data, finetune, negative_transfer, overfitting, transfer, truncation
from .backbones import BackbonesSummary
from .base import ChapterSummary
from .data import DataSummary
from .finetune import FinetuneSummary
from .negative_transfer import NegativeTransferSummary
from .overfitting import OverfittingSummary
from .render import RecordContext, read_json
from .transfer import TransferSummary
from .truncation import TruncationSummary

#: The chapters' summary types, in book order (an explicit list, not a registry filled on import).
SUMMARIES: tuple[type, ...] = (
    DataSummary,
    TransferSummary,
    NegativeTransferSummary,
    FinetuneSummary,
    OverfittingSummary,
    BackbonesSummary,
    TruncationSummary,
)

#: Notebook name -> its summary type.
BY_NOTEBOOK: dict[str, type] = {cls.NOTEBOOK: cls for cls in SUMMARIES}


def summary_type(notebook: str) -> type:
    """The summary type of a chapter.

    Args:
        notebook: The chapter's notebook name (``"03_finetune"``).

    Returns:
        Its summary class.

    Raises:
        KeyError: No chapter of that name has a summary.
    """
    try:
        return BY_NOTEBOOK[notebook]
    except KeyError:
        raise KeyError(f"no summary type for notebook {notebook!r}; known: {sorted(BY_NOTEBOOK)}") from None


def summary_file(notebook: str) -> str:
    """The file name a chapter's summary is written to.

    Args:
        notebook: The chapter's notebook name.

    Returns:
        ``data_summary.json`` for chapter 0, ``summary.json`` otherwise.
    """
    return getattr(summary_type(notebook), "FILE", "summary.json")


def load_summary(chapter_dir: Path, notebook: str) -> Any:
    """A chapter's summary from its run folder.

    Args:
        chapter_dir: The chapter's folder (``book/runs/<profile>/<notebook>``).
        notebook: The chapter's notebook name.

    Returns:
        The typed summary, or None when the file is missing or unreadable.
    """
    content = read_json(Path(chapter_dir) / summary_file(notebook))
    return None if content is None else summary_type(notebook).from_json(content)


__all__ = [
    "BY_NOTEBOOK", "SUMMARIES", "BackbonesSummary", "ChapterSummary", "DataSummary", "FinetuneSummary",
    "NegativeTransferSummary", "OverfittingSummary", "RecordContext", "TransferSummary", "TruncationSummary",
    "backbones", "data", "finetune", "load_summary", "negative_transfer", "overfitting", "summary_file",
    "summary_type", "transfer", "truncation",
]  # fmt: skip
