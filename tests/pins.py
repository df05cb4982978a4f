"""The pinned versions (constraints.txt) and the runtime dependency closure they must cover,
computed from pyproject.toml's declared dependencies and the installed distributions'
own metadata (importlib.metadata), with markers evaluated for this platform."""

from __future__ import annotations

import importlib.metadata
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPOSITORY = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPOSITORY / "constraints.txt"
PROJECT = "ocpp-edge"
# What each deployable's virtualenv is made of: the base dependencies and these extras.
DAEMON_EXTRAS = ("edge", "systemd")
AGGREGATOR_EXTRAS = ("cloud",)


def read_constraints(path: Path = CONSTRAINTS) -> dict[str, str]:
    """{canonical name: version} of a constraints file's `name==version` lines; anything
    else (a range, a name given twice) is an error, as it would leave a version open."""
    pins: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==" and "*" not in specifier.version, (
            f"{path.name}:{number}: {text!r} is not an exact pin"
        )
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{path.name}:{number}: {name} is pinned twice"
        pins[name] = specifier.version
    return pins


def declared_requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """pyproject.toml's base dependencies and those of `extras`, as the project declares
    them (not those of other extras the extras name, such as dev's own project)."""
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra in extras:
        texts += project["optional-dependencies"][extra]
    return [Requirement(text) for text in texts]


@dataclass(frozen=True)
class Edge:
    """`requirement`, which `required_by` declares, applies on this platform."""

    required_by: str
    requirement: Requirement


def closure(extras: tuple[str, ...]) -> tuple[set[str], list[Edge]]:
    """Every distribution the project with `extras` installs here (canonical names), and
    every requirement that led to one, from the installed distributions' metadata."""
    edges: list[Edge] = []
    seen: dict[str, set[str]] = {}
    waiting: list[tuple[str, Requirement]] = []
    for requirement in declared_requirements(extras):
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            waiting.append((PROJECT, requirement))
    while waiting:
        required_by, requirement = waiting.pop()
        name = canonicalize_name(requirement.name)
        edges.append(Edge(required_by, requirement))
        wanted = set(requirement.extras) | {""}
        if wanted <= seen.get(name, set()):
            continue
        seen.setdefault(name, set()).update(wanted)
        for text in importlib.metadata.distribution(name).requires or []:
            nested = Requirement(text)
            if nested.marker is None or any(
                nested.marker.evaluate({"extra": extra}) for extra in wanted
            ):
                waiting.append((name, nested))
    return set(seen), edges


def installed_version(name: str) -> str:
    return importlib.metadata.version(name)
