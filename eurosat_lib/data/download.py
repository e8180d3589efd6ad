"""Finding the archive on disk, or downloading it (pooch) with checksums."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .. import config
from .._io import atomic_path, progress
from .archive import archive_content_digest
from .core import PUBLISHED_CONTENT_DIGEST, ZENODO_PAGE, ArchiveError, DownloadError


@dataclass(frozen=True)
class DownloadSource:
    """One place the archive can be fetched from."""

    url: str
    filename: str
    #: SHA-256 of the archive file when known; the content digest is checked in any case.
    sha256: str | None = None


#: Tried in order. The Zenodo record is the dataset authors' current home; the DFKI address
#: is the original archive (``2750/`` layout), kept as a fallback mirror.
DOWNLOAD_SOURCES: tuple[DownloadSource, ...] = (
    DownloadSource("https://zenodo.org/records/7711810/files/EuroSAT_RGB.zip?download=1", "EuroSAT_RGB.zip"),
    DownloadSource("https://madm.dfki.de/files/sentinel/EuroSAT.zip", "EuroSAT.zip"),
)


def find_archive() -> Path | None:
    """An EuroSAT archive or extracted folder already on disk, or None.

    Looks at ``$EUROSAT_ARCHIVE``, then each of :func:`config.archive_search_dirs` for the
    known archive names and extracted root folders.

    Returns:
        The archive or folder, or None if there is none.

    Raises:
        FileNotFoundError: ``$EUROSAT_ARCHIVE`` is set to a path that does not exist.
    """
    env = os.environ.get("EUROSAT_ARCHIVE")
    if env:
        p = Path(env).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"EUROSAT_ARCHIVE={env} does not exist; fix or unset the variable")
        return p
    for d in config.archive_search_dirs():
        for name in config.ARCHIVE_NAMES:
            if (d / name).is_file():
                return d / name
        for name in config.ARCHIVE_ROOTS:
            if (d / name).is_dir():
                return d / name
    return None


def download_eurosat(
    dest_dir: str | os.PathLike | None = None,
    sources: Sequence[DownloadSource] = DOWNLOAD_SOURCES,
    timeout: float = 20.0,
) -> Path:
    """Download the EuroSAT RGB archive into ``dest_dir`` (default: the cache dir).

    ``pooch`` streams each source with a progress bar into a temporary file and checks the
    archive's SHA-256 (where known); the content digest of its images is checked in any case
    before the archive is renamed into place. Each source is tried once with a short timeout —
    offline, this fails within seconds with a message saying where to put the archive by hand.

    Args:
        dest_dir: folder for the archive (created if missing).
        sources: tried in order until one gives the published images.
        timeout: seconds to wait for a server before trying the next source.

    Returns:
        The path of the downloaded archive.

    Raises:
        DownloadError: no source gave the published archive; lists each source's reason and
            where to put a copy downloaded elsewhere.
    """
    import pooch
    import requests

    dest = Path(dest_dir) if dest_dir is not None else config.cache_dir()
    errors = []
    for src in sources:
        final = dest / src.filename
        try:
            with atomic_path(final) as tmp:
                # total=1 until pooch sets the real size: pooch skips a bar whose truth value is False
                bar = progress(None, total=1, unit="B", unit_scale=True, leave=False, desc=f"download {src.filename}")
                downloader = pooch.HTTPDownloader(progressbar=bar, timeout=timeout, headers={"User-Agent": "eurosat_lib"})
                level = pooch.get_logger().level
                pooch.get_logger().setLevel("WARNING")  # not its "SHA256 hash of downloaded file" advice
                try:
                    known = f"sha256:{src.sha256}" if src.sha256 else None
                    pooch.retrieve(src.url, known_hash=known, fname=tmp.name, path=tmp.parent, downloader=downloader)
                except ValueError as e:  # pooch's hash check
                    raise DownloadError(f"SHA-256 mismatch: expected {src.sha256} ({e})") from e
                finally:
                    pooch.get_logger().setLevel(level)
                    bar.close()
                digest = archive_content_digest(tmp)
                if digest != PUBLISHED_CONTENT_DIGEST:
                    raise DownloadError(
                        f"the downloaded images do not match the published EuroSAT RGB (content digest {digest})"
                    )
            return final
        except (requests.RequestException, OSError, DownloadError, ArchiveError) as e:
            errors.append(f"{src.url}: {_download_reason(e)}")
    tried = "\n  ".join(errors)
    raise DownloadError(
        "Could not download EuroSAT RGB. Tried:\n  "
        f"{tried}\n"
        "If this machine is offline, download EuroSAT_RGB.zip elsewhere from "
        f"{ZENODO_PAGE} and put it at {dest / 'EuroSAT_RGB.zip'} "
        "(or set EUROSAT_ARCHIVE=/path/to/archive-or-folder, or pass source=... to load_eurosat)."
    )


def _download_reason(e: Exception) -> str:
    """One short line for a failed download (requests' messages carry object reprs and retries)."""
    import requests

    if isinstance(e, requests.exceptions.ChunkedEncodingError):
        return "connection closed before the end of the file (incomplete download)"
    if isinstance(e, requests.ConnectionError):
        m = re.search(r"\[Errno -?\d+\] [^'\")]+", str(e))
        return f"no connection ({m.group(0) if m else type(e).__name__})"
    if isinstance(e, requests.Timeout):
        return f"no answer ({type(e).__name__})"
    return str(e)
