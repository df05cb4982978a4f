"""Reading settings from a TOML file and the environment, with errors a person can act
on: the key, the value, the reason and the line (or the environment variable) it came
from. Used for the edge's settings (edge/settings.py) and the aggregator's
(cloud/settings.py)."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key and why."""


class FileThenEnvironment(BaseSettings):
    """Settings read from a file (passed as init arguments) that the environment
    overrides; no .env or secrets directory."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def locate_config_file(
    explicit: Path | None, env_var: str, default_paths: Sequence[Path]
) -> Path | None:
    """The file to read: `explicit` (a --config option), then the file named by `env_var`,
    then the first of `default_paths` that exists; None when there is none."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file {explicit} does not exist")
        return explicit
    from_env = os.environ.get(env_var)
    if from_env:
        if not Path(from_env).is_file():
            raise ConfigError(f"config file {from_env} (from ${env_var}) does not exist")
        return Path(from_env)
    return next((path for path in default_paths if path.is_file()), None)


def read_settings(
    settings_class: type[SettingsT],
    path: Path | None,
    *,
    union_tags: Collection[str] = (),
    beneath: Mapping[str, Mapping[str, Any]] | None = None,
) -> SettingsT:
    """`settings_class` from the TOML file at `path` (defaults when None) and the environment
    (its `env_prefix`). A wrong value raises ConfigError naming the key, the value and the
    file line or variable it came from. `union_tags` are the tags of tagged unions in lists
    (reader kinds), which pydantic puts into error locations and a person never wrote.
    `beneath` gives values per section for the keys the file leaves out."""
    text = ""
    data: dict[str, Any] = {}
    if path is not None:
        text = path.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: not valid TOML: {error}") from error
    for section, values in (beneath or {}).items():
        own = data.get(section, {})
        if isinstance(own, dict):
            data[section] = {**values, **own}
    try:
        return settings_class(**data)
    except ValidationError as error:
        env_prefix = str(settings_class.model_config.get("env_prefix", ""))
        raise ConfigError(describe_errors(error, path, text, env_prefix, union_tags)) from error


def describe_errors(
    error: ValidationError,
    path: Path | None,
    text: str,
    env_prefix: str,
    union_tags: Collection[str],
    within: tuple[str, ...] = (),
) -> str:
    """`within`: the section a model of one section was read from."""
    lines = []
    for problem in error.errors():
        loc = within + _without_union_tags(problem["loc"], union_tags)
        key = ".".join(str(part) for part in loc)
        where = _line_of(text, loc) if text else None
        origin = f"{path}:{where}: " if where else (f"{path}: " if path else "")
        env_name = env_prefix + "__".join(str(part).upper() for part in loc)
        if env_prefix and env_name in os.environ:
            origin = f"${env_name}: "
        value = problem.get("input")
        shown = "" if problem["type"] == "missing" else f" = {value!r}"
        lines.append(f"{origin}{key}{shown}: {problem['msg']}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _without_union_tags(
    loc: tuple[int | str, ...], union_tags: Collection[str]
) -> tuple[int | str, ...]:
    """pydantic puts a list item's union tag into the location (readers.1.serial.baud):
    drop it."""
    return tuple(
        part
        for index, part in enumerate(loc)
        if not (index > 0 and isinstance(loc[index - 1], int) and part in union_tags)
    )


def _line_of(text: str, loc: tuple[int | str, ...]) -> int | None:
    """Line number of the key at `loc` (e.g. ("readers", 1, "baud")) in a TOML text, or of
    the closest table that holds it, for error messages."""
    wanted = [str(part) for part in loc]
    table: list[str] = []
    arrays: dict[tuple[str, ...], int] = {}  # [[name]] seen so far, per path
    best: tuple[int, int] | None = None  # (matched length, line)

    def consider(path: list[str], number: int) -> None:
        nonlocal best
        if path == wanted[: len(path)] and (best is None or len(path) > best[0]):
            best = (len(path), number)

    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.split("#", 1)[0].strip()
        header = re.fullmatch(r"(\[\[?)\s*([^\]]+?)\s*\]\]?", stripped)
        if header:
            names = [name.strip().strip('"') for name in header.group(2).split(".")]
            table = _table_path(names, arrays, is_array=header.group(1) == "[[")
            consider(table, number)
            continue
        assignment = re.match(r"([A-Za-z0-9_\-\.\"]+)\s*=", stripped)
        if assignment:
            key = [name.strip().strip('"') for name in assignment.group(1).split(".")]
            consider(table + key, number)
    return best[1] if best else None


def _table_path(
    names: list[str], arrays: dict[tuple[str, ...], int], *, is_array: bool
) -> list[str]:
    """The location of a [table] or [[array]] header, with array items numbered."""
    path: list[str] = []
    for depth, name in enumerate(names):
        path.append(name)
        last = depth == len(names) - 1
        key = tuple(path)
        if last and is_array:
            arrays[key] = arrays.get(key, -1) + 1
            path.append(str(arrays[key]))
        elif key in arrays:
            path.append(str(arrays[key]))  # a sub-table of the latest array item
    return path
