"""eurosat_lib.data on the real archive and on deliberately broken copies of it."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import REAL_ARCHIVE, REPO, jpeg_bytes, needs_real_data, write_tree, write_zip
from eurosat_lib import data as D

# The published per-class counts, copied from ../shared/data/README.md (not from the library).
README_COUNTS = {
    "AnnualCrop": 3000, "Forest": 3000, "HerbaceousVegetation": 3000, "Highway": 2500,
    "Industrial": 2500, "Pasture": 2000, "PermanentCrop": 2500, "Residential": 3000,
    "River": 2500, "SeaLake": 3000,
}  # fmt: skip


# ------------------------------------------------------------------------------------------
# The real archive
# ------------------------------------------------------------------------------------------


@needs_real_data
def test_real_archive_has_27000_images_with_published_counts(real_data):
    assert len(real_data) == 27_000
    assert real_data.images.shape == (27_000, 64, 64, 3) and real_data.images.dtype == np.uint8
    assert real_data.labels.dtype == np.int64
    assert real_data.class_counts() == README_COUNTS
    assert list(real_data.class_names) == sorted(README_COUNTS)
    assert len(set(real_data.file_ids.tolist())) == 27_000
    # labels agree with the class folder in each file id
    names = np.array(real_data.class_names)
    assert (names[real_data.labels] == np.array([f.split("/")[0] for f in real_data.file_ids])).all()
    assert real_data.info["content_digest"] == D.PUBLISHED_CONTENT_DIGEST
    # not a degenerate decode: real images vary
    assert 50 < real_data.images.mean() < 150 and real_data.images.std() > 20


@needs_real_data
def test_split_sizes_disjoint_and_stratified(real_data):
    train, val, test = real_data.splits()
    assert (len(train), len(val), len(test)) == (16_200, 5_400, 5_400)
    sets = [set(s.file_ids.tolist()) for s in (train, val, test)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert len(sets[0] | sets[1] | sets[2]) == 27_000
    for part, frac in zip((train, val, test), D.SPLIT_FRACTIONS):
        for cls, n in part.class_counts().items():
            assert abs(n - frac * README_COUNTS[cls]) <= 1, (cls, n)


def test_split_fast_path_matches_the_manifest_line_by_line(real_data):
    """attach_split's vectorised path (canonical order) and its per-file path give the same split."""
    table = D.read_manifest()
    assert [table[f] for f in real_data.file_ids.tolist()] == real_data.split.tolist()
    from dataclasses import replace

    order = np.random.default_rng(0).permutation(len(real_data.file_ids))
    shuffled = D.attach_split(replace(real_data, file_ids=real_data.file_ids[order], split=None))
    assert shuffled.split.tolist() == real_data.split[order].tolist()


