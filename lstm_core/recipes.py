"""Recipes: the YAML files that say what to train and how.

A recipe has the top-level sections ``app``, ``data``, ``model``, ``train``
and ``export``, and may say ``extends: other.yaml`` (relative to itself) to
start from another recipe; the child deep-merges over the parent (mappings
merge key by key, anything else replaces). ``--set a.b=VALUE`` overrides are
merged last.

Recipes are data, never code: they are read only with PyYAML's safe loader
(plus one extra rule so that ``1e-3`` is a float, as everyone expects), and
a recipe can only *name* registered components, which the schema enforces
with ``choices``. Even ``pkg:`` data paths are located without importing the
package they name.

Every value remembers where it came from (``file:line`` or ``--set ...``) so
that an error points at the line to fix. This module is pure Python and
PyYAML; it must stay importable without TensorFlow.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml

from lstm_core.errors import UserError, not_utf8

__all__ = [
    "REQUIRED", "Field", "Recipe", "RecipeError", "load_recipe", "validate", "resolve_data_files",
    "data_root", "read_config", "with_overrides", "diff_configs", "set_dotted", "get_dotted",
]

DATA_ENV = "LSTM_SUITE_DATA"
DEFAULT_DATA_ROOT = Path("data")


class RecipeError(UserError):
    """A recipe (or a ``--set`` override, or a data path in it) is wrong.

    When several problems are found, the message has one per line, the most
    important first."""


class _Required:
    def __repr__(self):
        return "REQUIRED"


#: ``Field.default`` of a key the recipe must give.
REQUIRED = _Required()


@dataclass(frozen=True)
class Field:
    """One leaf of a schema. A schema is a nested dict ``{key: Field | dict}``;
    a dict node is a YAML mapping whose keys are checked, while a ``Field``
    of type ``dict`` is a free-form mapping (e.g. extra layer arguments)."""

    type: type | tuple[type, ...]
    default: Any = REQUIRED
    choices: Iterable | Callable[[], Iterable] | None = None  # a callable is asked at validation time
    min: float | None = None  # for a list with ``items``: of each item (max, choices too)
    max: float | None = None
    doc: str = ""
    items: type | tuple[type, ...] | None = None  # for a list: the type of each item
    data_file: bool = False  # path under the data root (or pkg:...), must exist unless None
    optional_file: bool = False  # with data_file: a missing file becomes None instead of an error


# -- YAML ---------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` / ``5E4`` as floats.

    PyYAML follows YAML 1.1, where a float needs a dot (``1e-3`` is the
    string "1e-3"); recipes write learning rates that way all the time. Only
    an implicit resolver is added: no constructor, so it stays as safe as
    ``yaml.safe_load``."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


#: The most values a YAML document may hold once its aliases are expanded. A
#: recipe has a few hundred; a "billion laughs" (anchors of nine aliases of
#: the anchor before, nine deep) has billions, which every walk over the
#: data (the key lines, validation, messages) would expand.
MAX_YAML_VALUES = 100_000


def _parse_yaml(text: str, where: str, with_line: bool = True):
    """``(data, {key path tuple: line})`` of a YAML document."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _check_expansion(node, where, with_line)
        data = loader.construct_document(node) if node is not None else None
        lines: dict[tuple, int] = {}
        if node is not None:
            _node_lines(loader, node, (), lines)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark is not None and with_line else where
        problem = getattr(err, "problem", None) or str(err)
        raise RecipeError(f"{at}: invalid YAML: {problem}") from None
    except RecursionError:  # PyYAML composes and constructs recursively
        at = f"{where}:{loader.line + 1}" if with_line else where
        raise RecipeError(f"{at}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    return data, lines


def _check_expansion(root, where, with_line):
    """Refuse a document whose aliases expand it to more than
    :data:`MAX_YAML_VALUES` values, or put a collection inside itself,
    before anything expands it. Each node is counted once (an alias is the
    node it names), so this takes time linear in the text."""
    sizes: dict[int, int | None] = {}  # None: being counted

    def size(node):
        if id(node) in sizes:
            if sizes[id(node)] is None:
                raise _expansion_error(node, where, with_line,
                                       "an alias refers to a collection it is in")
            return sizes[id(node)]
        sizes[id(node)] = None
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode)
            else [])
        total = 1 + sum(size(child) for child in children)
        if total > MAX_YAML_VALUES:
            raise _expansion_error(node, where, with_line, f"its aliases expand to more than "
                                   f"{MAX_YAML_VALUES} values (a 'billion laughs'?)")
        sizes[id(node)] = total
        return total

    size(root)


