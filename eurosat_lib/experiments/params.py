"""Chapter parameters: one typed dataclass per chapter, validated, with per-profile defaults.

Each chapter module declares its parameters once, as a frozen dataclass derived from
:class:`ChapterParams` whose fields are made with :func:`param` (validator, help text and the
default of every profile in one line)::

    @dataclass(frozen=True)
    class FinetuneParams(ChapterParams, notebook="03_finetune"):
        unfreeze_fraction: float = param(fraction, "share of blocks unfrozen", smoke=0.1, cpu=0.5, gpu=0.5)

:data:`CHAPTERS` lists the chapters and their classes (explicitly: nothing registers itself on
import). A notebook's ``parameters`` cell is generated from the dataclass
(:func:`parameters_cell`; a test keeps the templates equal to it), and its first code cell calls
:func:`params_from`, which refuses any name the chapter does not declare (naming the closest
one), validates every value and fills ``None`` ("the profile decides") from the profile. Bad
values fail at once with a message naming the parameter, what is allowed and how to pass it
with papermill.

Validators are small functions ``value -> None | "must be ..."``, composed from the public set
below (:func:`list_of`, :func:`interval`, :func:`choice`, :func:`optional`, ...).

Why dataclasses and not pydantic: papermill hands the kernel Python literals, so no parsing or
coercion is needed beyond list literals given as text (``-p seeds "[0, 1]"``); "None = the
profile decides" and per-profile defaults do not map onto pydantic's field defaults; and the
validators are a dozen one-line functions whose messages (what is allowed, how to pass it with
papermill) the notebooks' readers see. A dependency would not make this shorter.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import importlib
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from .. import config
from .. import models as M

PROFILES = ("smoke", "cpu", "gpu")
#: The profile of a notebook run without ``-p profile``.
DEFAULT_PROFILE = "cpu"

#: The chapters, in book order: notebook name -> (chapter module, its parameters dataclass).
#: The one list of chapters; :func:`chapter_params` imports a chapter's module when asked.
CHAPTERS: dict[str, tuple[str, str]] = {
    "00_data": ("data_overview", "DataParams"),
    "01_transfer_learning": ("transfer", "TransferParams"),
    "02_negative_transfer": ("negative_transfer", "NegativeTransferParams"),
    "03_finetune": ("finetune", "FinetuneParams"),
    "04_overfitting": ("overfitting", "OverfittingParams"),
    "05_backbones": ("backbones", "BackbonesParams"),
    "06_truncation": ("truncation", "TruncationParams"),
}
NOTEBOOKS = tuple(CHAPTERS)


class ParameterError(ValueError):
    """A notebook parameter is unknown, or has a wrong type or value."""


# --------------------------------------------------------------------------------------------
# Validators: value -> None (fine) or a message "must be ..."
# --------------------------------------------------------------------------------------------

Check = Callable[[Any], "str | None"]


def is_int(v: Any) -> bool:
    """An integer (Python or NumPy), not a bool.

    Args:
        v: The value.

    Returns:
        Whether it is one.
    """
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    """A real number (Python or NumPy), not a bool.

    Args:
        v: The value.

    Returns:
        Whether it is one.
    """
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool)


def satisfies(predicate: Callable[[Any], bool], message: str) -> Check:
    """A check from a predicate and the message shown when it is false.

    Args:
        predicate: True for an accepted value.
        message: The message for a refused one (``"must be ..."``).

    Returns:
        The check: ``value -> None`` when accepted, else the message (``"must be ..."``).
    """

    def check(v: Any) -> str | None:
        try:
            return None if predicate(v) else message
        except (TypeError, ValueError):
            return message

    return check


def choice(*options: Any) -> Check:
    """One of ``options``.

    Args:
        *options: The accepted values.

    Returns:
        The check: ``value -> None`` when accepted, else the message (``"must be ..."``).
    """
    return satisfies(lambda v: any(v == o and type(v) is type(o) for o in options), f"must be one of {list(options)}")


def optional(check: Check) -> Check:
    """``None`` or what ``check`` accepts.

    Args:
        check: The check for values that are not None.

    Returns:
        The check: ``value -> None`` when accepted, else the message (``"must be ..."``).
    """

    def opt(v: Any) -> str | None:
        err = None if v is None else check(v)
        return f"{err} or None" if err else None

    return opt


def at_least(low: int) -> Check:
    """An integer >= ``low``.

    Args:
        low: The smallest accepted integer.

    Returns:
        The check: ``value -> None`` when accepted, else the message (``"must be ..."``).
    """
    return satisfies(lambda v: is_int(v) and v >= low, f"must be an integer >= {low}")


def interval(low: float, high: float, *, closed: str = "both", what: str = "a number") -> Check:
    """A number between ``low`` and ``high``; ``closed`` is "both", "left", "right" or "neither".

    Args:
        low: The lower bound.
        high: The upper bound.
        closed: Which bounds are accepted themselves.
        what: How the message names the value.

    Returns:
        The check: ``value -> None`` when accepted, else the message (``"must be ..."``).
    """
    left, right = closed in ("both", "left"), closed in ("both", "right")
    text = f"must be {what} in {'[' if left else '('}{low:g}, {high:g}{']' if right else ')'}"

    def inside(v: Any) -> bool:
        return is_num(v) and (low <= v if left else low < v) and (v <= high if right else v < high)

    return satisfies(inside, text)


def list_of(item: Check, what: str, *, empty_ok: bool = False, distinct: bool = False) -> Check:
    """A list (or tuple) whose every element passes ``item``; ``what`` names the elements.

    Args:
        item: The check of every element.
        what: How the message names the elements.
        empty_ok: Whether an empty list is accepted.
        distinct: Whether repeated elements are refused.

    Returns:
        The check: ``value -> None`` when accepted, else the message (``"must be ..."``).
    """
    text = f"must be a {'(possibly empty)' if empty_ok else 'non-empty'} list of {what}"

    def ok(v: Any) -> bool:
        return (
            isinstance(v, (list, tuple))
            and (empty_ok or len(v) > 0)
            and all(item(x) is None for x in v)
            and (not distinct or len({repr(x) for x in v}) == len(v))
        )

    return satisfies(ok, text)


def any_of(*checks: Check, message: str) -> Check:
    """Accepted by at least one of ``checks``.

    Args:
        *checks: The alternatives.
        message: The message when none accepts.

    Returns:
        The check: ``value -> None`` when accepted, else the message (``"must be ..."``).
    """
    return satisfies(lambda v: any(c(v) is None for c in checks), message)


def all_of(*checks: Check) -> Check:
    """Accepted by every one of ``checks`` (the first refusal's message is shown).

    Args:
        *checks: The checks.

    Returns:
        The check: ``value -> None`` when accepted, else the message (``"must be ..."``).
    """

    def check(v: Any) -> str | None:
        return next((err for err in (c(v) for c in checks) if err), None)

    return check


pos_int = satisfies(lambda v: is_int(v) and v > 0, "must be a positive integer")
nonneg_int = satisfies(lambda v: is_int(v) and v >= 0, "must be a non-negative integer")
pos_num = satisfies(lambda v: is_num(v) and np.isfinite(v) and v > 0, "must be a positive number")
fraction = interval(0, 1, closed="right")
int_list = list_of(pos_int, "positive integers")
string = satisfies(lambda v: isinstance(v, str), "must be a string")
boolean = satisfies(lambda v: isinstance(v, bool), "must be True or False")
seeds_spec = any_of(
    pos_int, list_of(satisfies(is_int, ""), "int seeds"),
    message="must be a number of seeds (positive int) or a non-empty list of int seeds",
)  # fmt: skip


def backbone_name(v: Any) -> str | None:
    """A name from the backbone registry (the message suggests the closest one).

    Args:
        v: The value.

    Returns:
        None when accepted, else the message.
    """
    if not isinstance(v, str):
        return "must be a backbone name"
    try:
        M.get_backbone_spec(v)
    except ValueError as e:
        return str(e)
    return None


def weights_spec(v: Any) -> str | None:
    """``"imagenet"``, ``"none"`` (random init) or an existing weights file.

    Args:
        v: The value.

    Returns:
        None when accepted, else the message.
    """
    if v is None or (isinstance(v, str) and v.lower() in ("imagenet", "none")):
        return None
    if isinstance(v, str) and Path(v).expanduser().is_file():
        return None
    return "must be 'imagenet', 'none' (train from scratch) or the path of an existing weights file"


def data_source_spec(v: Any) -> str | None:
    """``"auto"``, ``"real"``, ``"synthetic"`` or an existing archive/folder.

    Args:
        v: The value.

    Returns:
        None when accepted, else the message.
    """
    if v in ("auto", "real", "synthetic"):
        return None
    if isinstance(v, str) and Path(v).expanduser().exists():
        return None
    return "must be 'auto', 'real', 'synthetic' or the path of an EuroSAT archive/folder"


def seeds_list(v: Any) -> list[int]:
    """``seeds`` as a list: a number n means seeds 0..n-1.

    Args:
        v: A number of seeds or a list of seeds.

    Returns:
        The seeds.
    """
    return list(range(int(v))) if is_int(v) else [int(s) for s in v]


def no_weights_as_none(v: Any) -> Any:
    """``weights="none"`` means random initialisation: ``None`` for Keras.

    Args:
        v: The validated ``weights`` value.

    Returns:
        None for ``"none"``, else ``v``.
    """
    return None if isinstance(v, str) and v.lower() == "none" else v


# --------------------------------------------------------------------------------------------
# Declaring a chapter's parameters
# --------------------------------------------------------------------------------------------

_UNSET: Any = object()


def param(
    check: Check,
    help: str,
    *,
    default: Any = _UNSET,
    smoke: Any = _UNSET,
    cpu: Any = _UNSET,
    gpu: Any = _UNSET,
    convert: Callable[[Any], Any] | None = None,
    example: Any = None,
) -> Any:
    """A parameter field: its validator, help text and the default of every profile.

    Args:
        check: validator, ``value -> None`` or ``"must be ..."`` (applied to non-None values).
        help: one line for the notebook's parameters cell and for error messages.
        default: the value of every profile not given explicitly.
        smoke: the smoke profile's value (``None`` is a value: "all" / "not set").
        cpu: the cpu profile's value.
        gpu: the gpu profile's value.
        convert: applied to the validated value (e.g. a number of seeds -> a list of seeds).
        example: a value shown in the papermill hint of list parameters.

    Returns:
        A :func:`dataclasses.field` without a dataclass default: instances are always complete,
        made by :meth:`ChapterParams.resolve`.

    Raises:
        TypeError: a profile has no value.
    """
    values = {p: (v if v is not _UNSET else default) for p, v in zip(PROFILES, (smoke, cpu, gpu))}
    missing = [p for p, v in values.items() if v is _UNSET]
    if missing:
        raise TypeError(f"param({help!r}): no value for profile(s) {missing}; give default= or one per profile")
    meta = {"check": check, "help": help, "profiles": values, "convert": convert, "example": example}
    return dataclasses.field(metadata=meta)


def seeds_param(help: str = "number of seeds or list of seeds", **profiles: Any) -> Any:
    """The ``seeds`` field: a number n (seeds 0..n-1) or a list of seeds; resolved to a list.

    Args:
        help: The parameter's help line.
        **profiles: Per-profile values (``smoke=``, ``cpu=``, ``gpu=``, ``default=``).

    Returns:
        The field.
    """
    return param(seeds_spec, help, convert=seeds_list, example=[0, 1], **profiles)


def weights_param(help: str = "imagenet | none | path to a weights file") -> Any:
    """The ``weights`` field: ImageNet by default; ``"none"`` resolves to ``None`` (random init).

    Args:
        help: The parameter's help line.

    Returns:
        The field.
    """
    return param(weights_spec, help, default="imagenet", convert=no_weights_as_none)


@dataclass(frozen=True)
class ChapterParams:
    """Base of the chapters' parameter dataclasses: the parameters every chapter has.

    Instances are complete and valid (``__post_init__`` checks every value); make them with
    :meth:`resolve` (or :func:`resolve_params` / :func:`params_from`), which fills the profile's
    defaults.
    """

    #: The chapter's notebook, set by the class statement: ``class X(ChapterParams, notebook="03_finetune")``.
    NOTEBOOK: ClassVar[str] = ""

    profile: str = param(choice(*PROFILES), "smoke | cpu | gpu", default=DEFAULT_PROFILE)
    data_source: str = param(data_source_spec, "auto | real | synthetic | path to the archive",
                             smoke="auto", cpu="real", gpu="real")  # fmt: skip
    out_dir: str | None = param(optional(string), "output folder (default runs/<profile>/<notebook>)", default=None)

    def __init_subclass__(cls, notebook: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.NOTEBOOK = notebook or cls.NOTEBOOK

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                self._check(f.name, value)
        backbone, size = getattr(self, "backbone", None), getattr(self, "image_size", None)
        if backbone and size:
            spec = M.get_backbone_spec(backbone)
            if size < spec.min_size:
                raise ParameterError(
                    f"parameter 'image_size' is {size} but {backbone} needs at least {spec.min_size} px; "
                    f"pass -p image_size {max(spec.min_size, 64)} or larger"
                )

    @property
    def notebook(self) -> str:
        """The chapter's notebook name, e.g. ``"03_finetune"``."""
        return self.NOTEBOOK

    @classmethod
    def names(cls) -> list[str]:
        """The parameter names, in declaration order.

        Returns:
            The names.
        """
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def defaults(cls, profile: str = DEFAULT_PROFILE) -> dict[str, Any]:
        """Every parameter's value in ``profile`` (before validation and conversion).

        Args:
            profile: ``smoke``, ``cpu`` or ``gpu``.

        Returns:
            Name -> value.
        """
        values = {f.name: copy.deepcopy(f.metadata["profiles"][profile]) for f in dataclasses.fields(cls)}
        values["profile"] = profile
        return values

    @classmethod
    def resolve(cls, **given: Any) -> "ChapterParams":
        """Validate ``given`` values and fill ``None`` (or absent) ones from the profile.

        Args:
            **given: parameter values; ``profile`` picks the defaults (``cpu`` when absent).

        Returns:
            A complete instance; ``seeds`` is a list, ``weights="none"`` is ``None`` and
            ``out_dir`` defaults to ``runs/<profile>/<notebook>``.

        Raises:
            ParameterError: an unknown name (with the closest known one) or a bad value (naming
                the parameter, what is allowed and how to pass it with papermill).
        """
        unknown = sorted(set(given) - set(cls.names()))
        if unknown:
            raise cls.unknown_error(unknown)
        profile = given.get("profile") or DEFAULT_PROFILE
        cls._check("profile", profile)
        values = cls.defaults(profile)
        values.update({k: v for k, v in given.items() if v is not None})
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            v = values[f.name]
            if v is None:
                continue
            if isinstance(v, str) and _takes_list(hints[f.name]) and v.lstrip()[:1] in ("[", "("):
                v = cls._list_from_text(f.name, v)
            cls._check(f.name, v)
            values[f.name] = f.metadata["convert"](v) if f.metadata["convert"] else v
        if values["out_dir"] is None:
            values["out_dir"] = str(config.runs_dir() / profile / cls.NOTEBOOK)
        return cls(**values)

    @classmethod
    def unknown_error(cls, unknown: list[str]) -> ParameterError:
        """The error for names the chapter does not declare, each with its closest known name.

        Args:
            unknown: The names not declared.

        Returns:
            The error (to raise).
        """
        names = cls.names()
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, names, n=1)
            hints.append(f"{name!r}: did you mean {close[0]!r}?" if close else f"{name!r}: no parameter is close")
        return ParameterError(
            f"unknown parameter(s) {unknown} for {cls.NOTEBOOK} ({'; '.join(hints)}). "
            f"Its parameters are: {', '.join(names)}."
        )

    @classmethod
    def _field(cls, name: str) -> dataclasses.Field:
        return next(f for f in dataclasses.fields(cls) if f.name == name)

    @classmethod
    def _check(cls, name: str, value: Any) -> None:
        f = cls._field(name)
        err = f.metadata["check"](value)
        if err:
            raise ParameterError(
                f"parameter {name!r} {err}, got {value!r} ({f.metadata['help']}). "
                f"With papermill: {cls._papermill_hint(name)}; see the notebook's parameters cell."
            )

    @classmethod
    def _papermill_hint(cls, name: str) -> str:
        if not _takes_list(typing.get_type_hints(cls)[name]):
            return f"-p {name} <value>"
        f = cls._field(name)
        example = f.metadata["example"]
        if example is None:
            cpu = f.metadata["profiles"][DEFAULT_PROFILE]
            example = cpu[:2] if isinstance(cpu, list) and cpu else [1, 2]
        text = repr(list(example))  # single-quoted strings: the hint is pasted inside shell double quotes
        return f'-p {name} "{text}" (a list), or -y "{name}: {text}"'

    @classmethod
    def _list_from_text(cls, name: str, text: str) -> Any:
        # papermill's -p passes "[0, 1]" as a string; a list-typed parameter reads it as a literal.
        try:
            return ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            raise ParameterError(
                f"parameter {name!r} got the text {text!r}, which is not a Python list. "
                f"With papermill: {cls._papermill_hint(name)}."
            ) from None


