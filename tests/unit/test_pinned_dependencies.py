"""constraints.txt pins every distribution the daemon's and the aggregator's virtualenvs
hold, at versions pyproject.toml's ranges (and every dependency's own) accept, and the
virtualenv these tests run in holds exactly those versions (scripts/setup.sh installs
with `-c constraints.txt`)."""

from __future__ import annotations

import pytest
from packaging.utils import canonicalize_name

from tests.pins import (
    AGGREGATOR_EXTRAS,
    CONSTRAINTS,
    DAEMON_EXTRAS,
    PROJECT,
    closure,
    installed_version,
    read_constraints,
)

DEPLOYABLES = pytest.mark.parametrize(
    "extras", [DAEMON_EXTRAS, AGGREGATOR_EXTRAS], ids=["daemon", "aggregator"]
)


@DEPLOYABLES
def test_every_distribution_of_the_runtime_closure_is_pinned(extras: tuple[str, ...]) -> None:
    pins = read_constraints()
    names, _ = closure(extras)
    assert len(names) > 10, names
    missing = sorted(names - set(pins))
    assert not missing, (
        f"not pinned in {CONSTRAINTS.name}: {missing}; run scripts/pin-dependencies.sh"
    )
    assert PROJECT not in pins, "the project itself is installed from its own source or wheel"


@DEPLOYABLES
def test_every_pinned_version_is_one_its_requirements_accept(extras: tuple[str, ...]) -> None:
    """The pins satisfy pyproject.toml's ranges and every dependency's own requirements:
    pip resolves them as they are, offline too."""
    pins = read_constraints()
    _, edges = closure(extras)
    refused = [
        f"{edge.required_by} wants {edge.requirement}, pinned {pin}"
        for edge in edges
        if not edge.requirement.specifier.contains(
            pin := pins[canonicalize_name(edge.requirement.name)], prereleases=True
        )
    ]
    assert not refused, refused


@DEPLOYABLES
def test_this_virtualenv_holds_the_pinned_versions(extras: tuple[str, ...]) -> None:
    pins = read_constraints()
    names, _ = closure(extras)
    differing = {
        name: f"installed {installed_version(name)}, pinned {pins[name]}"
        for name in sorted(names)
        if installed_version(name) != pins[name]
    }
    assert not differing, (
        f"{differing}: install with `pip install -c constraints.txt -e '.[dev]'` "
        "(scripts/setup.sh --dev does)"
    )