def _expansion_error(node, where, with_line, problem):
    at = f"{where}:{node.start_mark.line + 1}" if with_line else where
    return RecipeError(f"{at}: invalid YAML: {problem}")


def _node_lines(loader, node, prefix, lines):
    # construct_document has already flattened "<<" merge keys into node.value,
    # in the order that makes the last occurrence win, like the data does.
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                path = prefix + (loader.construct_object(key_node),)
                lines[path] = key_node.start_mark.line + 1
                _node_lines(loader, value_node, path, lines)


# -- loading ------------------------------------------------------------------


class Recipe:
    """A loaded recipe: merged over its ``extends`` chain and the overrides,
    not yet validated."""

    def __init__(self, path, raw: dict, locations: dict[tuple, str] | None = None):
        self.path = Path(path)
        self.name = self.path.stem  # default run directory: runs/<name>
        self.raw = raw
        self._locations = dict(locations or {})

    def locate(self, dotted_path: str) -> str:
        """Where the value at ``dotted_path`` came from: ``file:line``,
        ``--set a.b=v``, or just the recipe file when not known (e.g. a
        missing key)."""
        return self._where(tuple(dotted_path.split(".")))

    def _where(self, key_path: tuple) -> str:
        return self._locations.get(key_path, str(self.path))

    def __repr__(self):
        return f"Recipe({str(self.path)!r})"


def load_recipe(path, overrides: Sequence[str] = ()) -> Recipe:
    """Read the recipe at ``path``, follow its ``extends`` chain and apply
    ``--set`` overrides (``"train.epochs=3"``; the value is YAML)."""
    raw, where = _load_chain(Path(path), str(path), referrer=None, chain=())
    return with_overrides(Recipe(path, raw, where), overrides)


def with_overrides(recipe: Recipe, overrides: Sequence[str]) -> Recipe:
    """``recipe`` with ``--set`` overrides merged over it, each value
    remembering the override it came from."""
    raw, where = recipe.raw, recipe._locations
    for text in overrides:
        key, eq, value_text = text.partition("=")
        key = key.strip()
        if not eq or not key or "" in key.split("."):
            raise RecipeError(f"--set {text}: expected KEY=VALUE with a dotted key, e.g. train.epochs=3")
        value, _ = _parse_yaml(value_text, f"--set {text}", with_line=False)
        over: dict = {}
        set_dotted(over, key, value)
        raw, where = _merge_located(raw, where, over, dict.fromkeys(_paths(over), f"--set {text}"))
    return Recipe(recipe.path, raw, where)


