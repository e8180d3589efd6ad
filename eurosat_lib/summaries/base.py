"""The typed chapter summary every chapter module of this package extends.

A summary is what a chapter leaves for the results page: its key numbers as typed fields (each
subclass declares them), its tables (one row per run or per group, as JSON records), the run
folders they came from and the chapter's parameters. It is written as ``summary.json`` by
:func:`eurosat_lib.experiments.save_summary` and read back by :meth:`ChapterSummary.from_json`;
:meth:`ChapterSummary.render_markdown` is the chapter's section of the results page.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping

from .render import RecordContext

#: The fields every summary has; a subclass's other fields are its typed numbers.
COMMON_FIELDS = ("profile", "parameters", "tables", "runs", "library", "extra")


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays turned into Python numbers and lists.

    Args:
        value: A number, string, sequence or mapping (nested).

    Returns:
        The same value built from JSON types (tuples become lists).
    """
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return plain(value.tolist())
    return value


def table_records(table: Any) -> list[dict[str, Any]]:
    """A table as JSON records: a DataFrame through ``to_json`` (NaN -> null), a list as it is.

    Args:
        table: A pandas DataFrame or a list of row mappings.

    Returns:
        The rows.
    """
    if hasattr(table, "to_json"):
        return json.loads(table.to_json(orient="records"))
    return [dict(r) for r in table]


def run_sources(out_dir: Path, tables: Mapping[str, Any], runs: Iterable[Any] = ()) -> list[str]:
    """The run folders a summary came from, relative to the chapter's folder, sorted and unique.

    Tables of runs (one row per run folder, in a ``run`` or ``run_*`` column) name their sources
    too; only folders that exist count.

    Args:
        out_dir: The chapter's run folder.
        tables: The summary's tables (DataFrames or records).
        runs: More run folders (paths, or objects with a ``run_dir``).

    Returns:
        The folders, as POSIX paths relative to ``out_dir`` (a folder outside it: its name).
    """
    found = list(runs)
    for t in tables.values():
        for row in table_records(t) if hasattr(t, "to_json") else t:
            for col, v in row.items():
                if (str(col) == "run" or str(col).startswith("run_")) and isinstance(v, (str, os.PathLike)) and Path(v).is_dir():
                    found.append(v)
    sources = []
    for r in found:
        path = Path(getattr(r, "run_dir", r))
        try:
            sources.append(path.resolve().relative_to(Path(out_dir).resolve()).as_posix())
        except ValueError:
            sources.append(path.name)
    return sorted(set(sources))


