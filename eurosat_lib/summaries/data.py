"""Chapter 0's summary (the data): class counts, split sizes, channel statistics and leakage checks.

Its file is ``data_summary.json`` (written by :func:`eurosat_lib.experiments.data_overview.write_summary`),
a flat mapping rather than the numbers-and-tables layout of the other chapters: the chapter trains
nothing, so it has no runs to name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from .render import RecordContext


@dataclass(frozen=True)
class DataSummary:
    """Chapter 0: what the data is and how it is split.

    Attributes:
        class_counts: Images per class in the whole archive.
        split_sizes: Images per split (``train``, ``val``, ``test``).
        details: Everything else the file holds (identity, per-split class counts, channel
            statistics, leakage checks), kept as written.
    """

    NOTEBOOK: ClassVar[str] = "00_data"
    FILE: ClassVar[str] = "data_summary.json"

    class_counts: Mapping[str, int] = field(default_factory=dict)
    split_sizes: Mapping[str, int] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "DataSummary":
        """A summary from ``data_summary.json`` content.

        Args:
            data: The parsed file.

        Returns:
            The typed summary.
        """
        rest = {k: v for k, v in data.items() if k not in ("class_counts", "split_sizes")}
        return cls(class_counts=dict(data.get("class_counts") or {}), split_sizes=dict(data.get("split_sizes") or {}), details=rest)

    def to_json(self) -> dict[str, Any]:
        """The ``data_summary.json`` content (the keys in the order the chapter writes them).

        Returns:
            The mapping.
        """
        out = dict(self.details)
        keys = list(out)
        # the file's order: identity and class names first, then the counts, then the rest
        at = keys.index("class_names") + 1 if "class_names" in keys else 0
        ordered = keys[:at] + ["class_counts", "split_sizes"] + keys[at:]
        merged = {**out, "class_counts": dict(self.class_counts), "split_sizes": dict(self.split_sizes)}
        return {k: merged[k] for k in ordered}

    def render_markdown(self, source: str, ctx: RecordContext | None = None) -> str:
        """The data section of the results page.

        Args:
            source: How the page cites this summary's file.
            ctx: Unused (the chapter has no runs); accepted like every chapter's renderer.

        Returns:
            Markdown.
        """
        counts, sizes = self.class_counts, self.split_sizes
        lines = ["## The data", ""]
        if counts:
            lines.append(f"{sum(counts.values()):,} images in {len(counts)} classes "
                         f"(from {min(counts.values()):,} to {max(counts.values()):,} per class); "
                         + ", ".join(f"{k} {v:,}" for k, v in sizes.items()) + f" in the fixed split. Source: {source}.")  # fmt: skip
            lines.append("")
        return "\n".join(lines)
