"""The book builds without warnings and renders in a real (headless Chromium) browser."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from conftest import REPO, wait_in_background

# The book is built and rendered once per test run, in the background from the start of the run
# (conftest._book_job_in_background, which runs this file with --job).
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


def _job(out: Path) -> int:
    """The background job conftest starts once per test run (``python tests/test_book.py --job OUT``):
    build the book into ``OUT/book`` (its exit status and stderr in ``OUT/build.json``), then, where
    Chromium is installed, visit every page (``OUT/pages/pages.json``; a failure in
    ``OUT/pages/error.txt``). Exits non-zero if either failed."""
    jb = Path(sys.executable).parent / "jupyter-book"
    r = subprocess.run(
        [str(jb), "build", "book/", "--path-output", str(out / "book"), "--warningiserror", "--keep-going"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    (out / "build.json").write_text(json.dumps({"rc": r.returncode, "tail": (r.stdout + r.stderr)[-4000:], "stderr": r.stderr}))
    if r.returncode != 0 or CHROMIUM is None:
        return r.returncode
    pages = out / "pages"
    pages.mkdir()
    try:
        _render_pages(out / "book" / "_build" / "html", pages)
    except BaseException as e:
        (pages / "error.txt").write_text(f"{type(e).__name__}: {e}")
        raise
    return 0


def _job_folder(run_dir: Path) -> Path:
    """The background job's folder, once it has finished (conftest ``_book_job_in_background``)."""
    folder = run_dir / "book_job"
    if not (folder / ".done").exists():
        pytest.fail("the book job was not started: tests/conftest.py starts it when a selected test "
                    "uses the built_book fixture")  # fmt: skip
    rc, _, stderr = wait_in_background(folder, "job", timeout=1200)
    if not (folder / "build.json").is_file():  # the job died before it could say how the build went
        pytest.fail(f"the book job exited {rc} before building: {stderr[-3000:]}")
    return folder


@pytest.fixture(scope="session")
def built_book(run_dir) -> Path:
    folder = _job_folder(run_dir)
    build = json.loads((folder / "build.json").read_text())
    assert build["rc"] == 0, build["tail"]
    assert "warning" not in build["stderr"].lower(), build["stderr"][-3000:]
    return folder / "book" / "_build" / "html"


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
    srv, url = _serve(built_book)
    yield url
    srv.shutdown()


@needs_chromium
def test_index_redirect_lands_on_the_intro(server):
    r = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, "--virtual-time-budget=10000", "--dump-dom", f"{server}/index.html"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Transfer learning on EuroSAT" in r.stdout and "The questions, and where each is tested" in r.stdout


# What the browser collects from each page: the text of <main>, its images, tables and links.
_COLLECT = """() => {
  const main = document.querySelector('main') || document.body;
  return {
    title: (main.querySelector('h1') || {innerText: ''}).innerText,
    text: main.innerText,
    images: [...main.querySelectorAll('img')].map(e => ({src: e.currentSrc || e.src, ok: e.complete && e.naturalWidth > 0})),
    tables: [...main.querySelectorAll('table')].map(e => e.innerText),
    dropdowns: [...main.querySelectorAll('details')].map(e => ({open: e.open, text: e.textContent})),
    cells: [...main.querySelectorAll('table td')].map(e => e.innerText),
    links: [...document.querySelectorAll('a[href]')].map(e => e.href),
    assets: [...document.querySelectorAll('script[src], link[href][rel=stylesheet], img[src]')].map(e => e.src || e.href),
    math: document.querySelectorAll('mjx-container').length,
    buttons: [...document.querySelectorAll('.article-header-buttons a[href], .header-article-items a[href]')].map(e => e.href),
  };
}"""


def _serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


