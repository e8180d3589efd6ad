"""Every template, in ``notebooks/`` and waiting in ``notebooks/pending/``, calls only what the
library has and reads only parameters its chapter defines. Pending templates are not executed
by the suite (their studies run for hours), so without this a renamed function or parameter would
surface only when a chapter is re-executed, hours into ``make experiments``."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
from pathlib import Path

import pytest

from conftest import REPO
from eurosat_lib.experiments.params import chapter_params

TEMPLATES = sorted((REPO / "notebooks").glob("*.ipynb")) + sorted((REPO / "notebooks" / "pending").glob("*.ipynb"))


def _code(path: Path) -> list[ast.Module]:
    cells = json.loads(path.read_text())["cells"]
    return [ast.parse("".join(c["source"])) for c in cells if c["cell_type"] == "code"]


def _aliases(trees: list[ast.Module]) -> dict[str, object]:
    """Names bound by the templates' ``eurosat_lib`` imports -> the modules or objects they name."""
    out: dict[str, object] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("eurosat_lib"):
                mod = importlib.import_module(node.module)
                for a in node.names:
                    try:
                        out[a.asname or a.name] = importlib.import_module(f"{node.module}.{a.name}")
                    except ModuleNotFoundError:
                        out[a.asname or a.name] = getattr(mod, a.name)
    return out


def _chains(tree: ast.Module) -> list[list[str]]:
    """Dotted names used in the code (``summaries.transfer.compare_paragraph`` -> three parts)."""
    chains = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not isinstance(getattr(node, "_parent", None), ast.Attribute):
            parts, cur = [], node
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name):
                chains.append([cur.id, *reversed(parts)])
        for child in ast.iter_child_nodes(node):
            child._parent = node  # type: ignore[attr-defined]
    return chains


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(REPO / "notebooks")))
def test_template_calls_only_what_the_library_has(path):
    trees = _code(path)
    aliases = _aliases(trees)
    missing = set()
    for tree in trees:
        for root, *attrs in _chains(tree):
            if root not in aliases:
                continue
            obj = aliases[root]
            for i, a in enumerate(attrs):
                if not hasattr(obj, a):
                    missing.add(".".join([root, *attrs[: i + 1]]))
                    break
                obj = getattr(obj, a)
                if callable(obj) and not isinstance(obj, type) and not hasattr(obj, "__path__") and not str(type(obj)).endswith("'module'>"):
                    break  # past a function: what follows is its result's attribute
    assert not missing, f"{path.name} uses names the library does not have: {sorted(missing)}"


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(REPO / "notebooks")))
def test_template_reads_only_its_chapters_parameters(path):
    fields = {f.name for f in dataclasses.fields(chapter_params(path.stem))}
    used = {attrs[0] for tree in _code(path) for root, *attrs in _chains(tree) if root == "P" and attrs}
    assert used, path.name
    assert not used - fields, f"{path.name} reads parameters its chapter does not define: {sorted(used - fields)}"


def test_the_checks_can_fail(tmp_path):
    bad = tmp_path / "01_transfer_learning.ipynb"
    src = ["from eurosat_lib import summaries\n", "summaries.transfer.no_such_paragraph(P.no_such_parameter)\n"]
    bad.write_text(json.dumps({"cells": [{"cell_type": "code", "source": src}]}))
    with pytest.raises(AssertionError, match="no_such_paragraph"):
        test_template_calls_only_what_the_library_has(bad)
    with pytest.raises(AssertionError, match="no_such_parameter"):
        test_template_reads_only_its_chapters_parameters(bad)


def test_parameter_help_is_readable_by_papermill():
    """papermill reads a parameters cell's comments as help; an '=' inside one makes it skip the line
    ("Unable to parse line ..."), so `papermill --help-notebook` would not list that parameter."""
    from eurosat_lib.experiments.params import NOTEBOOKS

    bad = [(nb, f.name) for nb in NOTEBOOKS for f in dataclasses.fields(chapter_params(nb)) if "=" in f.metadata["help"]]
    assert not bad, bad
