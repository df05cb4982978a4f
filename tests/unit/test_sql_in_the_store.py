"""Every SQL statement of the edge is written in edge/store/, where the schema is."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import edge

EDGE = Path(edge.__file__).parent
SQL = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|PRAGMA|SAVEPOINT|RELEASE|"
    r"ROLLBACK|COMMIT|WITH)\s|^\s*BEGIN\s*(;|IMMEDIATE|DEFERRED|EXCLUSIVE|TRANSACTION|$)",
)


def sql_outside_the_store() -> list[str]:
    found = []
    for path in sorted(EDGE.rglob("*.py")):
        relative = path.relative_to(EDGE.parent)
        if relative.parts[:2] == ("edge", "store"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and SQL.match(text):
                found.append(f"{relative}:{node.lineno}: {text[:60]!r}")
    return found


def test_no_sql_outside_edge_store() -> None:
    assert sql_outside_the_store() == []