def _render_pages(built: Path, out: Path) -> None:
    """Open every page of the book once in headless Chromium with the network cut off (only the
    local server answers, so CDN assets fail as they would offline), after MathJax has typeset
    it; write what each page shows to ``out/pages.json`` and a full-page screenshot beside it."""
    from playwright.sync_api import sync_playwright

    srv, server = _serve(built)
    pages: dict[str, dict] = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS[1:])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith(server) else r.abort())
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            for f in _toc_files():
                errors.clear()
                url = f"{server}/{Path(f).with_suffix('.html').as_posix()}"
                resp = page.goto(url, wait_until="load")
                assert resp is not None and resp.ok, f"{url}: HTTP {resp.status if resp else None}"
                # MathJax typesets after the load event; wait for it where the page has math.
                page.evaluate("async () => { if (window.MathJax && MathJax.startup) await MathJax.startup.promise; }")
                info = page.evaluate(_COLLECT)
                # Links as paths of the built book (the server's port changes between runs).
                for key in ("links", "assets"):
                    info[key] = [u[len(server):] if u.startswith(server) else u for u in info[key]]
                info["errors"] = list(errors)
                info["screenshot"] = f"{f.replace('/', '_')}.png"
                page.screenshot(path=str(out / info["screenshot"]), full_page=True)
                pages[f] = info
            browser.close()
    finally:
        srv.shutdown()
    (out / "pages.json").write_text(json.dumps(pages))
    if os.environ.get("EUROSAT_SCREENSHOTS"):
        shutil.copytree(out, os.environ["EUROSAT_SCREENSHOTS"], dirs_exist_ok=True)


@pytest.fixture(scope="module")
def rendered(run_dir, built_book) -> dict[str, dict]:
    """What every page of the built book shows in headless Chromium, offline (made once per test
    run: tests/test_chapter_outputs.py reads the same). Screenshots: $EUROSAT_SCREENSHOTS."""
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'; .ci/run installs it)")
    folder = _job_folder(run_dir) / "pages"
    if not (folder / "pages.json").is_file():
        pytest.fail(f"the browser visit failed: {(folder / 'error.txt').read_text() if (folder / 'error.txt').is_file() else 'no pages.json'}")
    pages = json.loads((folder / "pages.json").read_text())
    for info in pages.values():
        info["screenshot"] = folder / info["screenshot"]
    return pages


def test_every_page_renders_offline_with_title_screenshot_and_no_js_errors(rendered):
    assert set(rendered) == set(_toc_files())
    for f, info in rendered.items():
        assert info["title"].strip(), f"{f}: no title"
        assert info["screenshot"].stat().st_size > 10_000, f"{f}: empty screenshot"
        # sphinx-thebe (pulled in by the theme) declares THEBE_JS_URL in a script that Jupyter
        # Book 1.x includes twice on notebook pages; harmless (thebe is off), and not ours to fix.
        errors = [e for e in info["errors"] if "THEBE_JS_URL" not in e]
        assert not errors, f"{f}: JavaScript errors: {errors[:3]}"


def test_math_is_typeset_offline(rendered):
    """MathJax ships with the book (sphinx-mathjax-offline): with no network the equation of
    chapter 2 is typeset, and no page shows raw LaTeX."""
    raw = re.compile(r"\\(text|underbrace|frac|iff|qquad|mathrm)\b|\$\$|\\\[|\\\(")
    leftovers = {f: raw.search(i["text"]).group(0) for f, i in rendered.items() if raw.search(i["text"])}
    assert not leftovers, f"raw LaTeX in the rendered pages: {leftovers}"
    assert rendered["chapters/02_negative_transfer"]["math"] >= 1, "chapter 2's equation was not typeset"


def test_every_image_loads(rendered):
    broken = {f: [i["src"][:80] for i in info["images"] if not i["ok"]] for f, info in rendered.items()}
    broken = {f: b for f, b in broken.items() if b}
    assert not broken, f"images that did not load: {broken}"
    for f, info in rendered.items():
        if f.startswith("chapters/"):
            assert len(info["images"]) >= 2, f"{f}: expected its figures, found {len(info['images'])} images"


def test_no_broken_internal_link(rendered, built_book):
    """Every same-site link and asset of every page points at a file of the built book, and a
    link's #anchor at an id on the target page."""
    from urllib.parse import unquote, urlsplit

    ids: dict[Path, set[str]] = {}
    broken = []
    for f, info in rendered.items():
        for href in info["links"] + info["assets"]:
            if not href.startswith("/"):  # another site (CDN, GitHub, Colab): not ours to check offline
                continue
            parts = urlsplit(href)
            target = built_book / unquote(parts.path).lstrip("/")
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append((f, href))
                continue
            if parts.fragment and target.suffix == ".html":
                if target not in ids:
                    ids[target] = set(re.findall(r'\bid="([^"]+)"', target.read_text(errors="replace")))
                if unquote(parts.fragment) not in ids[target]:
                    broken.append((f, href))
    assert not broken, f"{len(broken)} broken internal links, e.g. {broken[:5]}"


