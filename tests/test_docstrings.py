"""Google-style docstrings on the public API, read from the source (ast, so no module is imported):
every public function, method and class defined in a module of eurosat_lib has a docstring; one
that takes parameters has an ``Args:`` section naming each of them; one that returns a value has
``Returns:`` (``Yields:`` for a generator); one that raises an exception itself has ``Raises:``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from conftest import REPO

PKG = REPO / "eurosat_lib"
SOURCES = sorted(p for p in PKG.rglob("*.py") if not any(part.startswith("_") and part != "__init__.py" for part in p.relative_to(PKG).parts))


def _returns_value(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether ``fn`` gives a value: a non-None return annotation, or a ``return x`` in its own body."""
    if fn.returns is not None:
        text = ast.unparse(fn.returns).strip("'\"")
        return text not in ("None", "NoReturn", "Never")
    for node in _own_nodes(fn):
        if isinstance(node, ast.Return) and node.value is not None and not (isinstance(node.value, ast.Constant) and node.value.value is None):
            return True
    return False


def _own_nodes(fn: ast.AST):
    """The nodes of ``fn``'s body, not descending into nested functions, lambdas or classes."""
    stack = list(ast.iter_child_nodes(fn))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))


def _is_generator(fn: ast.AST) -> bool:
    return any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in _own_nodes(fn))


def _raises(fn: ast.AST) -> bool:
    """Whether ``fn`` raises an exception itself: a bare ``raise`` re-raises and does not count, nor
    does a ``raise`` inside a ``try`` body that has handlers (taken as caught there)."""
    stack = list(ast.iter_child_nodes(fn))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Raise) and node.exc is not None:
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, ast.Try) and node.handlers:
            stack.extend([*node.handlers, *node.orelse, *node.finalbody])
            continue
        stack.extend(ast.iter_child_nodes(node))
    return False


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> list[str]:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    if method and names and names[0] in ("self", "cls"):
        names = names[1:]
    if a.vararg:
        names.append("*" + a.vararg.arg)
    if a.kwarg:
        names.append("**" + a.kwarg.arg)
    return names


def _decorators(fn: ast.AST) -> set[str]:
    return {ast.unparse(d).split("(")[0].split(".")[-1] for d in getattr(fn, "decorator_list", [])}


def problems(source: str, where: str) -> list[str]:
    """What the rule finds missing in one module's source.

    Args:
        source: The module's text.
        where: Its name in messages.

    Returns:
        One line per problem.
    """
    tree = ast.parse(source)
    found = []

    def check(fn, qual: str, method: bool) -> None:
        doc = ast.get_docstring(fn) or ""
        decos = _decorators(fn)
        if "overload" in decos:
            return
        if not doc:
            found.append(f"{where}:{fn.lineno} {qual}: no docstring")
            return
        params = _params(fn, method)
        if "property" in decos or "setter" in decos or "cached_property" in decos:
            return  # a property reads as an attribute: its docstring says what it is
        if params:
            m = re.search(r"^\s*(Args|Arguments|Parameters):\s*$(.*?)(?=^\s*[A-Z][a-z]+( [a-z]+)?:\s*$|\Z)", doc, re.M | re.S)
            if not m:
                found.append(f"{where}:{fn.lineno} {qual}: no Args section for {', '.join(params)}")
            else:
                named = set(re.findall(r"^\s*(\*{0,2}\w+)(?: \([^)]*\))?:", m.group(2), re.M))
                missing = [p for p in params if p not in named and p.lstrip("*") not in named]
                if missing:
                    found.append(f"{where}:{fn.lineno} {qual}: Args lacks {', '.join(missing)}")
        if _is_generator(fn):
            if not re.search(r"^\s*Yields:\s*$", doc, re.M):
                found.append(f"{where}:{fn.lineno} {qual}: no Yields section")
        elif _returns_value(fn) and fn.name != "__init__" and not re.search(r"^\s*Returns:\s*$", doc, re.M):
            found.append(f"{where}:{fn.lineno} {qual}: no Returns section")
        if _raises(fn) and not re.search(r"^\s*Raises:\s*$", doc, re.M):
            found.append(f"{where}:{fn.lineno} {qual}: raises, but no Raises section")

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            check(node, node.name, method=False)
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            if not ast.get_docstring(node):
                found.append(f"{where}:{node.lineno} class {node.name}: no docstring")
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and not item.name.startswith("_"):
                    check(item, f"{node.name}.{item.name}", method=True)
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_public_api_has_google_style_docstrings(path: Path):
    found = problems(path.read_text(), str(path.relative_to(REPO)))
    assert not found, "Google-style docstrings (Args/Returns/Raises) missing:\n" + "\n".join(found)


def test_the_rule_fails_on_what_it_should():
    bad = '''
def no_args(x, y=1):
    """Does something."""
    return x


def no_returns(x):
    """Does something.

    Args:
        x: A value.
    """
    return x + 1


def half_args(x, y):
    """Does something.

    Args:
        x: A value.
    """


def raises(x):
    """Does something.

    Args:
        x: A value.
    """
    raise ValueError(x)


class Thing:
    def method(self, a):
        return a


def _private(x):
    return x


def fine(x: int, *rest: int, **kw: int) -> int:
    """Adds.

    Args:
        x: A value.
        *rest: More values.
        **kw: Named values.

    Returns:
        The sum.

    Raises:
        ValueError: Never, in fact.
    """
    if x < 0:
        raise ValueError(x)
    return x + sum(rest) + sum(kw.values())


def nothing() -> None:
    """Does nothing."""


def caught() -> None:
    """Handles its own error."""
    try:
        raise KeyError("x")
    except KeyError:
        pass
'''
    found = problems(bad, "m")
    assert any("no_args: no Args section for x, y" in f for f in found), found
    assert any("no_returns: no Returns section" in f for f in found), found
    assert any("half_args: Args lacks y" in f for f in found), found
    assert any("raises: raises, but no Raises section" in f for f in found), found
    assert any("class Thing: no docstring" in f for f in found), found
    assert any("Thing.method: no docstring" in f for f in found), found
    assert not any("_private" in f or "fine" in f or "nothing" in f or "caught" in f for f in found), found
