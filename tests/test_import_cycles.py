"""The project's modules import one another without cycles.

The test reads source only (``ast``), imports none of the modules it checks, and so needs no
TensorFlow. It walks the packages in :data:`PACKAGES` -- ``zoo``, ``export`` and ``serving``, and
``bench`` only once it is a package (has an ``__init__.py``; today it is a folder of scripts) --
and collects every ``import`` / ``from ... import`` statement, wherever it is: at module level,
inside functions, methods, classes, ``try`` and ``if`` blocks. Conventions:

* ``if TYPE_CHECKING:`` blocks (``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``) are **excluded**:
  they never run, so they cannot take part in an import cycle. Their ``else:`` branch does run and
  is included.
* Relative imports are resolved against the importing module's package.
* ``from pkg import name`` is an edge to the submodule ``pkg.name`` when there is such a module,
  else to ``pkg`` itself (``name`` is then an attribute of ``pkg``'s ``__init__``).
* An edge to a submodule is an edge to that submodule only, not to the ``__init__`` of the
  packages above it, although Python runs those too. That is the convention that lets a package
  ``__init__`` import its submodules (eagerly, or lazily on attribute access) while they import
  one another by full name. An explicit ``import zoo.data`` or ``from zoo import data`` is an edge
  to ``zoo.data``, the package ``__init__``.
* An import of a project module that does not exist is an edge to its nearest existing parent
  (that much is executed before the import fails).
* Imports done with ``importlib.import_module`` or ``__import__`` are not seen: their targets are
  data, not statements.

A cycle is a strongly connected component of more than one module, or a module that imports
itself. The failure message lists, for each component, a shortest cycle through each of its import
edges (``a -> b -> a``), then where each of those imports is written.
"""

from __future__ import annotations

import ast
import collections
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = tuple(
    name
    for name in ("zoo", "export", "serving", "bench")
    if (ROOT / name / "__init__.py").is_file()
)

Graph = dict[str, dict[str, str]]  # module -> {imported module: "path:line" of the first import}


def find_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """``{dotted module name: source path}`` of every ``.py`` file under ``root/<package>``.

    A package's ``__init__.py`` is named after the package (``zoo.data``, not
    ``zoo.data.__init__``). ``__pycache__`` and hidden folders are skipped.
    """
    modules: dict[str, Path] = {}
    for package in packages:
        for dirpath, dirnames, filenames in os.walk(root / package):
            dirnames[:] = sorted(
                d for d in dirnames if d != "__pycache__" and not d.startswith(".")
            )
            folder = Path(dirpath)
            prefix = folder.relative_to(root).parts
            for filename in sorted(filenames):
                if not filename.endswith(".py"):
                    continue
                stem = filename[: -len(".py")]
                parts = prefix if stem == "__init__" else (*prefix, stem)
                modules[".".join(parts)] = folder / filename
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    """Whether an ``if`` test is ``TYPE_CHECKING`` or ``<something>.TYPE_CHECKING``."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree`` at any depth, except inside ``if TYPE_CHECKING:``."""
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            pending.extend(node.orelse)
        else:
            pending.extend(ast.iter_child_nodes(node))


def _resolve_base(module: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    """The absolute module named by ``from <...> import``; ``None`` when a relative import climbs
    above the top-level package."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    keep = len(package) - (node.level - 1)
    if keep <= 0:
        return None
    return ".".join([*package[:keep], *([node.module] if node.module else [])])


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """``name`` if it is a project module, else its nearest parent that is, else ``None``."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _targets(
    module: str, is_package: bool, node: ast.Import | ast.ImportFrom, modules: Mapping[str, Path]
) -> list[str]:
    """The project modules that one import statement in ``module`` is an edge to."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = _resolve_base(module, is_package, node)
        if base is None:
            return []
        names = []
        for alias in node.names:
            submodule = f"{base}.{alias.name}" if base else alias.name
            names.append(submodule if alias.name != "*" and submodule in modules else base)
    return [target for target in (_known(name, modules) for name in names) if target]


def import_graph(root: Path, packages: Iterable[str]) -> Graph:
    """The import graph of the project modules under ``root`` (see the module docstring)."""
    modules = find_modules(root, packages)
    graph: Graph = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        where = path.relative_to(root).as_posix()
        for node in _import_nodes(tree):
            for target in _targets(module, is_package, node, modules):
                line = f"{where}:{node.lineno}"
                if target not in edges or _line_key(line) < _line_key(edges[target]):
                    edges[target] = line
    return graph


def _line_key(location: str) -> int:
    """The line number of a ``path:line`` location, to keep an edge's first import."""
    return int(location.rpartition(":")[2])