def _typed(value: Any) -> Any:
    # list numbers are tuples on the frozen summary (hashable, immutable like the rest of it)
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class ChapterSummary:
    """A chapter's summary: typed numbers (declared by each subclass), tables, sources, parameters.

    Attributes:
        profile: The profile the chapter ran with.
        parameters: The chapter's resolved parameters (without ``out_dir``).
        tables: Table name -> rows (JSON records).
        runs: Run folders the numbers came from, relative to the chapter's folder.
        library: The library version that wrote it.
        extra: Numbers this version does not declare (kept, so a newer file round-trips).
    """

    NOTEBOOK: ClassVar[str] = ""

    profile: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    tables: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)
    runs: tuple[str, ...] = ()
    library: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def number_fields(cls) -> tuple[str, ...]:
        """The typed numbers this chapter declares, in order.

        Returns:
            Field names.
        """
        return tuple(f.name for f in dataclasses.fields(cls) if f.name not in COMMON_FIELDS)

    def numbers(self) -> dict[str, Any]:
        """The numbers that are set (None means not measured), then the undeclared ones.

        Returns:
            Name -> JSON value.
        """
        out = {k: plain(getattr(self, k)) for k in self.number_fields() if getattr(self, k) is not None}
        out.update(plain(dict(self.extra)))
        return out

    def frame(self, name: str) -> Any:
        """One of the summary's tables as a DataFrame.

        Args:
            name: The table's name.

        Returns:
            A pandas DataFrame, or None when the table is absent or empty.
        """
        import pandas as pd

        rows = self.tables.get(name)
        return pd.DataFrame(rows) if rows else None

    def numeric_frame(self, name: str) -> Any:
        """One of the summary's tables as a DataFrame, with missing numbers as NaN (as the chapter had them).

        JSON keeps a missing number as ``null``, which pandas reads back as None; a column with no number
        at all (a speed not measured in a smoke run) would then hold None, which number formats refuse.
        Columns whose values are all numbers or missing become float columns with NaN.

        Args:
            name: The table's name.

        Returns:
            A pandas DataFrame, or None when the table is absent or empty.
        """
        df = self.frame(name)
        if df is None:
            return None
        for col in df.columns:
            if df[col].dtype == object:
                values = df[col].dropna()
                if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                    df[col] = df[col].astype(float)
        return df

    def to_json(self) -> dict[str, Any]:
        """The ``summary.json`` content.

        Returns:
            ``notebook``, ``profile``, ``parameters``, ``numbers``, ``tables``, ``runs``, ``library``.
        """
        return {
            "notebook": self.NOTEBOOK,
            "profile": self.profile,
            "parameters": plain(dict(self.parameters)),
            "numbers": self.numbers(),
            "tables": {k: plain(v) for k, v in self.tables.items()},
            "runs": list(self.runs),
            "library": self.library,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ChapterSummary":
        """A summary from ``summary.json`` content (missing parts are empty).

        Args:
            data: The parsed file.

        Returns:
            The typed summary; list numbers become tuples.

        Raises:
            ValueError: The file belongs to another chapter.
        """
        notebook = data.get("notebook")
        if notebook not in (None, cls.NOTEBOOK):
            raise ValueError(f"summary of {notebook!r} read as {cls.NOTEBOOK!r}")
        numbers = dict(data.get("numbers") or {})
        declared = set(cls.number_fields())
        typed = {k: _typed(v) for k, v in numbers.items() if k in declared}
        return cls(profile=data.get("profile"), parameters=dict(data.get("parameters") or {}),
                   tables={k: list(v or []) for k, v in (data.get("tables") or {}).items()},
                   runs=tuple(data.get("runs") or ()), library=data.get("library"),
                   extra={k: v for k, v in numbers.items() if k not in declared}, **typed)  # fmt: skip

    @classmethod
    def from_study(cls, P: Any, tables: Mapping[str, Any] | None = None, runs: Iterable[Any] = (), **numbers: Any) -> "ChapterSummary":
        """A summary of a chapter's run: its parameters, tables (DataFrames or records) and numbers.

        Args:
            P: The chapter's parameters (``profile``, ``out_dir`` and the chapter's fields).
            tables: Table name -> DataFrame or rows.
            runs: Run folders the numbers come from (besides those the tables name).
            **numbers: The chapter's numbers; names it does not declare are kept in ``extra``.

        Returns:
            The typed summary.
        """
        from .. import __version__

        tables = dict(tables or {})
        declared = set(cls.number_fields())
        return cls(profile=P.profile, parameters=plain({k: v for k, v in vars(P).items() if k != "out_dir"}),
                   tables={k: table_records(t) for k, t in tables.items()},
                   runs=tuple(run_sources(Path(P.out_dir), tables, runs)), library=__version__,
                   extra={k: plain(v) for k, v in numbers.items() if k not in declared},
                   **{k: _typed(plain(v)) for k, v in numbers.items() if k in declared})  # fmt: skip

    def render_markdown(self, source: str, ctx: RecordContext | None = None) -> str:
        """The chapter's section of the results page.

        Args:
            source: How the page cites this summary's file.
            ctx: Where the runs the summary names are found (default: nowhere; sections that
                read records then state less).

        Returns:
            Markdown.
        """
        return "\n".join(self._sections(source, ctx or RecordContext()))

    def _sections(self, source: str, ctx: RecordContext) -> list[str]:
        # Each chapter's summary type writes its own lines; the base has no section.
        raise NotImplementedError(f"{type(self).__name__} renders no section")