def _takes_list(tp: Any) -> bool:
    """Whether a field's type admits a list (``list[int]``, ``int | list[int]``, ...)."""
    if tp in (list, tuple) or typing.get_origin(tp) in (list, tuple):
        return True
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_takes_list(a) for a in typing.get_args(tp))
    return False


# --------------------------------------------------------------------------------------------
# The chapters
# --------------------------------------------------------------------------------------------


def chapter_params(notebook: str) -> type[ChapterParams]:
    """The parameters dataclass of a chapter (``"03_finetune"`` -> ``FinetuneParams``).

    Args:
        notebook: The chapter's notebook name.

    Returns:
        The dataclass.

    Raises:
        ParameterError: ``notebook`` is not a chapter.
    """
    if notebook not in CHAPTERS:
        raise ParameterError(f"unknown notebook {notebook!r}; expected one of {list(NOTEBOOKS)}")
    module, name = CHAPTERS[notebook]
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


def resolve_params(notebook: str, **given: Any) -> ChapterParams:
    """A chapter's validated parameters: ``given`` values, the rest from the profile.

    Args:
        notebook: chapter name, e.g. ``"03_finetune"``.
        **given: parameter values (``None`` = the profile decides).

    Returns:
        The chapter's parameters dataclass (attribute access: ``P.image_size``).

    Raises:
        ParameterError: naming the parameter, the bad value, what is allowed and how to pass
            it with papermill; for an unknown name, the closest known one.
    """
    return chapter_params(notebook).resolve(**given)


