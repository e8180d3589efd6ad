"""Import rules of the library, read from the source (ast): imports flow one way, down the
pipeline data -> models -> training/evaluation -> runs -> experiments -> report/plots/CLI,
chapter modules never import each other, and no module imports another module's private name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

PKG = REPO / "eurosat_lib"

#: Each module's floor; a module may import its own floor or below, never above. Every module
#: has an entry (a new one fails test_every_library_module_has_a_floor until it gets one), except
#: inside the packages of WHOLE_PACKAGES, whose modules share the package's floor.
FLOORS: dict[str, int] = {
    "eurosat_lib": 0,  # the package face (``__version__``)
    "eurosat_lib._io": 0,
    "eurosat_lib._quiet": 0,
    "eurosat_lib.config": 0,
    "eurosat_lib.data": 1,
    "eurosat_lib.models": 2,
    "eurosat_lib.training": 3,
    "eurosat_lib.evaluation": 3,
    "eurosat_lib.stats": 3,
    "eurosat_lib.gradcam": 4,
    "eurosat_lib.runs": 4,
    "eurosat_lib.sanity": 4,
    "eurosat_lib.experiments.params": 5,
    # the chapters' typed summaries (numbers, tables, their section of the results page): above
    # stats/sanity/runs, below the chapter code that writes them and the report that assembles them
    "eurosat_lib.summaries": 5.5,
    "eurosat_lib.experiments.notebooks": 6,
    "eurosat_lib.experiments.core": 6,
    "eurosat_lib.experiments.recipes": 7,
    # studies that span chapters (chapters may import them; they import no chapter)
    "eurosat_lib.experiments.recipe_study": 7.5,
    # the chapters (CHAPTERS below) sit at 8, the package face that lists them at 9
    "eurosat_lib.experiments": 9,
    "eurosat_lib.plots": 10,
    "eurosat_lib.report": 10,
    "eurosat_lib.__main__": 11,
}
WHOLE_PACKAGES = ("eurosat_lib.data", "eurosat_lib.models", "eurosat_lib.summaries")

CHAPTERS = ("data_overview", "transfer", "negative_transfer", "finetune", "overfitting", "backbones", "truncation")
for _c in CHAPTERS:
    FLOORS[f"eurosat_lib.experiments.{_c}"] = 8
#: Study modules: one study that chapters run or read (e.g. chapter 3 runs the crossover, chapter 4
#: draws from its records). They sit between the recipes and the chapters, so a chapter may import
#: a study and a study can never import a chapter (the floor rule above fails it).
STUDIES = ("crossover", "similarity")
for _s in STUDIES:
    FLOORS[f"eurosat_lib.experiments.{_s}"] = 7.5


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _floor(module: str) -> int | None:
    for package in WHOLE_PACKAGES:
        if module == package or module.startswith(package + "."):
            return FLOORS[package]
    return FLOORS.get(module)


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, absolute module, imported names)`` of every import in ``path``, nested ones too."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name, []) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [a.name for a in node.names]
            # "from . import models" imports the module eurosat_lib.models
            subs = [f"{module}.{n}" for n in names if (PKG.parent / f"{module}.{n}".replace(".", "/")).exists()
                    or (PKG.parent / (f"{module}.{n}".replace(".", "/") + ".py")).exists()]
            if subs:
                out.extend((node.lineno, s, []) for s in subs)
                rest = [n for n in names if f"{module}.{n}" not in subs]
                if rest:
                    out.append((node.lineno, module, rest))
            else:
                out.append((node.lineno, module, names))
    return [(line, m, names) for line, m, names in out if m == "eurosat_lib" or m.startswith("eurosat_lib.")]


SOURCES = sorted(PKG.rglob("*.py"))


def test_every_library_module_has_a_floor():
    missing = [_module_name(p) for p in SOURCES if _floor(_module_name(p)) is None]
    assert not missing, f"give these modules a floor in tests/test_imports.py FLOORS: {missing}"


def test_imports_flow_down_the_pipeline():
    upward = []
    for path in SOURCES:
        me = _module_name(path)
        mine = _floor(me)
        for line, module, _ in _imports(path):
            theirs = _floor(module)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{path.relative_to(REPO)}:{line} ({me}, floor {mine}) imports {module} (floor {theirs})")
    assert not upward, "imports that run up the pipeline:\n" + "\n".join(upward)


def test_chapters_do_not_import_each_other():
    crossing = []
    for chapter in CHAPTERS:
        path = PKG / "experiments" / f"{chapter}.py"
        for line, module, _ in _imports(path):
            other = module.removeprefix("eurosat_lib.experiments.").split(".")[0]
            if module.startswith("eurosat_lib.experiments.") and other in CHAPTERS and other != chapter:
                crossing.append(f"{path.relative_to(REPO)}:{line} imports chapter {other}")
    assert not crossing, "chapters share code through experiments/recipes.py, never directly:\n" + "\n".join(crossing)


def _models_aliases(tree: ast.AST) -> set[str]:
    """Local names bound to ``eurosat_lib.models`` (``from eurosat_lib import models as M`` ...)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("eurosat_lib", None) or (
            isinstance(node, ast.ImportFrom) and node.level and node.module is None
        ):
            names |= {a.asname or a.name for a in node.names if a.name == "models"}
        elif isinstance(node, ast.Import):
            names |= {a.asname or "eurosat_lib" for a in node.names if a.name == "eurosat_lib.models"}
    return names


