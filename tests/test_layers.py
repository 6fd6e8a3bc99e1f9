"""The package's layers import downwards only: jobs -> online -> distributed -> train -> models,
data, specs. Read from the sources (ast), so a new upward import fails here."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "recsys_matta"


def _imports(path: Path) -> set[str]:
    """Modules `path` imports (absolute names, function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize(
    "package,forbidden",
    [
        ("train", ("recsys_matta.distributed", "recsys_matta.online", "recsys_matta.jobs")),
        ("distributed", ("recsys_matta.online", "recsys_matta.jobs")),
        ("online", ("recsys_matta.jobs",)),
    ],
)
def test_a_layer_never_imports_the_layers_above_it(package, forbidden):
    bad = [
        f"{p.relative_to(PKG.parent)} imports {m}"
        for p in sorted((PKG / package).rglob("*.py"))
        for m in _imports(p)
        if m.startswith(forbidden)
    ]
    assert not bad, bad


def test_the_engine_interface_never_imports_its_implementation():
    assert not {"recsys_matta.distributed.sharded", "recsys_matta.distributed.factory"} & _imports(
        PKG / "distributed" / "engine.py"
    )