def _load_chain(path: Path, shown: str, referrer: str | None, chain: tuple):
    """``(data, locations)`` of one file merged over its parents. ``shown`` is
    the path as messages print it; ``chain`` holds (resolved, shown) pairs of
    the files that extend this one, to catch cycles."""
    resolved = path.resolve()
    if any(resolved == seen for seen, _ in chain):
        cycle = " -> ".join([s for _, s in chain] + [shown])
        raise RecipeError(f"extends cycle: {cycle}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        because = f" (extends at {referrer})" if referrer else ""
        raise RecipeError(f"recipe file not found: {shown}{because}") from None
    except UnicodeDecodeError:
        raise not_utf8(path, RecipeError) from None
    except OSError as err:
        raise RecipeError(f"cannot read recipe {shown}: {err}") from None
    data, lines = _parse_yaml(text, shown)
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {_type_name(type(data))}"
        raise RecipeError(f"{shown}: a recipe must be a mapping of sections (app, data, model, ...), got {got}")
    where = {p: f"{shown}:{line}" for p, line in lines.items()}
    if "extends" not in data:
        return data, where
    parent = data.pop("extends")
    at = where.pop(("extends",))
    if not isinstance(parent, str) or not parent:
        raise RecipeError(f"extends: expected a recipe file name, got {_show(parent)} ({at})")
    base, base_where = _load_chain(
        path.parent / parent, os.path.normpath(Path(shown).parent / parent), at, chain + ((resolved, shown),)
    )
    return _merge_located(base, base_where, data, where)


def _merge(base, over):
    """Deep merge: mappings key by key, anything else replaces, and null
    removes an inherited key, so its default applies again. That is how an
    extending recipe drops an option of a free-form mapping it inherits
    (``cell_options: {cell_clip: null}`` before switching the cell to one
    that has no clip)."""
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            if value is None and key in base:
                del merged[key]
            else:
                merged[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(over)


def _merge_located(base, base_where, over, over_where):
    # A path that survives the merge came from `over` if `over` has it, and
    # from `base` otherwise (when `over` replaced an ancestor, it is gone).
    merged = _merge(base, over)
    where = {p: over_where.get(p) or base_where.get(p) for p in _paths(merged)}
    return merged, {p: w for p, w in where.items() if w}


def _paths(d, prefix=()):
    for key, value in d.items():
        yield prefix + (key,)
        if isinstance(value, dict):
            yield from _paths(value, prefix + (key,))


def set_dotted(d: dict, dotted: str, value) -> None:
    """``d["a"]["b"] = value`` for ``"a.b"``, creating missing mappings."""
    *parents, last = dotted.split(".")
    node = d
    for i, key in enumerate(parents):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise RecipeError(f"cannot set {dotted}: {'.'.join(parents[: i + 1])} is not a mapping")
    node[last] = value


_MISSING = object()


def get_dotted(d: dict, dotted: str, default=_MISSING):
    """``d["a"]["b"]`` for ``"a.b"``; KeyError (or ``default``) if absent."""
    node = d
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            if default is _MISSING:
                raise KeyError(dotted)
            return default
        node = node[key]
    return node


# -- validation ---------------------------------------------------------------


def validate(recipe: Recipe, schema: dict) -> dict:
    """Check ``recipe.raw`` against ``schema`` and return a new plain dict
    with every schema key present (defaults filled in). Raises one
    RecipeError listing every problem, unknown keys (typos) first since they
    often explain the rest."""
    problems: list[tuple[int, str]] = []
    config = _check_section(recipe.raw, schema, (), recipe, _schema_paths(schema), problems)
    if problems:
        raise RecipeError("\n".join(msg for _, msg in sorted(problems, key=lambda p: p[0])))
    return config


_UNKNOWN, _INVALID, _MISSING_KEY = 0, 1, 2


def _check_section(raw, schema, prefix, recipe, all_paths, problems) -> dict:
    out = {}
    for key in raw:
        if key not in schema:
            problems.append((_UNKNOWN, _unknown_key(prefix, key, schema, recipe, all_paths)))
    for key, spec in schema.items():
        path = ".".join(prefix + (key,))
        if isinstance(spec, dict):
            value = raw.get(key)
            if value is None:  # absent, or an empty section with every line commented out
                value = {}
            if not isinstance(value, dict):
                problems.append((_INVALID, f"{path}: expected a mapping, got {_show(value)} ({recipe.locate(path)})"))
                value = {}
            out[key] = _check_section(value, spec, prefix + (key,), recipe, all_paths, problems)
        elif key not in raw:
            if spec.default is REQUIRED:
                problems.append((_MISSING_KEY, f"{path}: required key is missing ({recipe.locate(path)})"))
                out[key] = None
            else:
                out[key] = copy.deepcopy(spec.default)
        else:
            value, error = _check_value(raw[key], spec)
            if error:
                problems.append((_INVALID, f"{path}: {error[0]} ({recipe.locate(path)}){error[1]}"))
            out[key] = value
    return out


def _check_value(value, spec: Field):
    """``(value, None)`` or ``(value, (problem, "; hint"))``."""
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    if value is None:
        if spec.default is None or type(None) in types:
            return None, None
    elif isinstance(value, bool):
        if bool in types:
            return value, None
    elif isinstance(value, int) and int not in types and float in types:
        value = float(value)  # 1 where a float is expected is fine
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        return value, (f"expected {_type_names(types)}, got {_show(value)}", "")
    if spec.items is not None and isinstance(value, list):
        item_spec = Field(spec.items, choices=spec.choices, min=spec.min, max=spec.max)
        checked = [_check_value(item, item_spec) for item in value]
        for index, (_, error) in enumerate(checked):
            if error:
                return value, (f"item {index}: {error[0]}", error[1])
        return [item for item, _ in checked], None
    if spec.choices is not None and value is not None:
        choices = list(spec.choices() if callable(spec.choices) else spec.choices)
        for item in value if isinstance(value, list) else [value]:
            if item not in choices:
                return value, (f"{item!r} is not allowed", "; allowed: " + ", ".join(map(str, choices)))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low = spec.min is not None and value < spec.min
        high = spec.max is not None and value > spec.max
        if low or high:
            bounds = [f"{op} {b:g}" for op, b in ((">=", spec.min), ("<=", spec.max)) if b is not None]
            return value, (f"{value!r} is out of range", "; must be " + " and ".join(bounds))
    return value, None


def _unknown_key(prefix, key, schema, recipe, all_paths) -> str:
    path = ".".join(prefix + (str(key),))
    message = f"{path}: unknown key ({recipe._where(prefix + (key,))})"
    name = str(key)
    if "." in name:  # "train.epochs: 3" in a file: dotted keys are for --set only
        return f"{message}; in a recipe file write nested mappings ({name.replace('.', ': ')}: ...)"
    near = difflib.get_close_matches(name, [str(k) for k in schema], n=1)
    guesses = [".".join(prefix + (near[0],))] if near else []
    guesses = guesses or [p for p in all_paths if p.rsplit(".", 1)[-1] == name]  # right key, wrong section
    guesses = guesses or difflib.get_close_matches(path, all_paths, n=1)
    if guesses:
        return f"{message}; did you mean {' or '.join(guesses)}?"
    where = f"in {'.'.join(prefix)}" if prefix else "at the top level"
    return f"{message}; valid keys {where}: {', '.join(map(str, schema))}"


def _schema_paths(schema, prefix=()) -> list[str]:
    paths = []
    for key, spec in schema.items():
        paths.append(".".join(prefix + (key,)))
        if isinstance(spec, dict):
            paths += _schema_paths(spec, prefix + (key,))
    return paths


def _type_name(t) -> str:
    return {dict: "mapping", type(None): "null"}.get(t, t.__name__)


def _type_names(types) -> str:
    return " or ".join(_type_name(t) for t in types)


def _show(value) -> str:
    if value is None:
        return "null"
    text = repr(value)
    return f"{_type_name(type(value))} {text if len(text) <= 60 else text[:57] + '...'}"


# -- data files ---------------------------------------------------------------


def data_root(cli_value: str | None) -> tuple[Path, str]:
    """``(root, how)``: ``--data-dir`` if given, else ``$LSTM_SUITE_DATA``,
    else ``./data``. ``how`` goes into error messages, so that a user who
    forgot the flag sees which root was actually searched."""
    if cli_value:
        return Path(cli_value).expanduser(), "--data-dir"
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser(), DATA_ENV
    return DEFAULT_DATA_ROOT, "default ./data"


def resolve_data_files(config: dict, schema: dict, recipe: Recipe | None, data_root,
                       strict: bool = True) -> dict:
    """A copy of ``config`` in which every ``data_file`` value is an absolute
    path string (or None: an optional file that is absent). ``data_root`` is
    a path or the ``(root, how)`` pair from :func:`data_root`.
    ``pkg:package/inner/path`` names a file shipped inside an installed
    package. A missing required file is an error naming the file, the key,
    its recipe line and the root, unless not ``strict`` (a finished run
    loaded for use: its path stays, and whatever reads it names it)."""
    root, how = data_root if isinstance(data_root, tuple) else (data_root, None)
    root = Path(os.path.abspath(Path(root).expanduser()))
    out = copy.deepcopy(config)
    problems = []
    for path, spec in _data_fields(schema):
        value = get_dotted(out, path, None)
        if value is None:
            continue
        at = f"{path} at {recipe.locate(path)}" if recipe else path
        if value.startswith("pkg:"):
            file, context = _package_file(value, at), f"in package {value[4:].partition('/')[0]}"
        elif Path(value).expanduser().is_absolute():
            file, context = Path(value).expanduser(), None
        else:
            file = root / value
            context = f"data root {root}" + (f" from {how}" if how else "")
            if not root.is_dir():
                context += ", which does not exist"
        file = os.path.abspath(file)
        if not os.path.exists(file):
            if spec.optional_file:
                file = None
            elif strict:
                problems.append(f"data file not found: {file} ({at}" + (f"; {context})" if context else ")"))
        set_dotted(out, path, file)
    if problems:
        raise RecipeError("\n".join(problems))
    return out


def _data_fields(schema, prefix=""):
    for key, spec in schema.items():
        if isinstance(spec, dict):
            yield from _data_fields(spec, f"{prefix}{key}.")
        elif spec.data_file:
            yield f"{prefix}{key}", spec


def _package_file(value: str, at: str) -> Path:
    """The file ``pkg:package/inner/path`` names, found the way
    ``importlib.resources.files(package)`` would, but without importing the
    package: a recipe must not be able to run code."""
    package, _, inner = value[4:].partition("/")
    if not package or not inner:
        raise RecipeError(f"{value}: expected pkg:package.name/path/in/package ({at})")
    dirs = _package_dirs(package)
    if dirs is None:
        raise RecipeError(f"{value}: no installed package named {package!r} ({at})")
    candidates = [Path(d) / inner for d in dirs]
    return next((c for c in candidates if c.exists()), candidates[0])


def _package_dirs(name: str) -> list[str] | None:
    """Directories of the installed package ``name``, asking the import
    system's finders (which locate, never execute) one dotted level at a time."""
    search = None
    for i, part in enumerate(name.split(".")):
        fullname = ".".join(name.split(".")[: i + 1])
        module = sys.modules.get(fullname)
        spec = getattr(module, "__spec__", None) if module is not None else None
        for finder in [] if spec else sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, search) if find else None
            if spec is not None:
                break
        if spec is None or not spec.submodule_search_locations:
            return None
        search = list(spec.submodule_search_locations)
    return search


# -- recording ----------------------------------------------------------------


def read_config(path) -> dict:
    """Read a config written by :func:`lstm_core.runs.write_config`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"config file not found: {path}") from None
    except UnicodeDecodeError:
        raise not_utf8(path, RecipeError) from None
    except OSError as err:
        raise RecipeError(f"cannot read config {path}: {err}") from None
    data, _ = _parse_yaml(text, str(path))
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping, got {_show(data)}")
    return data


def diff_configs(old: dict, new: dict) -> list[str]:
    """What changed between two configs, one line per dotted path:
    ``"train.epochs: 10 -> 3"``, ``"model.units: added"``, ``"x.y: removed"``
    (used to tell the user how a resumed run differs from the saved one)."""
    lines = []
    _diff(old, new, "", lines)
    return lines


def _diff(old, new, prefix, lines):
    for key in list(old) + [k for k in new if k not in old]:
        path = f"{prefix}{key}"
        if key not in new:
            lines.append(f"{path}: removed")
        elif key not in old:
            lines.append(f"{path}: added")
        elif isinstance(old[key], dict) and isinstance(new[key], dict):
            _diff(old[key], new[key], f"{path}.", lines)
        elif old[key] != new[key] or isinstance(old[key], bool) != isinstance(new[key], bool):
            lines.append(f"{path}: {_fmt(old[key])} -> {_fmt(new[key])}")


def _fmt(value) -> str:
    return json.dumps(value, default=str)