def test_no_private_name_of_models_is_used_outside_it():
    """What other modules, tests, benchmarks or scripts need from ``models`` is public."""
    files = [p for p in SOURCES if "models" not in p.relative_to(PKG).parts[:1]]
    files += sorted((REPO / "tests").glob("*.py")) + sorted((REPO / "benchmarks").glob("*.py"))
    files += sorted((REPO / "scripts").glob("*.py"))
    crossing = []
    for path in files:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("models") and (
                node.module.startswith("eurosat_lib") or node.level
            ):
                crossing += [f"{path.relative_to(REPO)}:{node.lineno} imports {a.name}" for a in node.names
                             if a.name.startswith("_")]
        aliases = _models_aliases(tree)
        for node in ast.walk(tree):
            value = node.value if isinstance(node, ast.Attribute) else None
            if isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name) and value.value.id == "eurosat_lib":
                value = ast.Name(id="eurosat_lib.models") if value.attr == "models" else None
                aliases = aliases | {"eurosat_lib.models"}
            if (isinstance(value, ast.Name) and value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                crossing.append(f"{path.relative_to(REPO)}:{node.lineno} uses models.{node.attr}")
    assert not crossing, "private names of models used outside it (make them public):\n" + "\n".join(crossing)


@pytest.mark.parametrize("chapter", CHAPTERS + STUDIES)
def test_chapter_modules_are_where_the_rule_expects(chapter):
    # the rule above would pass vacuously if a chapter or study were renamed or moved
    assert (PKG / "experiments" / f"{chapter}.py").is_file()


def test_every_subpackage_is_installed():
    """pyproject lists packages by name: a subpackage missing there is absent from the wheel."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in PKG.rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"


def _private_crossings(path: Path) -> list[str]:
    """``from eurosat_lib.x import _name`` and ``alias._name`` on an imported eurosat_lib module in ``path``."""
    tree = ast.parse(path.read_text())
    own = {"eurosat_lib"}  # names bound to eurosat_lib modules in this file
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("eurosat_lib")):
            if not node.level and any(p.startswith("_") and not p.startswith("__") for p in node.module.split(".")):
                out.append(f"{path.relative_to(REPO)}:{node.lineno} imports from {node.module}")
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    out.append(f"{path.relative_to(REPO)}:{node.lineno} imports {a.name}")
                else:
                    own.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            own |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("eurosat_lib")}
            out += [f"{path.relative_to(REPO)}:{node.lineno} imports {a.name}" for a in node.names
                    if a.name.startswith("eurosat_lib") and any(part.startswith("_") and not part.startswith("__")
                                                                for part in a.name.split("."))]  # fmt: skip
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in own
                and node.attr.startswith("_") and not node.attr.startswith("__")):  # fmt: skip
            out.append(f"{path.relative_to(REPO)}:{node.lineno} uses {node.value.id}.{node.attr}")
    return out


def test_no_private_name_crosses_a_module_boundary():
    """Library, benchmarks and scripts use only public names of other modules (tests may probe privates).

    Private *modules* (``_io``, ``_quiet``) are package-internal helpers whose public names any module
    of the package may import; what is forbidden is reaching for an underscored name of another module.
    """
    files = SOURCES + sorted((REPO / "benchmarks").glob("*.py")) + sorted((REPO / "scripts").glob("*.py"))
    crossing = [c for p in files for c in _private_crossings(p)]
    assert not crossing, "private names used across modules (make them public):\n" + "\n".join(crossing)


def test_private_crossing_check_can_fail(tmp_path, monkeypatch):
    bad = PKG / "_probe_private_crossing.py"  # never written: only its text is parsed
    src = "from .data import _open_source\nfrom . import models as M\nimport eurosat_lib._io\nfrom eurosat_lib._io import progress\nx = M._CAFFE_MEAN_BGR\n"
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: src if self == bad else real(self, *a, **k))
    found = _private_crossings(bad)
    assert any("imports _open_source" in f for f in found), found
    assert any("M._CAFFE_MEAN_BGR" in f for f in found), found
    assert any("imports eurosat_lib._io" in f for f in found), found
    assert any("imports from eurosat_lib._io" in f for f in found), found
