"""Each chapter ends with 2-3 "Try it yourself" exercises whose papermill commands would run."""

from __future__ import annotations

import ast
import re
import shlex

import nbformat
import pytest

from conftest import REPO

TEMPLATES = sorted((REPO / "notebooks").glob("*.ipynb"))


def _declared(nb) -> set[str]:
    """The names the template's ``parameters`` cell assigns (what papermill can override)."""
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    return {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets
            if isinstance(t, ast.Name)}  # fmt: skip


def _commands(text: str) -> list[list[str]]:
    return [shlex.split(line) for line in text.splitlines() if line.strip().startswith("papermill ")]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_exercises_use_parameters_the_chapter_declares(template):
    from papermill.cli import _resolve_type  # papermill's own reading of a `-p name value`

    from eurosat_lib.experiments import resolve_params

    nb = nbformat.read(template, as_version=4)
    declared = _declared(nb)
    cells = [c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## Try it yourself")]
    assert len(cells) == 1 and nb.cells[-1].source == cells[0], f"{template.name}: no closing 'Try it yourself' cell"
    commands = _commands(cells[0])
    assert 2 <= len(commands) <= 3, f"{template.name}: {len(commands)} exercises, want 2-3"
    for cmd in commands:
        assert cmd[:3] == ["papermill", f"notebooks/{template.name}", "out.ipynb"], cmd
        args = cmd[3:]
        assert len(args) % 3 == 0 and all(a == "-p" for a in args[::3]), f"{template.name}: not `-p name value`: {cmd}"
        given = {name: _resolve_type(value) for name, value in zip(args[1::3], args[2::3])}
        unknown = set(given) - declared
        assert not unknown, f"{template.name}: {sorted(unknown)} are not in its parameters cell ({sorted(declared)})"
        resolve_params(template.stem, **given)  # raises ParameterError on a bad value
    # Each exercise says what to look for (a paragraph after its command).
    blocks = re.split(r"```bash\n.*?\n```", cells[0], flags=re.DOTALL)[1:]
    assert all(len(b.strip()) > 40 for b in blocks), f"{template.name}: an exercise says nothing about what to look for"
