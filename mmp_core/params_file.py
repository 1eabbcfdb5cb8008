"""Reading params.yaml: finding the project's file, `--set` overrides, and each section validated by its model in
mmp_core.config (the one schema), with the file and field named on error."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mmp_core.config import Section

PARAMS_NAME = "params.yaml"
# Everything params.yaml may hold: a misspelt section (`trian:`) would otherwise leave its stage on defaults.
PARAMS_HELP = (
    "parameters file (default: params.yaml at the root of the project around the current directory, i.e. the "
    "nearest folder upwards that holds dvc.yaml or params.yaml)"
)
SET_HELP = (
    "override one parameter, as `dvc exp run -S` does: SECTION.KEY=VALUE with a YAML value, e.g. {example}; "
    "repeatable; validated by the same schema as params.yaml (mmp_core/config.py)"
)
TOP_LEVEL_KEYS = ("methods", "seeds", "generate", "prepare", "pretrain", "train", "evaluate", "pipeline")
# A folder holding one of these is the root of an mmp (DVC) project: where `dvc repro` runs the stages.
PROJECT_MARKERS = ("dvc.yaml", PARAMS_NAME)


def find_project_root(start: str | Path | None = None) -> Path | None:
    """The nearest folder, from `start` (default: the current directory) upwards, that holds dvc.yaml or
    params.yaml; None outside any project."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if any((folder / marker).is_file() for marker in PROJECT_MARKERS):
            return folder
    return None


def params_path(explicit: str | Path | None = None) -> Path:
    """The parameters file: `explicit` as given (relative to the current directory), else the project's
    params.yaml, found by walking up from the current directory (so `mmp` works from any subfolder)."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path.absolute()}: parameters file not found (given with --params)")
        return path
    root = find_project_root()
    if root is None:
        raise FileNotFoundError(
            f"{PARAMS_NAME}: parameters file not found in {Path.cwd()} or any folder above it (none holds dvc.yaml "
            f"or {PARAMS_NAME}); run inside an mmp project or pass --params PATH"
        )
    if not (root / PARAMS_NAME).is_file():
        raise FileNotFoundError(
            f"{root / PARAMS_NAME}: parameters file not found beside {root / 'dvc.yaml'}; create it or pass --params PATH"
        )
    return root / PARAMS_NAME


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """`section.key[.subkey]=value` -> ((section, key, ...), value). The value is read as YAML, as params.yaml is:
    `[0, 1]` is a list, `{type: text, rate: 0.5}` a mapping; the schema then converts it (`3e-3` to a float)."""
    key, sep, raw = text.partition("=")
    parts = tuple(key.strip().split("."))
    if not sep or len(parts) < 2 or not all(parts):
        raise ValueError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. train.lr=0.003")
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError as error:
        raise ValueError(f"--set {text!r}: the value is not valid YAML ({error})") from None
    return parts, value


def apply_overrides(document: Mapping[str, Any], overrides: Iterable[str], sections: Iterable[str]) -> dict:
    """A copy of a params document with `--set` overrides applied; an override of a section the command does
    not read is an error (it would silently do nothing)."""
    import copy

    document = copy.deepcopy(dict(document))
    sections = tuple(sections)
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] not in sections:
            raise ValueError(f"--set {text!r}: this command reads only the section(s) {', '.join(sections)}")
        node = document
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"--set {text!r}: {'.'.join(parts[: depth + 1])} is not a mapping in the parameters")
            node = child
        node[parts[-1]] = value
    return document


def read_params(path: str | Path) -> dict:
    """The whole params document (a mapping of sections), naming the file on error."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: parameters file not found") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a mapping of sections at the top level")
    unknown = [key for key in document if key not in TOP_LEVEL_KEYS]
    if unknown:
        import difflib

        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), TOP_LEVEL_KEYS, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(
            f"{path}: unknown top-level key(s) {', '.join(hints)}; expected some of {', '.join(TOP_LEVEL_KEYS)}"
        )
    return document


def validate_section(document: Mapping[str, Any], section: str, model: type[Section], source: str) -> Section:
    """One section of a params document as its typed model; errors name `source` and every bad field."""
    values = document.get(section, {})
    try:
        return model.model_validate(values or {})
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join((section, *(str(p) for p in item['loc'])))}: {item['msg'].removeprefix('Value error, ')}"
            for item in error.errors()
        )
        raise ValueError(f"{source}: invalid parameters: {problems}") from None


def load_section(path: str | Path, section: str, model: type[Section]) -> Section:
    """Read one section of a params.yaml into its typed model, naming the file and field on error."""
    return validate_section(read_params(path), section, model, str(path))


def load_params(
    path: str | Path | None, sections: Mapping[str, type[Section]], overrides: Iterable[str] = ()
) -> dict[str, Section]:
    """The sections a command reads, from `path` (None: the project's params.yaml) with `--set` overrides,
    each validated by its model in this module: the one schema, whichever way a value was given."""
    path = params_path(path)
    overrides = list(overrides)
    document = apply_overrides(read_params(path), overrides, sections)
    source = f"{path} with --set {' '.join(overrides)}" if overrides else str(path)
    return {name: validate_section(document, name, model, source) for name, model in sections.items()}


def read_seeds(path: str | Path | None = None) -> tuple[int, ...]:
    """params.yaml's top-level `seeds`: the training seeds every method is trained and evaluated with.

    Absent: one seed, 0. Each must be a non-negative integer, listed once."""
    path = params_path(path)
    seeds = read_params(path).get("seeds", [0])
    if not isinstance(seeds, list) or not seeds:
        raise ValueError(f"{path}: seeds must be a non-empty list of integers, e.g. [0, 1, 2]; got {seeds!r}")
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 0]
    if bad:
        raise ValueError(f"{path}: seeds must be non-negative integers; not {bad}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{path}: seeds lists a seed twice: {seeds}")
    return tuple(seeds)


def read_methods(path: str | Path | None = None) -> tuple[str, ...]:
    """params.yaml's top-level `methods`: the methods DVC trains (absent: all of them)."""
    from mmp_core.config import METHODS

    path = params_path(path)
    methods = read_params(path).get("methods", list(METHODS))
    if not isinstance(methods, list) or not methods or any(m not in METHODS for m in methods):
        raise ValueError(f"{path}: methods must be a non-empty list of {', '.join(METHODS)}; got {methods!r}")
    return tuple(methods)