def params_from(namespace: Mapping[str, Any], notebook: str) -> ChapterParams:
    """:func:`resolve_params` for the variables a notebook's ``parameters`` cell defined.

    Used as the first library call, ``P = X.params_from(globals(), "03_finetune")``. The names
    given to the notebook are those assigned by the cells run just before this one that only
    assign literals: the ``parameters`` cell and papermill's ``injected-parameters`` cell (read
    from IPython's input history). Any of them the chapter does not declare is an error naming
    the closest declared name, so a misspelled ``-p backbonee VGG16`` stops here instead of
    being ignored. Outside IPython, every plain-data variable in ``namespace`` not starting with
    ``_`` counts as given.

    Args:
        namespace: The notebook's variables (``globals()``).
        notebook: The chapter's notebook name.

    Returns:
        The chapter's resolved parameters.

    Raises:
        ParameterError: an unknown name or a bad value (see :func:`resolve_params`).
    """
    cls = chapter_params(notebook)
    unknown = sorted(given_names(namespace) - set(cls.names()))
    if unknown:
        raise cls.unknown_error(unknown)
    resolved = cls.resolve(**{k: namespace[k] for k in cls.names() if k in namespace})
    _book_table_display()
    return resolved


def _book_table_display() -> None:
    """Show every table cell of a chapter whole (pandas cuts a cell at 50 characters by default).

    The chapters' tables carry comparison sentences whose verdict word and ⚠ flag come last; cut
    at pandas' default width a reader saw "…3 seeds): b..." instead of "**better**". Set here, the
    one library call every chapter makes first, so no notebook cell has to remember it.
    """
    import pandas as pd

    pd.set_option("display.max_colwidth", None)


