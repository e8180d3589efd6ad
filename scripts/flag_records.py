"""Add the sanity flags (``warnings``) to run records that were written before the flags existed.

    python scripts/flag_records.py                # every book/runs/**/record.json
    python scripts/flag_records.py --check        # exit 1 if any record's warnings are missing or stale
    python scripts/flag_records.py path/to/runs   # another folder of runs

Each record gets ``"warnings": [...]`` (right after ``"status"``) computed by
:func:`eurosat_lib.sanity.flags_from_record` from the record's own ``history`` and ``metrics``.
Nothing else in the record changes: the file is re-serialised exactly as the run writer does
(``indent=2``), and written atomically. New runs get the field from the run writer itself.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eurosat_lib.runs import write_json_atomic  # noqa: E402
from eurosat_lib.sanity import flags_from_record  # noqa: E402


def with_warnings(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with ``warnings`` set from its own numbers (placed after ``status``)."""
    warnings = flags_from_record(record)
    out: dict[str, Any] = {}
    for k, v in record.items():
        if k == "warnings":
            continue
        out[k] = v
        if k == "status":
            out["warnings"] = warnings
    out.setdefault("warnings", warnings)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", nargs="?", default=str(REPO / "book" / "runs"), help="folder searched for record.json files")
    ap.add_argument("--check", action="store_true", help="only report records whose warnings are missing or stale")
    args = ap.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        print(f"error: {root} is not a folder of run records (pass the folder holding the run folders)", file=sys.stderr)
        return 2
    stale = 0
    for path in sorted(root.rglob("record.json")):
        record = json.loads(path.read_text())
        new = with_warnings(record)
        if new == record and list(new) == list(record):
            continue
        stale += 1
        if args.check:
            print(f"{path}: warnings {record.get('warnings')!r}, expected {new['warnings']!r}")
        else:
            write_json_atomic(path, new)
            if new["warnings"]:
                print(f"{path.relative_to(root)}: {', '.join(new['warnings'])}")
    print(f"{stale} record(s) {'stale' if args.check else 'updated'} under {root}", file=sys.stderr)
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
