"""The book builds without warnings and renders in a real (headless Chromium) browser."""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from conftest import REPO, once_per_run

# The book is built once per test run (conftest.once_per_run), whichever worker asks first.
pytestmark = pytest.mark.xdist_group("book")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian package 'chromium'; .ci/run installs it)"
)
# Flags for a root, offline, display-less machine: without the networking ones Chromium keeps
# trying to reach Google's services.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _toc_files() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))
            for part in e.get("chapters", []) or []:
                files.append(part["file"]) if "file" in part else None

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


def _build(out: Path) -> None:
    jb = Path(sys.executable).parent / "jupyter-book"
    r = subprocess.run(
        [str(jb), "build", "book/", "--path-output", str(out), "--warningiserror", "--keep-going"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "warning" not in r.stderr.lower(), r.stderr[-3000:]


@pytest.fixture(scope="session")
def built_book(run_dir) -> Path:
    return once_per_run(run_dir, "book", _build) / "_build" / "html"


def test_book_builds_every_toc_page(built_book):
    for f in _toc_files():
        page = built_book / (Path(f).with_suffix(".html"))
        assert page.is_file(), f"{f} was not rendered"
    assert (built_book / "index.html").is_file()


def test_committed_outputs_name_no_machine_paths():
    """Executed chapters, run records and benchmark results name paths relative to the repository."""
    absolute = re.compile(r"(?<![\w.])/(?:work|home|root|tmp|Users|mnt|private|var/folders)/[^\s\"']*")
    files = [p for p in (REPO / "book").rglob("*") if p.suffix in {".md", ".ipynb", ".json", ".csv"} and "_build" not in p.parts]
    files += list((REPO / "benchmarks" / "results").glob("*.json"))
    assert len(files) > 20
    found = {str(p.relative_to(REPO)): m.group(0) for p in files for m in [absolute.search(p.read_text(errors="replace"))] if m}
    assert not found, f"machine paths in committed files: {found}"


def test_chapters_in_the_book_are_executed_cpu_runs():
    import nbformat

    chapters = sorted((REPO / "book" / "chapters").glob("*.ipynb"))
    templates = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
    assert [c.name for c in chapters] == templates, "every template needs its executed chapter (make experiments)"
    for c in chapters:
        nb = nbformat.read(c, as_version=4)
        meta = nb.metadata.get("eurosat", {})
        assert meta.get("profile") == "cpu", f"{c.name}: not a cpu-profile run ({meta})"
        assert meta["parameters"]["profile"] == "cpu"
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert all(cell.get("execution_count") for cell in code), f"{c.name} has unexecuted cells"
        errors = [o for cell in code for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{c.name} contains an error output"
        stderr = [o for cell in code for o in cell.get("outputs", []) if o.get("name") == "stderr"]
        assert not stderr, f"{c.name} keeps stderr output (TF logs/progress bars) in the book"


@pytest.fixture(scope="module")
def server(built_book):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(built_book))

    class Quiet(handler.func):  # type: ignore[misc, name-defined]
        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(built_book)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@needs_chromium
def test_index_redirect_lands_on_the_intro(server):
    r = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, "--virtual-time-budget=10000", "--dump-dom", f"{server}/index.html"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Transfer learning on EuroSAT" in r.stdout and "The questions, and where each is tested" in r.stdout


@needs_chromium
def test_pages_render_with_figures_and_numbers(server, tmp_path):
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("EUROSAT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    pages = _toc_files()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS[1:])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        for f in pages:
            url = f"{server}/{Path(f).with_suffix('.html').as_posix()}"
            resp = page.goto(url, wait_until="load")
            assert resp is not None and resp.ok, f"{url}: HTTP {resp.status if resp else None}"
            h1 = page.locator("main h1").first.inner_text()
            assert h1.strip(), f"{f}: no title"
            images = page.eval_on_selector_all(
                "main img", "els => els.map(e => ({src: e.currentSrc, ok: e.complete && e.naturalWidth > 0}))"
            )
            broken = [i["src"][:80] for i in images if not i["ok"]]
            assert not broken, f"{f}: images that did not load: {broken}"
            if f.startswith("chapters/"):
                assert len(images) >= 2, f"{f}: expected its figures, found {len(images)} images"
                # The parameters/profile/hardware table (after the Prerequisites table).
                tables = page.eval_on_selector_all("main table", "els => els.map(e => e.innerText)")
                assert any("profile" in t and "cpu" in t and "hardware" in t.lower() for t in tables[:4]), (
                    f"{f}: the parameters/hardware table is missing near the top"
                )
            if f in ("results", "performance"):
                cells = page.eval_on_selector_all("main table td", "els => els.map(e => e.innerText)")
                numeric = [c for c in cells if re.search(r"\d+(\.\d+)?\s*%|\d+\.\d+", c)]
                assert len(numeric) >= 10, f"{f}: results tables hold too few numbers ({len(numeric)})"
            if f in ("intro", "results"):
                page.screenshot(path=str(shots / f"{f}.png"), full_page=True)
        browser.close()
    # sphinx-thebe (pulled in by the theme) declares THEBE_JS_URL in a script that Jupyter Book 1.x
    # includes twice on notebook pages; harmless (thebe is off), and not ours to fix.
    errors = [e for e in errors if "THEBE_JS_URL" not in e]
    assert not errors, f"JavaScript errors: {errors[:3]}"