def test_malformed_manifest_line_is_an_error(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("file_id,label,split\nForest/Forest_1,Forest,train\nForest/Forest_2,Forest\n")
    with pytest.raises(D.SplitManifestError, match="malformed"):
        D.attach_split(D.make_synthetic(n_per_class=1, seed=0), bad)
    # a short line and a long one must not cancel out
    bad.write_text("file_id,label,split\nForest/Forest_1,Forest\nForest/Forest_2,Forest,train,x\n")
    with pytest.raises(D.SplitManifestError, match="malformed.*Forest/Forest_1,Forest'"):
        D.read_manifest(bad)


@needs_real_data
def test_manifest_is_reproduced_exactly_by_the_generator(tmp_path):
    listing = D.open_source(REAL_ARCHIVE)
    listing.close()
    ids = list(listing.members)
    labels = [D.CLASS_NAMES.index(i.split("/")[0]) for i in ids]
    out = D.write_manifest(ids, labels, tmp_path / "m.csv")
    assert out.read_bytes() == D.MANIFEST_PATH.read_bytes()
    # and the generator is deterministic and independent of input order
    rev = D.write_manifest(ids[::-1], labels[::-1], tmp_path / "m2.csv")
    assert rev.read_bytes() == out.read_bytes()


def test_manifest_generator_script_runs(tmp_path, real_members):
    archive = write_zip(tmp_path / "small.zip", {f"EuroSAT_RGB/{k}": v for k, v in real_members.items()})
    manifest = tmp_path / "m.csv"
    code = (
        "import sys; from eurosat_lib import data; data.MANIFEST_PATH = __import__('pathlib').Path(sys.argv[2]);"
        "import runpy; sys.argv = ['make_split.py', sys.argv[1]];"
        "data.write_manifest.__defaults__ = (data.MANIFEST_PATH,);"
        "runpy.run_path('scripts/make_split.py', run_name='__main__')"
    )
    r = subprocess.run([sys.executable, "-c", code, str(archive), str(manifest)], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in manifest.read_text().splitlines() if not ln.startswith(("#", "file_id"))]
    assert len(rows) == 30


@needs_real_data
@pytest.mark.slow
def test_2750_and_extracted_layouts_give_identical_arrays(real_data, tmp_path):
    """The other published zip layout (``2750/``, with junk) decodes to the very same arrays, and an
    extracted folder of the whole archive lists the same images in the same order with the same
    bytes (the published content digest). Decoding is the same code for every layout once the
    bytes are read, and ``test_kaggle_layout_with_side_files_and_junk`` checks a folder's arrays
    against a zip's; so the folder is not decoded in full a second time (~25 CPU-s of the suite)."""
    with zipfile.ZipFile(REAL_ARCHIVE) as zf:
        blobs = {n: zf.read(n) for n in zf.namelist()}
    # the original EuroSAT.zip layout, with the junk real archives carry
    orig = {n.replace("EuroSAT_RGB/", "2750/", 1): b for n, b in blobs.items()}
    orig["__MACOSX/2750/._Forest"] = b"junk"
    orig["2750/.DS_Store"] = b"junk"
    zip2750 = tmp_path / "EuroSAT.zip"
    with zipfile.ZipFile(zip2750, "w", compression=zipfile.ZIP_STORED) as zf:
        for n, b in orig.items():
            zf.writestr(n, b)
    folder = write_tree(tmp_path / "extracted", blobs) / "EuroSAT_RGB"
    (folder / "Forest" / "Thumbs.db").write_bytes(b"junk")
    other = D.load_eurosat(zip2750)
    np.testing.assert_array_equal(other.file_ids, real_data.file_ids)
    np.testing.assert_array_equal(other.labels, real_data.labels)
    np.testing.assert_array_equal(other.images, real_data.images)
    np.testing.assert_array_equal(other.split, real_data.split)
    assert other.info["content_digest"] == D.PUBLISHED_CONTENT_DIGEST
    listing = D.open_source(folder)
    try:
        assert D.canonical_order(listing.members) == list(real_data.file_ids)
    finally:
        listing.close()
    assert D.archive_content_digest(folder) == D.PUBLISHED_CONTENT_DIGEST


@needs_real_data
def test_warm_load_reads_the_cache_without_decoding(real_data, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("warm load must not decode images")

    monkeypatch.setattr(D, "_decode", boom)
    again = D.load_eurosat(REAL_ARCHIVE, mmap=True)
    assert isinstance(again.images, np.memmap)
    np.testing.assert_array_equal(again.images[::997], real_data.images[::997])


# ------------------------------------------------------------------------------------------
# Small archives built from real JPEGs: layouts, junk, bad input
# ------------------------------------------------------------------------------------------


def _load_small(path, **kw):
    return D.load_eurosat(path, with_split=False, **kw)


def test_kaggle_layout_with_side_files_and_junk(tmp_path, real_members):
    files = {f"EuroSAT/{k}": v for k, v in real_members.items()}
    files |= {
        "EuroSAT/train.csv": b"a,b\n", "EuroSAT/label_map.json": b"{}", "__MACOSX/EuroSAT/._x": b"",
        "EuroSAT/Forest/.DS_Store": b"", "EuroSAT/Thumbs.db": b"",
    }  # fmt: skip
    d = _load_small(write_zip(tmp_path / "kaggle.zip", files))
    assert len(d) == 30 and d.class_counts() == {c: 3 for c in D.CLASS_NAMES}
    assert d.file_ids[0] == "AnnualCrop/AnnualCrop_1" and d.file_ids[-1] == "SeaLake/SeaLake_3"
    # class folders directly at the root of a folder also work
    d2 = _load_small(write_tree(tmp_path / "flat", dict(real_members)))
    np.testing.assert_array_equal(d2.images, d.images)


def test_canonical_order_is_numeric_not_lexicographic():
    ids = ["Forest/Forest_10", "AnnualCrop/AnnualCrop_2", "Forest/Forest_9", "AnnualCrop/AnnualCrop_10"]
    assert D.canonical_order(ids) == [
        "AnnualCrop/AnnualCrop_2", "AnnualCrop/AnnualCrop_10", "Forest/Forest_9", "Forest/Forest_10",
    ]  # fmt: skip


def test_truncated_image_is_named_or_skipped(tmp_path, real_members):
    files = {f"EuroSAT_RGB/{k}": v for k, v in real_members.items()}
    files["EuroSAT_RGB/River/River_2.jpg"] = files["EuroSAT_RGB/River/River_2.jpg"][:300]
    archive = write_zip(tmp_path / "bad.zip", files)
    with pytest.raises(D.CorruptImageError, match=r"River/River_2\.jpg.*skip_corrupt=True"):
        _load_small(archive)
    with pytest.warns(UserWarning, match=r"skipped 1 corrupt image.*River_2\.jpg"):
        d = _load_small(archive, skip_corrupt=True)
    assert len(d) == 29 and "River/River_2" not in d.file_ids
    assert d.skipped == ("EuroSAT_RGB/River/River_2.jpg",)
    # a later strict load does not silently reuse the cache that skipped a file
    with pytest.raises(D.CorruptImageError):
        _load_small(archive)


def test_not_an_image_is_named(tmp_path, real_members):
    files = {f"EuroSAT_RGB/{k}": v for k, v in real_members.items()}
    files["EuroSAT_RGB/Highway/Highway_1.jpg"] = b"this is not a jpeg"
    with pytest.raises(D.CorruptImageError, match=r"Highway/Highway_1\.jpg"):
        _load_small(write_zip(tmp_path / "bad.zip", files))


def test_wrong_size_image_errors_unless_resize(tmp_path, real_members):
    files = {f"EuroSAT_RGB/{k}": v for k, v in real_members.items()}
    files["EuroSAT_RGB/Pasture/Pasture_3.jpg"] = jpeg_bytes(size=(128, 96))
    archive = write_zip(tmp_path / "big.zip", files)
    with pytest.raises(D.ImageSizeError, match=r"Pasture/Pasture_3\.jpg is 128x96.*resize=True"):
        _load_small(archive)
    d = _load_small(archive, resize=True)
    assert d.images.shape == (30, 64, 64, 3)


@pytest.mark.parametrize(
    "rename, pattern",
    [
        ({"Forest": "Forrest"}, r"Unknown folder\(s\): 'Forrest' \(did you mean 'Forest'\?\).*Missing class folder\(s\): Forest"),
        ({"SeaLake": None}, r"Missing class folder\(s\): SeaLake.*Expected exactly: AnnualCrop"),
        ({"River": "Clouds"}, r"Unknown folder\(s\): 'Clouds'.*Missing class folder\(s\): River"),
    ],
)
def test_class_folder_problems_are_named(tmp_path, real_members, rename, pattern):
    files = {}
    for k, v in real_members.items():
        cls, name = k.split("/")
        if cls in rename:
            if rename[cls] is None:
                continue
            cls = rename[cls]
        files[f"EuroSAT_RGB/{cls}/{name}"] = v
    with pytest.raises(D.ArchiveError, match=pattern):
        _load_small(write_zip(tmp_path / "x.zip", files))


def test_unexpected_file_is_an_error_naming_it(tmp_path, real_members):
    files = {f"EuroSAT_RGB/{k}": v for k, v in real_members.items()}
    files["EuroSAT_RGB/Forest/notes.docx"] = b"?"
    with pytest.raises(D.ArchiveError, match=r"unexpected file.*EuroSAT_RGB/Forest/notes\.docx"):
        _load_small(write_zip(tmp_path / "x.zip", files))


def test_empty_truncated_and_missing_archives(tmp_path, real_members):
    empty = write_zip(tmp_path / "empty.zip", {})
    with pytest.raises(D.ArchiveError, match=r"empty\.zip: contains no images.*EuroSAT_RGB/<Class>"):
        _load_small(empty)
    zero = tmp_path / "zero.zip"
    zero.write_bytes(b"")
    with pytest.raises(D.ArchiveError, match=r"zero\.zip is empty \(0 bytes\)"):
        _load_small(zero)
    full = write_zip(tmp_path / "full.zip", {f"EuroSAT_RGB/{k}": v for k, v in real_members.items()})
    cut = tmp_path / "cut.zip"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(D.ArchiveError, match=r"cut\.zip is not a readable zip.*truncated"):
        _load_small(cut)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.zip does not exist"):
        _load_small(tmp_path / "nowhere.zip")


def test_data_that_does_not_match_the_manifest_is_an_error(tmp_path, real_members):
    # a subset of the published images (a teaching copy, a CI fixture) keeps its published
    # splits, with a warning counting the absent files: the split is never silently recomputed
    archive = write_zip(tmp_path / "part.zip", {f"EuroSAT_RGB/{k}": v for k, v in real_members.items()})
    with pytest.warns(UserWarning, match=r"26970 of the 27000 images of split manifest .* are missing.*part\.zip"):
        part = D.load_eurosat(archive)
    table = D.read_manifest()
    assert len(part) == 30 and part.split.tolist() == [table[f] for f in part.file_ids.tolist()]
    # an image the manifest does not know
    files = {f"EuroSAT_RGB/{k}": v for k, v in real_members.items()}
    files["EuroSAT_RGB/Forest/Forest_99999.jpg"] = real_members["Forest/Forest_1.jpg"]
    with pytest.raises(D.SplitManifestError, match=r"Forest/Forest_99999.*not the published EuroSAT RGB"):
        D.load_eurosat(write_zip(tmp_path / "extra.zip", files))


# ------------------------------------------------------------------------------------------
# Cache integrity
# ------------------------------------------------------------------------------------------


def test_crash_while_writing_cache_leaves_no_partial_cache(tmp_path, real_members, monkeypatch):
    monkeypatch.setenv("EUROSAT_DATA_DIR", str(tmp_path / "cache"))
    archive = write_zip(tmp_path / "a.zip", {f"EuroSAT_RGB/{k}": v for k, v in real_members.items()})
    real_save = np.save
    calls = {"n": 0}

    def dying_save(path, arr, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        return real_save(path, arr, *a, **k)

    monkeypatch.setattr(np, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        _load_small(archive)
    monkeypatch.setattr(np, "save", real_save)
    arrays = Path(os.environ["EUROSAT_DATA_DIR"]) / "arrays"
    key = D._fingerprint(archive)
    entry = D._cache_entry(key, False)
    assert not entry.exists()
    assert not [p for p in arrays.iterdir() if p.name.startswith(f".{entry.name}") and ".tmp" in p.name]
    d = _load_small(archive)
    assert len(d) == 30 and entry.is_dir()


def test_corrupted_cache_is_detected_and_rebuilt(tmp_path, real_members, monkeypatch):
    monkeypatch.setenv("EUROSAT_DATA_DIR", str(tmp_path / "cache"))
    archive = write_zip(tmp_path / "a.zip", {f"EuroSAT_RGB/{k}": v for k, v in real_members.items()})
    first = _load_small(archive)
    # Loads are memory-mapped: the array is read-only, and a copy is needed to keep the original
    # pixels once the file under the mapping is damaged below.
    assert not first.images.flags.writeable
    expected = np.array(first.images)
    images_file = Path(first.info["cache"]) / "images.npy"
    raw = bytearray(images_file.read_bytes())
    raw[-100] ^= 0xFF  # flip bits in the pixel data
    images_file.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="cache .* is damaged .*checksum mismatch in images.npy.*rebuilding"):
        again = _load_small(archive)
    np.testing.assert_array_equal(again.images, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _load_small(archive)  # rebuilt cache is clean
    private = _load_small(archive, mmap=False)  # a writable copy in memory, same pixels
    assert private.images.flags.writeable and not isinstance(private.images, np.memmap)
    np.testing.assert_array_equal(private.images, expected)


_CONCURRENT = """
import sys, numpy as np
from eurosat_lib import data
d = data.load_eurosat(sys.argv[1], with_split=False)
print(int(d.images.astype(np.int64).sum()), len(d))
"""


def test_two_processes_sharing_a_fresh_cache(tmp_path, real_members):
    archive = write_zip(tmp_path / "a.zip", {f"EuroSAT_RGB/{k}": v for k, v in real_members.items()})
    env = dict(os.environ, EUROSAT_DATA_DIR=str(tmp_path / "shared_cache"))
    procs = [
        subprocess.Popen([sys.executable, "-c", _CONCURRENT, str(archive)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 1 and outs[0].endswith(" 30")
    entries = list((tmp_path / "shared_cache" / "arrays").iterdir())
    assert [e for e in entries if e.is_dir()] and not [e for e in entries if ".tmp" in e.name]


# ------------------------------------------------------------------------------------------
# Finding and downloading
# ------------------------------------------------------------------------------------------


def test_offline_download_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(D.config, "SHARED_DATA_DIR", tmp_path / "no-shared")
    monkeypatch.setenv("EUROSAT_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EUROSAT_ARCHIVE", raising=False)
    # closed local port (connection refused) and an unresolvable host (what offline DNS gives)
    monkeypatch.setattr(
        D,
        "DOWNLOAD_SOURCES",
        (D.DownloadSource("http://127.0.0.1:9/EuroSAT_RGB.zip", "EuroSAT_RGB.zip"),
         D.DownloadSource("http://eurosat-mirror.invalid/EuroSAT.zip", "EuroSAT.zip")),
    )  # fmt: skip
    monkeypatch.setattr(D.download_eurosat, "__defaults__", (None, D.DOWNLOAD_SOURCES, 20.0))
    t0 = time.perf_counter()
    with pytest.raises(D.DownloadError) as e:
        D.load_eurosat()
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert "127.0.0.1:9" in msg and "eurosat-mirror.invalid" in msg
    assert str(tmp_path / "cache" / "EuroSAT_RGB.zip") in msg and "zenodo.org/records/7711810" in msg
    assert not list((tmp_path / "cache").glob("*")) or not list((tmp_path / "cache").glob("*.tmp"))
    with pytest.raises(FileNotFoundError, match="No EuroSAT archive found"):
        D.load_eurosat(download=False)


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b""
    drop_after: int | None = None

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        body = self.payload if self.drop_after is None else self.payload[: self.drop_after]
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, *a):
        pass


@pytest.fixture
def http_server():
    servers = []

    def start(payload: bytes, drop_after: int | None = None) -> str:
        handler = type("H", (_Handler,), {"payload": payload, "drop_after": drop_after})
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/EuroSAT_RGB.zip"

    yield start
    for s in servers:
        s.shutdown()


@needs_real_data
def test_download_checks_and_places_archive_atomically(tmp_path, http_server):
    payload = REAL_ARCHIVE.read_bytes()
    sha = "7bb47023fe72d4ce94f86127c9553c207eab6e1fd3d12a076987356b656c68c5"
    # a server that drops the connection half-way: nothing partial is left behind
    dropped = http_server(payload, drop_after=len(payload) // 2)
    with pytest.raises(D.DownloadError, match="connection closed before the end"):
        D.download_eurosat(tmp_path, sources=[D.DownloadSource(dropped, "EuroSAT_RGB.zip", sha)])
    assert list(tmp_path.iterdir()) == []
    # a wrong checksum is rejected, also leaving nothing
    good = http_server(payload)
    with pytest.raises(D.DownloadError, match="SHA-256 mismatch"):
        D.download_eurosat(tmp_path, sources=[D.DownloadSource(good, "EuroSAT_RGB.zip", "0" * 64)])
    assert list(tmp_path.iterdir()) == []
    # the fallback mirror is used when the first source fails; the result is verified and whole
    path = D.download_eurosat(
        tmp_path,
        sources=[D.DownloadSource("http://127.0.0.1:9/x.zip", "EuroSAT_RGB.zip"), D.DownloadSource(good, "EuroSAT_RGB.zip", sha)],
    )
    assert path == tmp_path / "EuroSAT_RGB.zip" and path.read_bytes() == payload
    assert [p.name for p in tmp_path.iterdir()] == ["EuroSAT_RGB.zip"]


def test_find_archive_prefers_env_and_names_missing_path(tmp_path, monkeypatch):
    monkeypatch.setenv("EUROSAT_ARCHIVE", str(tmp_path / "missing.zip"))
    with pytest.raises(FileNotFoundError, match=r"EUROSAT_ARCHIVE=.*missing\.zip does not exist"):
        D.find_archive()
    folder = tmp_path / "2750"
    folder.mkdir()
    monkeypatch.delenv("EUROSAT_ARCHIVE")
    monkeypatch.setenv("EUROSAT_DATA_DIR", str(tmp_path))
    assert D.find_archive() == folder


# ------------------------------------------------------------------------------------------
# Subsets and synthetic data
# ------------------------------------------------------------------------------------------


def test_nested_subsets_are_stratified_and_nested():
    syn = D.make_synthetic(n_per_class=40, seed=1)
    previous: set[str] = set()
    for n in (1, 5, 10, 25, 40):
        sub = D.nested_subset(syn, n_per_class=n, seed=3)
        assert sub.class_counts() == {c: n for c in D.CLASS_NAMES}
        ids = set(sub.file_ids.tolist())
        assert previous <= ids
        previous = ids
    a = D.nested_subset(syn, fraction=0.25, seed=3)
    assert set(a.file_ids.tolist()) == set(D.nested_subset(syn, n_per_class=10, seed=3).file_ids.tolist())
    other_seed = set(D.nested_subset(syn, n_per_class=10, seed=4).file_ids.tolist())
    assert other_seed != set(a.file_ids.tolist())
    with pytest.raises(ValueError, match="n_per_class=41 but class 0 has only 40"):
        D.nested_subset(syn, n_per_class=41)
    with pytest.raises(ValueError, match="exactly one of"):
        D.nested_subset(syn)
    with pytest.raises(ValueError, match="fraction must be in"):
        D.nested_subset(syn, fraction=1.5)


@needs_real_data
def test_nested_subsets_of_the_real_train_split(real_data):
    train = real_data.get_split("train")
    small = D.nested_subset(train, n_per_class=5, seed=0)
    big = D.nested_subset(train, n_per_class=100, seed=0)
    assert len(small) == 50 and len(big) == 1000
    assert set(small.file_ids.tolist()) <= set(big.file_ids.tolist())
    assert (small.split == "train").all()
    # the one-copy form the experiments use picks exactly the same images, pixels included
    for kw in (dict(n_per_class=5, seed=0), dict(n_per_class=100, seed=3), dict(fraction=0.01, seed=2)):
        direct = real_data.get_split("train", **kw)
        two_step = D.nested_subset(train, **kw)
        assert direct.file_ids.tolist() == two_step.file_ids.tolist()
        assert np.array_equal(direct.images, two_step.images) and np.array_equal(direct.labels, two_step.labels)


def test_synthetic_data_is_eurosat_shaped_and_learnable():
    syn = D.make_synthetic(n_per_class=30, seed=0)
    assert syn.images.shape == (300, 64, 64, 3) and syn.images.dtype == np.uint8
    train, val, test = syn.splits()
    assert (len(train), len(val), len(test)) == (180, 60, 60)
    # class-dependent signal: a nearest-centroid classifier on simple colour/texture features
    def feats(x):
        x = x.astype(np.float32)
        grad = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2))
        gradx = np.abs(np.diff(x, axis=2)).mean(axis=(1, 2))
        return np.concatenate([x.mean(axis=(1, 2)), grad, gradx], axis=1)

    ftr, fte = feats(train.images), feats(test.images)
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    cent = np.stack([((ftr - mu) / sd)[train.labels == c].mean(0) for c in range(10)])
    pred = np.argmin(((((fte - mu) / sd)[:, None, :] - cent[None]) ** 2).sum(-1), axis=1)
    assert (pred == test.labels).mean() > 0.8
    assert not np.array_equal(D.make_synthetic(5, seed=0).images, D.make_synthetic(5, seed=1).images)


def test_get_split_validates_name():
    syn = D.make_synthetic(n_per_class=5)
    with pytest.raises(ValueError, match="split must be one of"):
        syn.get_split("validation")


# ------------------------------------------------------------------------------------------
# Input that is valid but not the published RGB set (issue 16)
# ------------------------------------------------------------------------------------------


def _tiff16(value: int = 40000) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64), value, dtype=np.uint16)).save(buf, format="TIFF")
    return buf.getvalue()


def test_16_bit_images_are_refused_never_clipped(tmp_path, real_members):
    files = {f"EuroSAT_RGB/{k}": v for k, v in real_members.items()}
    files["EuroSAT_RGB/Forest/Forest_2.tif"] = _tiff16()
    del files["EuroSAT_RGB/Forest/Forest_2.jpg"]
    archive = write_zip(tmp_path / "ms.zip", files)
    for kw in ({}, {"skip_corrupt": True}, {"use_cache": False}):
        with pytest.raises(D.ImageDepthError, match=r"Forest/Forest_2\.tif.*not an 8-bit image.*RGB release"):
            _load_small(archive, **kw)


def test_grayscale_image_warns_that_data_differ_from_published(tmp_path, real_members):
    import io

    from PIL import Image

    files = {f"EuroSAT_RGB/{k}": v for k, v in real_members.items()}
    buf = io.BytesIO()
    Image.open(io.BytesIO(files["EuroSAT_RGB/River/River_1.jpg"])).convert("L").save(buf, format="JPEG")
    files["EuroSAT_RGB/River/River_1.jpg"] = buf.getvalue()
    archive = write_zip(tmp_path / "gray.zip", files)
    for _ in range(2):  # the decode and the cached load both say so
        with pytest.warns(UserWarning, match=r"1 image\(s\) in .*gray\.zip are not RGB.*River_1\.jpg \(L\).*differ from the published"):
            d = _load_small(archive)
        assert d.images.shape == (30, 64, 64, 3)


def test_source_names_the_path_asked_for_not_the_cache_builder(tmp_path, real_members):
    first = write_zip(tmp_path / "first.zip", {f"EuroSAT_RGB/{k}": v for k, v in real_members.items()})
    assert _load_small(first).source == str(first)
    link = tmp_path / "link.zip"
    link.symlink_to(first)
    copy = tmp_path / "copy.zip"
    copy.write_bytes(first.read_bytes())
    assert _load_small(link).source == str(link)
    assert _load_small(copy).source == str(copy)


def test_unwritable_cache_dir_says_so_and_offers_a_way_out(tmp_path, real_members, monkeypatch):
    archive = write_zip(tmp_path / "a.zip", {f"EuroSAT_RGB/{k}": v for k, v in real_members.items()})
    monkeypatch.setenv("EUROSAT_DATA_DIR", str(tmp_path / "ro-cache"))

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(D, "FileLock", denied)  # what a read-only folder gives (root ignores chmod)
    with pytest.raises(PermissionError, match=r"ro-cache.* is not writable.*EUROSAT_DATA_DIR.*use_cache=False"):
        _load_small(archive)
    assert len(_load_small(archive, use_cache=False)) == 30
