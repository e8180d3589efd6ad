"""The facts about EuroSAT RGB, the errors, the :class:`EuroSAT` container and the canonical order.

Every other module (and the rest of the library) takes these facts from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np

from .. import config


# --------------------------------------------------------------------------------------------
# Facts about the dataset (the one place that decides them)
# --------------------------------------------------------------------------------------------


#: Canonical class order: alphabetical, identical to TFDS ``eurosat/rgb`` label ids.
CLASS_NAMES: tuple[str, ...] = (
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
)
#: Images per class in the published dataset.
CLASS_COUNTS: dict[str, int] = {
    "AnnualCrop": 3000,
    "Forest": 3000,
    "HerbaceousVegetation": 3000,
    "Highway": 2500,
    "Industrial": 2500,
    "Pasture": 2000,
    "PermanentCrop": 2500,
    "Residential": 3000,
    "River": 2500,
    "SeaLake": 3000,
}
NUM_IMAGES = 27_000
IMAGE_SIZE = 64
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 3)

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
SPLIT_FRACTIONS: tuple[float, float, float] = (0.6, 0.2, 0.2)
SPLIT_SEED = 20190101
SPLIT_VERSION = "v1"
MANIFEST_PATH = config.PACKAGE_DIR / "splits" / f"eurosat_rgb_split_{SPLIT_VERSION}.csv"


#: SHA-256 over the 27,000 image files' bytes in canonical order (see :func:`content_digest`).
#: Layout-independent: the Zenodo zip, the original ``2750/`` zip and extracted copies all match.
PUBLISHED_CONTENT_DIGEST = "f4347c3e17a3bc8287dd93270e8dc552e3eeb16704436d7ba7fab467530a46ab"

#: The dataset's home page (and where to download the archive by hand).
ZENODO_PAGE = "https://zenodo.org/records/7711810"
#: Image file suffixes read as images, by the loader and by ``predict``.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})


# --------------------------------------------------------------------------------------------
# Errors: each says what was wrong, naming the file, and what to do
# --------------------------------------------------------------------------------------------


class EuroSATError(ValueError):
    """Base class for problems with EuroSAT input."""


class ArchiveError(EuroSATError):
    """The archive or folder is unreadable, empty, or laid out unexpectedly."""


class CorruptImageError(EuroSATError):
    """An image file could not be decoded."""


class ImageSizeError(EuroSATError):
    """An image is not 64x64 and resizing was not asked for."""


class ImageDepthError(EuroSATError):
    """An image is not 8 bits per channel (e.g. a 16-bit or multispectral GeoTIFF)."""


class CacheNotWritableError(PermissionError):
    """The cache directory cannot be written (read-only disk, another user's folder)."""


class SplitManifestError(EuroSATError):
    """The data does not match the committed split manifest."""


class DownloadError(RuntimeError):
    """The archive could not be downloaded (offline, server error, checksum mismatch)."""


# --------------------------------------------------------------------------------------------
# The dataset container
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EuroSAT:
    """EuroSAT images in memory.

    Attributes:
        images: ``(N, 64, 64, 3)`` uint8 RGB.
        labels: ``(N,)`` int64 indices into ``class_names``.
        file_ids: ``(N,)`` stable ids ``"<Class>/<Class>_<n>"``, independent of archive layout.
        class_names: the 10 class names in canonical order.
        split: ``(N,)`` ``"train"``/``"val"``/``"test"`` from the manifest, or ``None``.
        source: where the data came from (path, ``"synthetic"``, ``"tfds"``).
        skipped: files skipped as corrupt (only with ``skip_corrupt=True``).
    """

    images: np.ndarray
    labels: np.ndarray
    file_ids: np.ndarray
    class_names: tuple[str, ...] = CLASS_NAMES
    split: np.ndarray | None = None
    source: str = ""
    skipped: tuple[str, ...] = ()
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return f"EuroSAT({len(self)} images, {len(self.class_names)} classes, source={self.source!r})"

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)

    def take(self, indices: np.ndarray | Sequence[int]) -> "EuroSAT":
        """The images at ``indices`` (a copy of the metadata, a view or copy of the pixels).

        Args:
            indices: Positions to keep, in the order given.

        Returns:
            A new dataset of those images.
        """
        idx = np.asarray(indices)
        return replace(
            self,
            images=self.images[idx],
            labels=self.labels[idx],
            file_ids=self.file_ids[idx],
            split=None if self.split is None else self.split[idx],
        )

    def split_indices(self, name: str) -> np.ndarray:
        """Positions of one split of the committed manifest (``"train"``, ``"val"``, ``"test"``).

        Args:
            name: ``"train"``, ``"val"`` or ``"test"``.

        Returns:
            Sorted positions into this dataset.

        Raises:
            ValueError: An unknown split name.
            SplitManifestError: The dataset carries no split.
        """
        if name not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES}, got {name!r}")
        if self.split is None:
            raise SplitManifestError(
                "this EuroSAT object carries no split; load it with load_eurosat() (manifest "
                f"{MANIFEST_PATH.name}) or make_synthetic(), which assign one"
            )
        return np.flatnonzero(self.split == name)

    def get_split(
        self, name: str, n_per_class: int | None = None, fraction: float | None = None, seed: int = 0
    ) -> "EuroSAT":
        """One split of the committed manifest, or its nested stratified subset.

        ``get_split("train", n_per_class=5, seed=1)`` is ``nested_subset(get_split("train"),
        n_per_class=5, seed=1)``, but copies only the chosen images (the whole training split
        is 200 MB of pixels; studies take a few hundred images of it many times).

        Args:
            name: ``"train"``, ``"val"`` or ``"test"``.
            n_per_class: Images per class to keep (None: all).
            fraction: Share of each class to keep (instead of ``n_per_class``).
            seed: Which nested subset.

        Returns:
            The split or its subset.
        """
        idx = self.split_indices(name)
        if n_per_class is not None or fraction is not None:
            from .splits import subset_indices  # splits builds on this module

            idx = idx[subset_indices(self.labels[idx], n_per_class, fraction, seed, self.num_classes)]
        return self.take(idx)

    def splits(self) -> tuple["EuroSAT", "EuroSAT", "EuroSAT"]:
        """``(train, val, test)`` of the committed manifest.

        Returns:
            The three splits.
        """
        return self.get_split("train"), self.get_split("val"), self.get_split("test")

    def class_counts(self) -> dict[str, int]:
        """Images per class, in canonical class order.

        Returns:
            Class name -> number of images.
        """
        counts = np.bincount(self.labels, minlength=self.num_classes)
        return {c: int(n) for c, n in zip(self.class_names, counts)}


# --------------------------------------------------------------------------------------------
# File ids and canonical order
# --------------------------------------------------------------------------------------------


_NUM_RE = re.compile(r"_(\d+)$")


def sort_key(file_id: str) -> tuple[int, int, str]:
    """(class index, file number, stem): the key of :func:`canonical_order`.

    Args:
        file_id: ``<class>/<class>_<number>.<ext>``.

    Returns:
        The key.
    """
    cls, stem = file_id.split("/", 1)
    m = _NUM_RE.search(stem)
    return (CLASS_NAMES.index(cls), int(m.group(1)) if m else -1, stem)


def canonical_order(file_ids: Iterable[str]) -> list[str]:
    """Sort file ids by (class index, file number): the one order every source is put in.

    Args:
        file_ids: The ids to sort.

    Returns:
        The ids, sorted.
    """
    return sorted(file_ids, key=sort_key)