def strongly_connected_components(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph``, iteratively (no recursion limit);
    each component sorted, in the order Tarjan completes them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def enter(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)

    for start in sorted(graph):
        if start in index:
            continue
        enter(start)
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    enter(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def _shortest_path(
    graph: Mapping[str, Iterable[str]], start: str, goal: str, within: set[str]
) -> list[str]:
    """A shortest path ``[start, ..., goal]`` through the modules in ``within`` (breadth first,
    neighbours in sorted order so the answer is deterministic)."""
    previous: dict[str, str | None] = {start: None}
    queue = collections.deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while (before := previous[path[-1]]) is not None:
                path.append(before)
            return path[::-1]
        for child in sorted(graph.get(node, ())):
            if child in within and child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"{goal} is not reachable from {start} within its component")


def _rotate(cycle: Sequence[str]) -> tuple[str, ...]:
    """``cycle`` (``[a, b, ..., a]``) started at its smallest module, so that equal cycles
    compare equal."""
    ring = list(cycle[:-1])
    first = ring.index(min(ring))
    ring = ring[first:] + ring[:first]
    return (*ring, ring[0])


def import_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[tuple[str, ...]]]:
    """For each strongly connected component that is a cycle (more than one module, or a module
    importing itself): a shortest cycle through each of its edges, ``(a, b, ..., a)``, no cycle
    twice. Components and cycles are in a deterministic order."""
    found = []
    for component in strongly_connected_components(graph):
        members = set(component)
        if len(component) == 1 and component[0] not in graph.get(component[0], ()):
            continue
        cycles = {
            _rotate([module, *_shortest_path(graph, child, module, members)])
            for module in component
            for child in graph.get(module, ())
            if child in members
        }
        found.append(sorted(cycles, key=lambda cycle: (len(cycle), cycle)))
    return sorted(found)


def describe_cycles(graph: Graph, found: list[list[tuple[str, ...]]]) -> str:
    """A readable report of ``import_cycles(graph)``: the cycles, then where each import is."""
    lines = [
        f"{len(found)} import cycle(s) among the modules "
        "(imports inside functions included, `if TYPE_CHECKING:` blocks excluded):"
    ]
    edges: set[tuple[str, str]] = set()
    for number, cycles in enumerate(found, start=1):
        modules = sorted({module for cycle in cycles for module in cycle})
        lines.append(f"component {number}: {', '.join(modules)}")
        for cycle in cycles:
            lines.append(f"    {' -> '.join(cycle)}")
            edges.update(zip(cycle, cycle[1:], strict=False))
    lines.append("where the imports are:")
    lines.extend(f"    {a} -> {b}    ({graph[a][b]})" for a, b in sorted(edges))
    return "\n".join(lines)


def test_project_has_no_import_cycles() -> None:
    """No module of the project takes part in an import cycle."""
    graph = import_graph(ROOT, PACKAGES)
    assert "zoo" in graph and "zoo.data" in graph, "the walker found no project modules"
    found = import_cycles(graph)
    assert not found, describe_cycles(graph, found)


# --------------------------------------------------------------------------------------------------
# The walker itself, on tiny packages written to tmp_path
# --------------------------------------------------------------------------------------------------


