"""``make experiments``: papermill every notebook template into the book, in dependency order."""

from __future__ import annotations

import hashlib
import json
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
    """Hash of the library's source (recorded in each executed chapter, for provenance).

    Sorted by path relative to the package and read with normalised line endings, so every
    checkout of one commit gives the same value on every OS.

    Returns:
        The hex digest.
    """
    h = hashlib.sha256(__version__.encode())
    for p in sorted(config.PACKAGE_DIR.rglob("*.py"), key=lambda p: p.relative_to(config.PACKAGE_DIR).as_posix()):
        h.update(p.relative_to(config.PACKAGE_DIR).as_posix().encode() + b"\0")
        h.update(p.read_bytes().replace(b"\r\n", b"\n"))
    return h.hexdigest()[:16]


def _cells(nb) -> list[tuple[str, str]]:
    """A notebook's content as (cell type, source) pairs, without papermill's injected cell."""
    return [
        (c.cell_type, c.source.replace("\r\n", "\n"))
        for c in nb.cells
        if "injected-parameters" not in c.get("metadata", {}).get("tags", [])
    ]


def cells_fingerprint(nb) -> str:
    """SHA-256 over a notebook's cell types and sources (not its metadata, ids or outputs).

    Args:
        nb: A notebook (nbformat node).

    Returns:
        The hex digest.
    """
    return hashlib.sha256(json.dumps(_cells(nb)).encode()).hexdigest()


def resolved_parameters(notebook: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter a chapter resolves to from ``params`` (the profile decides the rest), as JSON.

    Stamped into each executed chapter, so a change of a profile's default (say its seeds) makes
    the chapter stale although neither its cells nor the ``-p`` parameters changed.

    Args:
        notebook: The chapter's notebook name.
        params: The parameters it is run with (``profile``, ``out_dir``, ...).

    Returns:
        Name -> value, without ``out_dir`` (where the runs go does not change what they are).

    Raises:
        ParameterError: a parameter is unknown or invalid.
    """
    from .params import resolve_params

    P = resolve_params(notebook, **dict(params))
    return json.loads(json.dumps({k: v for k, v in sorted(vars(P).items()) if k != "out_dir"}, default=str))


def stale_reason(template_nb, executed_nb, params: Mapping[str, Any], resolved: Mapping[str, Any] | None = None) -> str | None:
    """Why an executed chapter must be re-run for ``template_nb`` and ``params``, or None.

    A chapter is unchanged when its cells are the template's cells and it ran with the same
    parameters: what a clone of the repository holds, whatever the files' timestamps, cell ids,
    notebook metadata or line endings. (Comparing hashes of whole files and of the whole library
    re-ran every chapter after any commit that did not re-execute the book, so a fresh clone
    re-executed chapters nothing had changed in and rewrote their timestamps.) The library is
    deliberately not an input here: finished runs are reused by their own parameters anyway,
    so a library change alone would only re-render; ``--force`` does that. The profile's values
    are an input (``resolved``): the same ``-p`` parameters under a changed profile default are
    a different run.

    Args:
        template_nb: The template (nbformat node).
        executed_nb: The executed chapter (nbformat node).
        params: The parameters it would run with now.
        resolved: What they resolve to now (:func:`resolved_parameters`); None skips that check.

    Returns:
        The reason, or None when the chapter is up to date.
    """
    old = executed_nb.metadata.get("eurosat", {})
    if old.get("parameters") != dict(params):
        return f"parameters changed ({old.get('parameters')} -> {dict(params)})"
    if _cells(executed_nb) != _cells(template_nb):
        return "the template's cells changed"
    if resolved is not None:
        before = old.get("resolved")
        if before is None:
            return "it was executed before the profile's values were stamped into it"
        changed = sorted(k for k in set(before) | set(resolved) if before.get(k) != resolved.get(k))
        if changed:
            return "the profile's values changed: " + "; ".join(f"{k} {before.get(k)!r} -> {resolved.get(k)!r}" for k in changed)
    return None


def _check_templates(templates_dir: Path, names: Sequence[str]) -> None:
    missing = [n for n in names if not (templates_dir / f"{n}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(
            f"notebook template(s) {', '.join(str(templates_dir / f'{n}.ipynb') for n in missing)} not found "
            f"(working directory {Path.cwd()}): run `make experiments` or `python -m eurosat_lib experiments` "
            "from the repository root, where notebooks/ and book/ are"
        )


#: ipykernel logs a warning that a local TCP kernel is unencrypted on every start; the kernels
#: run on this machine for one notebook each, so keep their log to errors (user-code warnings
#: still reach the notebook's own output).
KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=ERROR",)


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

    A notebook is skipped when the executed copy has the template's cells and parameters
    (:func:`stale_reason`). Output is written to a temporary file and renamed, so the book
    never holds a half-executed chapter; run folders go to ``book/runs/<profile>/<notebook>``.

    Args:
        profile: The profile every chapter runs with.
        notebooks: Which chapters, by notebook name (default all; they run in book order).
        templates_dir: Where the templates are.
        book_dir: The book; executed chapters go to ``book_dir/chapters``.
        force: Re-run chapters that are up to date too.
        extra_params: Parameters passed to every chapter.
        log: Where progress lines go.

    Returns:
        One entry per chapter: ``notebook``, ``status`` (``ran`` or ``skipped``) and, for a
        chapter that ran, ``seconds``.

    Raises:
        ParameterError: an unknown profile or notebook name.
        FileNotFoundError: a template is missing (e.g. run outside the repository root).
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
    _check_templates(templates_dir, chosen)
    lib = library_fingerprint()
    report = []
    for name in NOTEBOOKS:
        if name not in chosen:
            continue
        template = templates_dir / f"{name}.ipynb"
        out = book_dir / "chapters" / f"{name}.ipynb"
        params = {"profile": profile, "out_dir": str(book_dir / "runs" / profile / name), **(extra_params or {})}
        template_nb = nbformat.read(template, as_version=4)
        resolved = resolved_parameters(name, params)
        stamp = {"cells_sha256": cells_fingerprint(template_nb), "parameters": params, "resolved": resolved, "library": lib}
        if not force and out.is_file():
            executed = nbformat.read(out, as_version=4)
            reason = stale_reason(template_nb, executed, params, resolved)
            if reason is None:
                note = "" if executed.metadata.get("eurosat", {}).get("library") == lib else (
                    "; the library changed since it was executed (--force re-runs it)"
                )
                log(f"[skip] {name}: unchanged (cells, parameters, profile values){note}")
                report.append({"notebook": name, "status": "skipped"})
                continue
            log(f"[run ] {name} (profile={profile}): {reason}")
        else:
            log(f"[run ] {name} (profile={profile})")
        t0 = time.perf_counter()
        with atomic_path(out, suffix=".ipynb") as tmp:
            papermill.execute_notebook(
                str(template), str(tmp), parameters=params, cwd=str(Path.cwd()), progress_bar=False, kernel_name="python3",
                extra_arguments=list(KERNEL_ARGUMENTS),
            )  # fmt: skip
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