def test_pages_show_figures_and_numbers(rendered):
    for f, info in rendered.items():
        if f.startswith("chapters/"):
            # The parameters/profile/hardware table: the first dropdown, closed (a reader opens it).
            head = info["dropdowns"][:1]
            assert head and not head[0]["open"], f"{f}: no closed parameters dropdown near the top"
            t = head[0]["text"]
            assert "profile" in t and "cpu" in t and "hardware" in t.lower(), f"{f}: the parameters/hardware table is missing"
        if f in ("results", "performance"):
            numeric = [c for c in info["cells"] if re.search(r"\d+(\.\d+)?\s*%|\d+\.\d+", c)]
            assert len(numeric) >= 10, f"{f}: results tables hold too few numbers ({len(numeric)})"


def test_repository_and_launch_buttons_point_at_each_chapter_notebook(built_book):
    """The repository URL is set once (_config.yml ``repository``); with it every page links the
    repository and its issues, and every chapter opens its own executed notebook in Colab/Binder.
    Checked on the shared build (the committed config sets the URL), so no extra build."""
    from html import unescape
    from urllib.parse import urlsplit

    repo = yaml.safe_load((REPO / "_config.yml").read_text())["repository"]
    url, branch, book = repo["url"].rstrip("/"), repo["branch"], repo["path_to_book"].strip("/")
    owner_repo = urlsplit(url).path.strip("/")
    assert owner_repo.count("/") == 1, f"repository.url should be https://github.com/OWNER/REPO, got {url}"
    for f in _toc_files():
        hrefs = {unescape(h) for h in re.findall(r'href="([^"]+)"', (built_book / f"{f}.html").read_text())}
        assert url in hrefs, f"{f}: no repository button"
        assert any(h.startswith(f"{url}/issues/new") for h in hrefs), f"{f}: no issue button"
        if f.startswith("chapters/"):
            notebook = f"{book}/{f}.ipynb"
            assert (REPO / notebook).is_file()
            expected = {
                "Colab": f"https://colab.research.google.com/github/{owner_repo}/blob/{branch}/{notebook}",
                "Binder": f"https://mybinder.org/v2/gh/{owner_repo}/{branch}?urlpath=lab/tree/{notebook}",
            }
            missing = {k: v for k, v in expected.items() if v not in hrefs}
            assert not missing, f"{f}: launch buttons missing or pointing elsewhere: {missing}"


