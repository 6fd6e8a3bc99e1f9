"""The package's layers import downwards only: jobs -> online -> distributed -> train -> models,
data, specs. Read from the sources (ast), so a new upward import fails here."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "recsys_matta"


def _imports(path: Path) -> set[str]:
    """Modules `path` imports (absolute names, function-level imports included); `from x import
    y` gives x and x.y (y may be a submodule)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
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


def _module_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports."""
    mods = {
        ".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in PKG.rglob("*.py")
    }
    return {name: (_imports(path) & mods.keys()) - {name} for name, path in mods.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in order), or None. Packages' __init__ re-exports are
    skipped: they only hand names on."""
    inits = {m for m in graph if (PKG.parent / m.replace(".", "/") / "__init__.py").exists()}
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(graph[m] - inits):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n, path + [n])):
                return found
        state[m] = 2
        return None

    for m in sorted(set(graph) - inits):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_no_two_modules_import_each_other_in_a_circle():
    """Function-level imports count too: a circle hidden in a function body is still a circle."""
    cycle = _cycle(_module_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_circle_check_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