#: Names IPython puts in every user namespace.
_IPYTHON_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython", "open"})


def given_names(namespace: Mapping[str, Any]) -> set[str]:
    """The variable names a notebook was given (see :func:`params_from`).

    Args:
        namespace: The notebook's variables.

    Returns:
        The names.
    """
    history = namespace.get("_ih", namespace.get("In"))
    if isinstance(history, list) and history and all(isinstance(s, str) for s in history):
        # history[-1] is the running cell; walk back over the parameter-only cells before it
        # (papermill runs: parameters cell, injected-parameters cell, then this cell).
        names: set[str] = set()
        for source in reversed(history[:-1]):
            assigned = _literal_assignments(source)
            if assigned is None:
                break
            names |= assigned
        return names
    return {k for k, v in namespace.items() if not k.startswith("_") and k not in _IPYTHON_NAMES and _plain_data(v)}


def _literal_assignments(source: str) -> set[str] | None:
    """Names a cell assigns if it only assigns literals to names, else None."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets) and _is_literal(node.value):
            names |= {t.id for t in node.targets}  # type: ignore[attr-defined]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None and _is_literal(node.value):
            names.add(node.target.id)
        else:
            return None
    return names


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        # papermill writes non-finite floats as float('nan') / float('inf')
        return (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "float"
            and len(node.args) == 1 and isinstance(node.args[0], ast.Constant) and not node.keywords
        )  # fmt: skip


def _plain_data(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str, np.number)):
        return True
    if isinstance(v, (list, tuple)):
        return all(_plain_data(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain_data(x) for k, x in v.items())
    return False


# --------------------------------------------------------------------------------------------
# The notebooks' parameters cells, generated from the dataclasses
# --------------------------------------------------------------------------------------------

PARAMETERS_CELL_HEADER = (
    '# Parameters (papermill: -p name value; a list: -p seeds "[0, 1]"). None = the profile decides.'
)
#: Shared parameters shown last in a parameters cell (``profile`` comes first).
_LAST = ("data_source", "out_dir")


def cell_value(f: dataclasses.Field) -> Any:
    """What a parameters cell assigns: the default profile's name for ``profile``, a value the
    three profiles share, else ``None`` (the profile decides).

    Args:
        f: A parameter field.

    Returns:
        The value.
    """
    if f.name == "profile":
        return DEFAULT_PROFILE
    values = list(f.metadata["profiles"].values())
    return values[0] if all(_literal(v) == _literal(values[0]) for v in values) else None


def parameters_cell(notebook: str) -> str:
    """The source of a chapter's ``parameters`` cell, generated from its dataclass.

    Args:
        notebook: The chapter's notebook name.

    Returns:
        The cell's source.
    """
    fields = dataclasses.fields(chapter_params(notebook))
    ordered = [f for f in fields if f.name == "profile"]
    ordered += [f for f in fields if f.name != "profile" and f.name not in _LAST]
    ordered += [f for f in fields if f.name in _LAST]
    lines = [PARAMETERS_CELL_HEADER]
    for f in ordered:
        code = f"{f.name} = {_literal(cell_value(f))}"
        lines.append(f"{code:<25}  # {f.metadata['help']}")
    return "\n".join(lines)


def sync_parameters_cells(templates_dir: str | Path = "notebooks", missing_ok: bool = False) -> list[str]:
    """Rewrite each template's ``parameters`` cell from its dataclass; returns the ones changed.

    Args:
        templates_dir: Where the templates are.
        missing_ok: Skip chapters without a template there (``notebooks/pending`` holds a few).

    Returns:
        The notebook names whose cell changed.
    """
    import nbformat

    from .._io import atomic_path

    changed = []
    for notebook in NOTEBOOKS:
        path = Path(templates_dir) / f"{notebook}.ipynb"
        if missing_ok and not path.is_file():
            continue
        nb = nbformat.read(path, as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        source = parameters_cell(notebook)
        if cell.source != source:
            cell.source = source
            with atomic_path(path, suffix=".ipynb") as tmp:
                nbformat.write(nb, tmp)
            changed.append(notebook)
    return changed


def _literal(v: Any) -> str:
    """Python source for a parameter value, strings in double quotes like the templates."""
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    return repr(v)


# --------------------------------------------------------------------------------------------
# Helpers for the chapters' first cells
# --------------------------------------------------------------------------------------------


def backbone_kwargs(backbone: str, alpha: float | None) -> dict[str, Any]:
    """Constructor options from notebook parameters (``alpha`` only applies to MobileNets).

    Args:
        backbone: A registry backbone name.
        alpha: The width multiplier, or None.

    Returns:
        ``{"alpha": alpha}`` for a MobileNet with an alpha, else ``{}``.
    """
    return {"alpha": alpha} if alpha is not None and backbone in ("MobileNet", "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large") else {}


def require_weights(P: Any) -> str | None:
    """Resolve ``P.weights`` for ``P.backbone`` now (finding or downloading the file).

    Called in a notebook's first cell so that missing weights fail in seconds, with the message
    naming the file to fetch, instead of after the data has been loaded.

    Args:
        P: The chapter's parameters (``backbone``, ``alpha``, ``weights``).

    Returns:
        The weights file's path, or None for random weights.
    """
    if P.weights is None:
        return None
    return M.resolve_weights(P.backbone, P.weights, **backbone_kwargs(P.backbone, P.alpha))