def test_publishing_workflow_builds_with_make_book_and_deploys_to_pages():
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "book.yml").read_text())
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on:` key as True
    assert "main" in triggers["push"]["branches"]
    assert wf["permissions"]["pages"] == "write" and wf["permissions"]["id-token"] == "write"
    steps = [s for job in wf["jobs"].values() for s in job["steps"]]
    uses = [s.get("uses", "") for s in steps]
    # The README's build command, verbatim.
    readme = (REPO / "README.md").read_text()
    runs = [s["run"].strip() for s in steps if "run" in s]
    assert "make book" in readme and "make book" in runs, runs
    upload = [s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact@")]
    assert upload and upload[0]["with"]["path"] == "_build/html"
    assert any(u.startswith("actions/deploy-pages@") for u in uses)
    assert wf["jobs"]["deploy"]["needs"] == "build"


def test_make_publish_pushes_the_built_book_with_ghp_import():
    r = subprocess.run(["make", "-n", "publish"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    publish = [line for line in r.stdout.splitlines() if "ghp-import" in line]
    assert publish and "_build/html" in publish[0] and " -p" in publish[0], r.stdout[-1000:]
    assert "jupyter-book build book/" in r.stdout  # it builds first (make book)


_CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")


def _book_markdown() -> dict[str, str]:
    """The prose of the book: its Markdown pages and the markdown cells of its chapters."""
    import nbformat

    texts = {str(p.relative_to(REPO)): p.read_text() for p in (REPO / "book").glob("*.md")}
    for p in sorted((REPO / "book" / "chapters").glob("*.ipynb")):
        nb = nbformat.read(p, as_version=4)
        texts[str(p.relative_to(REPO))] = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    return texts


def test_every_bibliography_entry_is_cited_and_every_citation_exists():
    """The bibliography lists only what the book cites (no `:all:`), so an uncited entry would
    silently vanish and a missing key would only warn: check both here."""
    keys = set(re.findall(r"^@\w+\{([^,\s]+),", (REPO / "book" / "references.bib").read_text(), re.MULTILINE))
    cited: dict[str, set[str]] = {}
    for name, text in _book_markdown().items():
        for group in _CITE.findall(text):
            for key in group.split(","):
                cited.setdefault(key.strip(), set()).add(name)
    assert not set(cited) - keys, f"cited but not in references.bib: {sorted(set(cited) - keys)}"
    assert not keys - set(cited), f"bibliography entries no page cites: {sorted(keys - set(cited))}"
    # No raw links to papers where a bibliography entry belongs.
    raw = {n for n, t in _book_markdown().items() if re.search(r"\]\(https?://arxiv\.org/", t)}
    assert not raw, f"raw arXiv links instead of citations in {raw}"


def test_chapter_prose_matches_its_template():
    """The executed chapters carry the templates' markdown cells verbatim (edits reach both)."""
    import nbformat

    for t in sorted((REPO / "notebooks").glob("*.ipynb")):
        c = REPO / "book" / "chapters" / t.name
        md = [[x.source for x in nbformat.read(p, as_version=4).cells if x.cell_type == "markdown"] for p in (t, c)]
        assert md[0] == md[1], f"{t.name}: markdown cells differ between notebooks/ and book/chapters/"


def test_every_executed_chapter_is_current_for_its_template_and_profile():
    """What `make experiments PROFILE=cpu` would skip: each chapter ran from its template's cells with
    the cpu profile's values as they are now. A changed profile default (seeds, epochs) or template
    cell that was not re-executed fails here, not silently in a reader's rebuild."""
    import nbformat

    from eurosat_lib.experiments.notebooks import resolved_parameters, stale_reason

    stale = {}
    for t in sorted((REPO / "notebooks").glob("*.ipynb")):
        name = t.stem
        params = {"profile": "cpu", "out_dir": f"book/runs/cpu/{name}"}
        reason = stale_reason(nbformat.read(t, as_version=4), nbformat.read(REPO / "book" / "chapters" / t.name, as_version=4),
                              params, resolved_parameters(name, params))
        if reason is not None:
            stale[name] = reason
    assert not stale, f"executed chapters out of date (run make experiments PROFILE=cpu): {stale}"

def test_chapter_outputs_link_no_notebook():
    """The book rewrites `[..](NN_x.ipynb)` links in markdown *cells* to its pages, never in cell
    *outputs*: such a link in an output is broken on the built page (the built-book link check
    found two). Outputs name the chapter in words; the markdown around them links."""
    import nbformat

    found = []
    for c in sorted((REPO / "book" / "chapters").glob("*.ipynb")):
        for i, cell in enumerate(nbformat.read(c, as_version=4).cells):
            for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
                text = "".join(o.get("data", {}).get("text/markdown", "")) + "".join(o.get("data", {}).get("text/html", ""))
                found += [(c.name, i, m) for m in re.findall(r"\]\((?:\.\./)?(?:chapters/)?[^)]*?\.ipynb[^)]*\)", text)]
    assert not found, f"notebook links in cell outputs (broken in the book): {found[:5]}"

def test_prose_building_cells_show_their_text_not_their_code():
    """Cells that build a paragraph with f-strings (``display(Markdown(...))``) are tagged
    ``remove-input`` (or ``hide-input``, collapsed, where they also call the library), in the
    template and in its executed chapter alike."""
    import nbformat

    for t in sorted((REPO / "notebooks").glob("*.ipynb")):
        chapter = nbformat.read(REPO / "book" / "chapters" / t.name, as_version=4)
        tags_in_chapter = {c.source: set(c.metadata.get("tags", [])) for c in chapter.cells if c.cell_type == "code"}
        for cell in nbformat.read(t, as_version=4).cells:
            if cell.cell_type != "code" or "Markdown(" not in cell.source or len(cell.source.splitlines()) < 6:
                continue
            tags = set(cell.metadata.get("tags", []))
            assert tags & {"remove-input", "hide-input"}, f"{t.name}: prose cell shown as code: {cell.source[:60]!r}"
            if cell.source in tags_in_chapter:
                assert tags_in_chapter[cell.source] >= tags & {"remove-input", "hide-input"}, f"{t.name}: tags differ"


def test_pages_show_no_prose_building_code(rendered):
    """No page shows a multi-line paragraph builder (a one-line status message may stay)."""
    builder = re.compile(r"display\(Markdown\(\s*\n|display\(Markdown\(f\'\'\'")
    shown = {f: len(builder.findall(i["text"])) for f, i in rendered.items() if builder.search(i["text"])}
    assert not shown, f"pages show the f-string code that builds their text: {shown}"


if __name__ == "__main__":
    if sys.argv[1:2] != ["--job"] or len(sys.argv) != 3:
        sys.exit("usage: python tests/test_book.py --job OUT  (started by tests/conftest.py)")
    sys.exit(_job(Path(sys.argv[2])))
