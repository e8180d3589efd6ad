"""Generate the committed split manifest eurosat_lib/splits/eurosat_rgb_split_v1.csv.

    python scripts/make_split.py [ARCHIVE]

Reads only the archive's file list (no decoding), assigns a stratified 60/20/20 split with
`eurosat_lib.data.stratified_split` (fixed seed) and writes the manifest atomically. Rerunning it
on any faithful copy of EuroSAT RGB reproduces the committed file byte for byte; the test suite
checks that.
"""

from __future__ import annotations

import sys
from pathlib import Path

from eurosat_lib import data


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else data.find_archive()
    if source is None:
        print("no EuroSAT archive found; pass its path", file=sys.stderr)
        return 2
    listing = data.open_source(source)
    listing.close()
    ids = list(listing.members)
    labels = [data.CLASS_NAMES.index(i.split("/", 1)[0]) for i in ids]
    out = data.write_manifest(ids, labels)
    print(f"wrote {out} ({len(ids)} files)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