def _fake_package(tmp_path: Path, files: Mapping[str, str]) -> Graph:
    """Write ``{relative path: source}`` under ``tmp_path`` and return the import graph of the
    package ``fakepkg`` there."""
    for relative, source in {"fakepkg/__init__.py": "", **files}.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return import_graph(tmp_path, ["fakepkg"])


def test_walker_sees_a_cycle_made_only_of_a_function_level_import(tmp_path: Path) -> None:
    """A cycle closed by an import inside a function is reported (the real test cannot pass just
    because the walker looks at module-level imports only)."""
    graph = _fake_package(tmp_path, {
        "fakepkg/a.py": "def load():\n    from fakepkg import b\n\n    return b\n",
        "fakepkg/b.py": "import fakepkg.a\n",
    })
    assert graph["fakepkg.a"] == {"fakepkg.b": "fakepkg/a.py:2"}
    assert import_cycles(graph) == [[("fakepkg.a", "fakepkg.b", "fakepkg.a")]]
    assert "fakepkg.a -> fakepkg.b -> fakepkg.a" in describe_cycles(graph, import_cycles(graph))


def test_walker_sees_method_level_and_relative_imports(tmp_path: Path) -> None:
    """An import inside a method of a class, and relative imports (``.``, ``..``), are edges."""
    graph = _fake_package(tmp_path, {
        "fakepkg/sub/__init__.py": "",
        "fakepkg/sub/c.py": "class C:\n    def m(self):\n        from .. import d\n",
        "fakepkg/d.py": "try:\n    from .sub.c import C\nexcept ImportError:\n    C = None\n",
    })
    assert set(graph["fakepkg.sub.c"]) == {"fakepkg.d"}
    assert set(graph["fakepkg.d"]) == {"fakepkg.sub.c"}
    assert import_cycles(graph) == [[("fakepkg.d", "fakepkg.sub.c", "fakepkg.d")]]


def test_walker_excludes_type_checking_imports(tmp_path: Path) -> None:
    """``if TYPE_CHECKING:`` imports are not edges; its ``else:`` branch is."""
    graph = _fake_package(tmp_path, {
        "fakepkg/e.py": (
            "import typing\nfrom typing import TYPE_CHECKING\n\n"
            "if TYPE_CHECKING:\n    from fakepkg.f import F\n"
            "if typing.TYPE_CHECKING:\n    import fakepkg.f\nelse:\n    import fakepkg.g\n"
        ),
        "fakepkg/f.py": "from fakepkg import e\n",
        "fakepkg/g.py": "",
    })
    assert set(graph["fakepkg.e"]) == {"fakepkg.g"}
    assert import_cycles(graph) == []


def test_walker_package_init_convention_and_self_import(tmp_path: Path) -> None:
    """An edge to a submodule is not an edge to its package ``__init__``; ``from pkg import name``
    of a non-module name is; a module importing itself is a cycle."""
    graph = _fake_package(tmp_path, {
        "fakepkg/__init__.py": "from fakepkg.g import G\n",
        "fakepkg/g.py": "from fakepkg.h import helper\nG = 1\n",
        "fakepkg/h.py": "def helper():\n    from fakepkg import G\n\n    return G\n",
        "fakepkg/s.py": "def again():\n    import fakepkg.s\n",
        "fakepkg/t.py": "import fakepkg.g\nfrom fakepkg import g\n",
    })
    assert set(graph["fakepkg.h"]) == {"fakepkg"}
    assert set(graph["fakepkg.t"]) == {"fakepkg.g"}
    assert import_cycles(graph) == [
        [("fakepkg", "fakepkg.g", "fakepkg.h", "fakepkg")],
        [("fakepkg.s", "fakepkg.s")],
    ]
    # Without h's import of the package __init__, the submodule edges alone make no cycle.
    (tmp_path / "fakepkg" / "h.py").write_text("def helper():\n    return 1\n", encoding="utf-8")
    (tmp_path / "fakepkg" / "s.py").write_text("", encoding="utf-8")
    assert import_cycles(import_graph(tmp_path, ["fakepkg"])) == []
