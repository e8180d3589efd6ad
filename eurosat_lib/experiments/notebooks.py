"""``make experiments``: papermill every notebook template into the book, in dependency order."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence


from .. import __version__, config
from .._io import atomic_path

from .params import NOTEBOOKS, PROFILES, ParameterError


# --------------------------------------------------------------------------------------------
# make experiments: papermill every template into the book
# --------------------------------------------------------------------------------------------


def library_fingerprint() -> str:
    """Hash of the library's source: a changed library re-runs every notebook."""
    h = hashlib.sha256(__version__.encode())
    for p in sorted(config.PACKAGE_DIR.rglob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def run_notebooks(
    profile: str = "cpu",
    notebooks: Sequence[str] | None = None,
    *,
    templates_dir: str | os.PathLike = "notebooks",
    book_dir: str | os.PathLike = "book",
    force: bool = False,
    extra_params: Mapping[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Execute notebook templates with papermill into ``book/chapters/``, in order.

    A notebook is skipped when its template, parameters and library fingerprint match those
    stored in the executed copy. Output is written to a temporary file and renamed, so the book
    never holds a half-executed chapter; run folders go to ``book/runs/<profile>/<notebook>``.
    """
    import nbformat
    import papermill

    if profile not in PROFILES:
        raise ParameterError(f"profile must be one of {PROFILES}, got {profile!r}")
    templates_dir, book_dir = Path(templates_dir), Path(book_dir)
    chosen = list(notebooks or NOTEBOOKS)
    bad = [n for n in chosen if n not in NOTEBOOKS]
    if bad:
        raise ParameterError(f"unknown notebook(s) {bad}; expected names from {list(NOTEBOOKS)}")
    lib = library_fingerprint()
    report = []
    for name in NOTEBOOKS:
        if name not in chosen:
            continue
        template = templates_dir / f"{name}.ipynb"
        out = book_dir / "chapters" / f"{name}.ipynb"
        params = {"profile": profile, "out_dir": str(book_dir / "runs" / profile / name), **(extra_params or {})}
        stamp = {
            "template_sha256": hashlib.sha256(template.read_bytes()).hexdigest(),
            "parameters": params,
            "library": lib,
        }
        if not force and out.is_file():
            old = nbformat.read(out, as_version=4).metadata.get("eurosat", {})
            if {k: old.get(k) for k in stamp} == stamp:
                log(f"[skip] {name}: unchanged (template, parameters, library)")
                report.append({"notebook": name, "status": "skipped"})
                continue
        log(f"[run ] {name} (profile={profile})")
        t0 = time.perf_counter()
        with atomic_path(out, suffix=".ipynb") as tmp:
            papermill.execute_notebook(
                str(template), str(tmp), parameters=params, cwd=str(Path.cwd()), progress_bar=False, kernel_name="python3"
            )
            nb = nbformat.read(tmp, as_version=4)
            nb.metadata["eurosat"] = {**stamp, "seconds": round(time.perf_counter() - t0, 1), "profile": profile}
            # papermill records the temporary file's absolute path; the book shows where the chapter lives.
            nb.metadata.setdefault("papermill", {})["output_path"] = out.as_posix()
            _strip_noise(nb)
            # One parameters cell on the page: the template's (every name, with its help);
            # papermill's injected copy holds only profile and out_dir, shown in the header.
            for cell in nb.cells:
                if "injected-parameters" in cell.metadata.get("tags", []):
                    cell.metadata["tags"] = [*cell.metadata["tags"], "remove-cell"]
            nbformat.write(nb, tmp)
        secs = time.perf_counter() - t0
        log(f"[done] {name} in {secs:.0f} s -> {out}")
        report.append({"notebook": name, "status": "ran", "seconds": round(secs, 1)})
    return report


def _strip_noise(nb) -> None:
    """Drop stderr stream outputs (TF C++ logs, progress bars) from an executed notebook."""
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            cell["outputs"] = [o for o in cell.get("outputs", []) if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
