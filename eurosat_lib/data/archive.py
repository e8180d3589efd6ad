"""Reading EuroSAT sources: zip archives and folders in any published layout, and decoding images."""

from __future__ import annotations

import difflib
import hashlib
import io
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .core import (
    CLASS_NAMES,
    IMAGE_SIZE,
    IMAGE_SUFFIXES,
    ZENODO_PAGE,
    ArchiveError,
    CorruptImageError,
    ImageDepthError,
    ImageSizeError,
    sort_key,
)

#: Files real archives carry that users expect to be ignored (macOS/Windows metadata and the
#: CSV/JSON side files of Kaggle copies). Anything else unexpected is an error.
_JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini", ".gitkeep"}
_JUNK_DIRS = {"__MACOSX"}
_SIDE_FILE_SUFFIXES = {".csv", ".json", ".txt", ".md"}


@dataclass
class Listing:
    """Image members of a source, mapped to file ids, plus a reader for their bytes."""

    members: dict[str, str]  # file_id -> member path inside the source
    read: Callable[[str], bytes]  # member path -> bytes
    close: Callable[[], None]
    description: str


def _is_junk(parts: Sequence[str]) -> bool:
    name = parts[-1]
    return (
        any(p in _JUNK_DIRS for p in parts)
        or name in _JUNK_NAMES
        or name.startswith("._")
        or PurePosixPath(name).suffix.lower() in _SIDE_FILE_SUFFIXES
    )


