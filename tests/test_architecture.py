"""The package's layering, read from the source: imports run one way, down the floors.

Every ``import`` and ``from ... import`` in minicnn/ is read with ``ast`` (those inside
functions too: a lazy import is still a dependency), resolved to the minicnn module it names,
and checked twice:
* the graph of modules has no cycle;
* no module imports a module on a floor above its own (same floor is fine).
The floors are written once, here, as data; every module of minicnn must be on one.
"""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "minicnn"

#: bottom first: a module may import its own floor and the floors below it
FLOORS = [
    ("core", ["minicnn.core"]),
    ("kernels", ["minicnn.kernels"]),
    ("layers", ["minicnn.layers"]),
    ("losses, optim, zoo, data", ["minicnn.losses", "minicnn.optim", "minicnn.zoo", "minicnn.data"]),
    ("train", ["minicnn.train"]),
    ("interop, trace", ["minicnn.interop", "minicnn.trace", "minicnn.explain"]),
    ("apps", ["minicnn.apps", "minicnn.check", "minicnn.__main__", "minicnn.bench", "minicnn"]),
]


def module_name(path):
    """minicnn/layers/conv.py -> 'minicnn.layers.conv'; a package's __init__.py -> the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(name):
    return MODULES[name].name == "__init__.py"


def imported_modules(name, tree):
    """The minicnn modules that module ``name`` imports, anywhere in its body."""
    package = name if is_package(name) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module
            # ``from pkg import sub`` imports the module pkg.sub when sub is one; any other name
            # comes from pkg itself (its __init__)
            subs = [f"{origin}.{alias.name}" for alias in node.names]
            targets = [sub if sub in MODULES else origin for sub in subs]
        else:
            continue
        for target in targets:
            if target and target.split(".")[0] == "minicnn" and target in MODULES:
                found.add(target)
    found.discard(name)
    return found


GRAPH = {name: imported_modules(name, ast.parse(path.read_text(encoding="utf-8")))
         for name, path in MODULES.items()}


def floor_of(name):
    """(index, floor name) of the longest prefix in FLOORS that names ``name``'s package."""
    best = None
    for index, (floor, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                if best is None or len(prefix) > best[2]:
                    best = (index, floor, len(prefix))
    return None if best is None else best[:2]


def test_the_graph_is_read():
    """The reader sees real edges (so the checks below are not vacuous)."""
    assert "minicnn.core.errors" in GRAPH["minicnn.layers.conv"]
    assert "minicnn.kernels" in GRAPH["minicnn.layers.conv"]
    assert "minicnn.layers.container" in GRAPH["minicnn.layers.residual"]


def test_every_module_is_on_a_floor():
    lost = [name for name in MODULES if floor_of(name) is None]
    assert not lost, f"modules on no floor (add them to FLOORS in {__file__}): {lost}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_down(name):
    own, own_floor = floor_of(name)
    upward = [f"{target} (floor {floor_of(target)[1]!r})" for target in sorted(GRAPH[name])
              if floor_of(target)[0] > own]
    assert not upward, (f"{name} (floor {own_floor!r}) imports from a floor above its own: "
                        f"{upward}")


def find_cycle(graph):
    """A list of modules [a, b, ..., a] forming a cycle, or None (depth-first search)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
