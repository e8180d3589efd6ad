"""The checksummed cache of decoded arrays, keyed by the source's content."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .. import config
from .._io import atomic_path, write_json_atomic
from .core import IMAGE_SHAPE, EuroSAT

#: Bump when the cache layout or decoding changes; old caches are then ignored.
CACHE_FORMAT = 2


def fingerprint(path: Path) -> str:
    """Content key for the cache: SHA-256 of a zip; of (name, size, mtime) for a folder.

    Hashing a 93 MB zip costs ~0.3 s, a third of a warm load, so the key is remembered per
    (path, size, mtime, inode) in ``fingerprints.json`` beside the cache; any change to the
    file's metadata forces a re-hash.

    Args:
        path: The zip archive or folder the data is read from.

    Returns:
        The hex key.
    """
    if path.is_file():
        st = path.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        memo_path = config.cache_dir() / "fingerprints.json"
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
        real = str(path.resolve())
        if isinstance(memo.get(real), dict) and memo[real].get("stamp") == stamp:
            return memo[real]["key"]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        key = "zip-" + h.hexdigest()
        memo[real] = {"stamp": stamp, "key": key}
        try:
            write_json_atomic(memo_path, memo)
        except OSError:
            pass  # a read-only cache dir only costs the re-hash next time
        return key
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for f in sorted(filenames):
            st = os.stat(os.path.join(dirpath, f))
            rel = os.path.relpath(os.path.join(dirpath, f), path)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return "dir-" + h.hexdigest()


def cache_entry(key: str, resize: bool) -> Path:
    """The cache folder for a source's :func:`fingerprint` (resized decodes are kept apart).

    Args:
        key: The source's fingerprint.
        resize: Whether the images were resized to 64 px on decode.

    Returns:
        The folder (not created here).
    """
    tag = f"{key[:24]}-f{CACHE_FORMAT}" + ("-resized" if resize else "")
    return config.cache_dir() / "arrays" / tag


_CACHE_FILES = ("images.npy", "labels.npy", "file_ids.npy")


#: Cache checksums are CRC-32s of 32 MiB chunks: chunks are checked on a thread pool (zlib releases
#: the GIL) while the next chunk is still being read, so verifying costs little beyond the read.
_CRC_CHUNK = 1 << 25


def _chunks(flat: np.ndarray) -> list[np.ndarray]:
    return [flat[i : i + _CRC_CHUNK] for i in range(0, flat.size, _CRC_CHUNK)]


def _array_crcs(arr: np.ndarray) -> list[int]:
    flat = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(zlib.crc32, _chunks(flat)))


def _load_checked(path: Path, crcs: list[int], mmap: bool) -> np.ndarray:
    """``np.load`` of a cache array that raises ValueError unless its chunk CRCs match ``crcs``."""
    if mmap:
        arr = np.load(path, mmap_mode="r")
        got = _array_crcs(arr)
    else:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool, open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            if dtype.hasobject or fortran:
                raise ValueError(f"{path.name}: unexpected array layout")
            arr = np.empty(shape, dtype=dtype)
            futures = []
            for chunk in _chunks(arr.reshape(-1).view(np.uint8)):
                if f.readinto(chunk) != chunk.size:
                    raise ValueError(f"{path.name} is truncated")
                futures.append(pool.submit(zlib.crc32, chunk))
            got = [fu.result() for fu in futures]
    if got != list(crcs):
        raise ValueError(f"checksum mismatch in {path.name}")
    return arr


def read_cache(entry: Path, mmap: bool) -> EuroSAT | None:
    """Load a cache entry, or return None (after removing it) if it is damaged.

    Every chunk's CRC-32 is checked on every load: flipped bytes in a cache file must never
    reach a model.

    Args:
        entry: The cache folder.
        mmap: Memory-map the arrays instead of reading them.

    Returns:
        The dataset, or None.
    """
    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"cache format {meta.get('format')} != {CACHE_FORMAT}")
        arrays = {
            name: _load_checked(entry / name, meta["crc32"][name], mmap and name == "images.npy")
            for name in _CACHE_FILES
        }
        images, labels, file_ids = (arrays[n] for n in _CACHE_FILES)
        if images.shape != (len(labels), *IMAGE_SHAPE) or images.dtype != np.uint8 or len(file_ids) != len(labels):
            raise ValueError("array shapes do not agree")
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        warnings.warn(f"EuroSAT cache {entry} is damaged ({e}); rebuilding it from the archive", stacklevel=3)
        shutil.rmtree(entry, ignore_errors=True)
        return None
    return EuroSAT(
        images=images,
        labels=labels,
        file_ids=file_ids,
        source=meta["source"],
        skipped=tuple(meta.get("skipped", ())),
        info={k: meta[k] for k in ("content_digest", "cache_key", "converted") if k in meta} | {"cache": str(entry)},
    )


def write_cache(entry: Path, data: EuroSAT, meta: dict) -> None:
    """Write ``data``'s arrays, their CRC-32s and ``meta`` into ``entry``, atomically.

    Args:
        entry: The cache folder (created).
        data: The decoded dataset.
        meta: What the cache records about its source.
    """
    with atomic_path(entry) as tmp:
        tmp.mkdir()
        arrays = dict(zip(_CACHE_FILES, (np.ascontiguousarray(data.images), data.labels, data.file_ids)))
        for name, arr in arrays.items():
            np.save(tmp / name, arr)
        meta = dict(meta, crc32={n: _array_crcs(a) for n, a in arrays.items()}, format=CACHE_FORMAT)
        write_json_atomic(tmp / "meta.json", meta)