def _map_members(paths: Iterable[str], where: str) -> dict[str, str]:
    """Map image member paths to file ids, checking class folders and unexpected files."""
    members: dict[str, str] = {}
    class_dirs: dict[str, set[str]] = {}  # folder name -> parent prefixes
    unexpected: list[str] = []
    for path in paths:
        parts = PurePosixPath(path).parts
        if not parts or _is_junk(parts):
            continue
        suffix = PurePosixPath(path).suffix.lower()
        if suffix not in IMAGE_SUFFIXES or len(parts) < 2:
            unexpected.append(path)
            continue
        folder = parts[-2]
        class_dirs.setdefault(folder, set()).add("/".join(parts[:-2]))
        file_id = f"{folder}/{PurePosixPath(parts[-1]).stem}"
        if file_id in members:
            raise ArchiveError(
                f"{where}: image {file_id!r} appears twice ({members[file_id]} and {path}); "
                "the archive holds two copies of the dataset — point source= at one of them"
            )
        members[file_id] = path
    if unexpected:
        shown = ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else "")
        raise ArchiveError(
            f"{where}: unexpected file(s) that are neither EuroSAT images (<Class>/<Class>_<n>.jpg) "
            f"nor known side files: {shown}. Remove them or point source= at a clean copy."
        )
    if not members:
        raise ArchiveError(
            f"{where}: contains no images. Expected the EuroSAT RGB layout "
            f"EuroSAT_RGB/<Class>/<Class>_<n>.jpg with classes {', '.join(CLASS_NAMES)}. "
            "The archive may be empty or truncated: download it again."
        )
    found = set(class_dirs)
    unknown = sorted(found - set(CLASS_NAMES))
    missing = [c for c in CLASS_NAMES if c not in found]
    if unknown or missing:
        hints = []
        for u in unknown:
            close = difflib.get_close_matches(u, CLASS_NAMES, n=1, cutoff=0.6)
            hints.append(f"{u!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        msg = f"{where}: class folders do not match EuroSAT RGB."
        if unknown:
            msg += f" Unknown folder(s): {', '.join(hints)}."
        if missing:
            msg += f" Missing class folder(s): {', '.join(missing)}."
        msg += f" Expected exactly: {', '.join(CLASS_NAMES)}."
        raise ArchiveError(msg)
    roots = {p for prefixes in class_dirs.values() for p in prefixes}
    if len(roots) > 1:
        raise ArchiveError(
            f"{where}: class folders found under several roots ({', '.join(sorted(roots))}); "
            "the source mixes copies of the dataset — point source= at one of them"
        )
    return members


def _open_zip(path: Path) -> Listing:
    if path.stat().st_size == 0:
        raise ArchiveError(f"EuroSAT archive {path} is empty (0 bytes): delete it and download or copy it again")
    try:
        zf = zipfile.ZipFile(path)
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ArchiveError(
            f"EuroSAT archive {path} is not a readable zip ({e}); it is probably truncated or an "
            f"incomplete download — delete it and download it again (see {ZENODO_PAGE})"
        ) from e
    members = _map_members(names, f"EuroSAT archive {path}")

    def read(member: str) -> bytes:
        try:
            return zf.read(member)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
            raise ArchiveError(
                f"EuroSAT archive {path}: member {member} cannot be read ({e}); the archive is "
                "damaged or truncated — download it again"
            ) from e

    return Listing(members, read, zf.close, f"zip {path}")


def _open_folder(path: Path) -> Listing:
    files = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        rel = Path(dirpath).relative_to(path)
        for f in sorted(filenames):
            files.append((rel / f).as_posix())
    members = _map_members(files, f"EuroSAT folder {path}")
    return Listing(members, lambda m: (path / m).read_bytes(), lambda: None, f"folder {path}")


def open_source(path: Path) -> Listing:
    """List the images of a zip or folder (any published layout) without decoding them.

    Args:
        path: A zip archive or a folder.

    Returns:
        The image members by file id, a reader for their bytes and a closer.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ArchiveError: the source is unreadable, empty or laid out unexpectedly.
    """
    if path.is_dir():
        return _open_folder(path)
    if path.is_file():
        return _open_zip(path)
    raise FileNotFoundError(
        f"EuroSAT source {path} does not exist. Pass the path of EuroSAT_RGB.zip, EuroSAT.zip or an "
        f"extracted folder, or source=None to find or download it (see {ZENODO_PAGE})"
    )


def content_digest(file_ids: Sequence[str], blobs: Sequence[bytes]) -> str:
    """SHA-256 over ``"<file_id> <sha256(bytes)>\\n"`` lines in canonical order.

    Independent of the archive format and folder layout, so any faithful copy of the
    published dataset gives :data:`PUBLISHED_CONTENT_DIGEST`.

    Args:
        file_ids: The images' ids (``<class>/<file name>``).
        blobs: The images' encoded bytes, in the same order.

    Returns:
        The hex digest.
    """
    h = hashlib.sha256()
    for fid, blob in sorted(zip(file_ids, blobs), key=lambda t: sort_key(t[0])):
        h.update(f"{fid} {hashlib.sha256(blob).hexdigest()}\n".encode())
    return h.hexdigest()


def archive_content_digest(path: Path) -> str:
    """:func:`content_digest` of every image in a zip or folder.

    Args:
        path: A zip archive or a folder.

    Returns:
        The hex digest.
    """
    listing = open_source(path)
    try:
        ids = list(listing.members)
        return content_digest(ids, [listing.read(listing.members[i]) for i in ids])
    finally:
        listing.close()


#: Pillow modes that hold 8 bits per channel; anything else (``I;16``, ``I``, ``F``) would be
#: clipped to 255 by ``convert("RGB")``, turning a 16-bit image white without a word.
_EIGHT_BIT_MODES = {"1", "L", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "RGBa", "La"}


def _check_depth(img: Image.Image, name: str, where: str) -> None:
    bits = img.tag_v2.get(258) if hasattr(img, "tag_v2") else None  # TIFF BitsPerSample
    bits = max(bits) if isinstance(bits, tuple) and bits else bits
    if img.mode not in _EIGHT_BIT_MODES or (isinstance(bits, int) and bits > 8):
        depth = f"{bits}-bit" if isinstance(bits, int) and bits > 8 else f"Pillow mode {img.mode!r}"
        raise ImageDepthError(
            f"image {name} (in {where}) is not an 8-bit image ({depth}); this loader is for the EuroSAT "
            "RGB release (8-bit JPEGs). The multispectral (MS) GeoTIFFs and other 16-bit images would be "
            "clipped, so they are refused: convert them to 8-bit RGB yourself, choosing the scaling, "
            f"or use the RGB archive from {ZENODO_PAGE}"
        )


def decode_image(blob: bytes, name: str, where: str, resize: bool, converted: list | None = None) -> np.ndarray:
    """Decode one image to ``(64, 64, 3)`` uint8, naming ``name`` in every error.

    Images that are 8-bit but not RGB (grayscale, palette, RGBA) are converted; their names and
    modes are appended to ``converted`` so the load can say the data differ from the published set.

    Args:
        blob: the file's bytes.
        name: the file's name, for messages.
        where: the archive or folder it came from, for messages.
        resize: resize other sizes to 64x64 instead of raising :class:`ImageSizeError`.
        converted: if given, receives ``"<name> (<mode>)"`` for each non-RGB image.

    Returns:
        ``(64, 64, 3)`` uint8 RGB.

    Raises:
        CorruptImageError: the bytes are not a decodable image.
        ImageSizeError: the image is not 64x64 and ``resize`` is false.
        ImageDepthError: the image is not 8 bits per channel (it would be clipped).
    """
    try:
        with Image.open(io.BytesIO(blob)) as img:
            img.load()  # force the full decode now so truncation surfaces here, with the name
            _check_depth(img, name, where)
            if img.mode != "RGB" and converted is not None:
                converted.append(f"{name} ({img.mode})")
            if img.size != (IMAGE_SIZE, IMAGE_SIZE):
                if not resize:
                    raise ImageSizeError(
                        f"image {name} is {img.size[0]}x{img.size[1]} (in {where}); EuroSAT RGB images are "
                        f"{IMAGE_SIZE}x{IMAGE_SIZE}; pass resize=True to resize it, or check that "
                        "this is the RGB (not MS or a re-exported) version"
                    )
                img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (ImageSizeError, ImageDepthError):
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CorruptImageError(
            f"image {name} cannot be decoded (in {where}: {e}); the file is corrupt or truncated. Replace it "
            "from a fresh copy of the archive, or pass skip_corrupt=True to skip (and report) it"
        ) from e
