"""The import graph of agentplane: layers, and no circles.

Every `import` and `from ... import` of a module counts, wherever it is written: an
import inside a function is put off, not gone, so it is an edge like any other. Only
imports under `if TYPE_CHECKING:` are left out (they never run). `from agentplane.queue
import store` imports the module agentplane.queue.store; importing the name of a
package's `__init__` (`from agentplane.queue import JobQueue`) imports the package.

The nodes of the package graph are:
- each package under agentplane (agentplane.auth, agentplane.queue, ...), its modules
  but its command-line one;
- each top-level module (agentplane.app, agentplane.errors, ...; `agentplane` itself,
  the package's facade, is one too);
- each command-line module on its own: agentplane.cli, agentplane.__main__ and every
  `<package>.cli`.

The layers, from the bottom:
- the foundation (FOUNDATION) imports nothing but itself;
- the domain packages import the foundation and each other, without circles; each
  package's router (`<package>/api.py`) takes its dependencies from agentplane.auth.deps;
- the HTTP entry points (ENTRY: agentplane.api's own pieces, the app factory
  agentplane.app, the server, the client the command line talks through) import the
  packages, and no package imports them;
- the command line (CLI) imports anything, and only the command line imports it.
"""

from __future__ import annotations

import ast
import textwrap
from collections import defaultdict
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import agentplane

SRC = Path(agentplane.__file__).resolve().parent
ROOT = "agentplane"
FOUNDATION = {"errors", "config", "clock", "money", "crypto", "outbound", "metrics", "logs",
              "terminal", "pagination", "db"}
ENTRY = {"api", "web", "app", "server", "client"}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported module, dotted
    where: str  # file:line of the statement

    def __str__(self) -> str:
        return f"{self.where} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(source: str, module: str, is_package: bool) -> list[tuple[str, int]]:
    """(dotted name, line) of every import in the source, anywhere but under
    `if TYPE_CHECKING:`. A `from X import n` gives X.n; the caller tells whether that
    is a module or a name in X."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, *([node.module] if node.module else [])])
            found.extend((f"{base}.{alias.name}", node.lineno) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def resolve(name: str, modules: set[str]) -> str | None:
    """The module a dotted import name lands in: itself, else its longest module prefix."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def scan() -> list[Import]:
    files = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}
    modules = set(files)
    edges: dict[Import, None] = {}  # one per statement and module it imports, in order
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        for name, line in imported_names(path.read_text(), module, is_package):
            if name != ROOT and not name.startswith(ROOT + "."):
                continue
            target = resolve(name, modules)
            if target is not None and target != module:
                where = f"{path.relative_to(SRC.parent)}:{line}"
                edges[Import(module, target, where)] = None
    return list(edges)


def is_cli(module: str) -> bool:
    return module in (f"{ROOT}.cli", f"{ROOT}.__main__") or module.endswith(".cli")


def node(module: str) -> str:
    """The module's node in the package graph (see the module's docstring)."""
    if module == ROOT:
        return ROOT
    inner = module.removeprefix(ROOT + ".")
    return inner if is_cli(module) else inner.split(".")[0]


def package_graph(edges: list[Import]) -> dict[str, dict[str, list[Import]]]:
    graph: dict[str, dict[str, list[Import]]] = defaultdict(lambda: defaultdict(list))
    for e in edges:
        a, b = node(e.source), node(e.target)
        if a != b:
            graph[a][b].append(e)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Circles (a, b, ..., a): in each strongly connected set of nodes (Tarjan), the
    shortest one through each of its nodes, each circle once."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                members.add(w)
                if w == v:
                    break
            if len(members) > 1:
                seen: set[frozenset[tuple[str, str]]] = set()
                for start in sorted(members):
                    circle = _circle_in(graph, members, start)
                    key = frozenset(pairwise(circle))
                    if key not in seen:
                        seen.add(key)
                        found.append(circle)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def _circle_in(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """The shortest circle from start back to itself, inside `members`."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph.get(v, ())):
            if w == start:
                return [*paths[v], start]
            if w in members and w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    raise AssertionError(f"no circle in {members}")  # pragma: no cover


def _explain(graph: dict[str, dict[str, list[Import]]], circle: list[str]) -> str:
    lines = ["  " + " -> ".join(circle)]
    for a, b in pairwise(circle):
        first, *more = graph[a][b]
        also = f" (and {len(more)} more)" if more else ""
        lines.append(f"    {a} -> {b}: {first}{also}")
    return "\n".join(lines)


EDGES = scan()
GRAPH = package_graph(EDGES)


def test_the_scan_reads_imports_in_functions_and_skips_type_checking() -> None:
    source = textwrap.dedent(
        """
        from typing import TYPE_CHECKING
        from . import sibling
        if TYPE_CHECKING:
            from agentplane.queue.models import JobSpec
        else:
            import agentplane.errors
        def f():
            from agentplane.llm import store
        """
    )
    names = [n for n, _ in imported_names(source, "agentplane.workflows.jobs", False)]
    assert names == ["typing.TYPE_CHECKING", "agentplane.workflows.sibling", "agentplane.errors",
                     "agentplane.llm.store"]
    # The real graph: the app factory imports every package's router; the command line
    # imports the client inside a function.
    assert {"auth", "queue", "workflows", "api"} <= set(GRAPH["app"])
    assert "client" in GRAPH["cli"]


def test_no_import_circle_between_packages() -> None:
    found = circles({a: set(bs) for a, bs in GRAPH.items()})
    mutual = sorted(
        f"{a} <-> {b}" for a in GRAPH for b in GRAPH[a] if a < b and a in GRAPH.get(b, ())
    )
    assert not found, (
        "import circles between packages (a function-level import counts too): move the "
        "piece both need to the package it belongs to, or one layer down\n"
        + "\n".join(_explain(GRAPH, c) for c in found)
        + (f"\nimporting each other directly: {', '.join(mutual)}" if mutual else "")
    )


def test_no_import_circle_between_modules_of_a_package() -> None:
    graph: dict[str, dict[str, list[Import]]] = defaultdict(lambda: defaultdict(list))
    for e in EDGES:
        if e.source.split(".")[:2] == e.target.split(".")[:2]:
            graph[e.source][e.target].append(e)
    found = circles({a: set(bs) for a, bs in graph.items()})
    assert not found, "import circles between modules of one package:\n" + "\n".join(
        _explain(graph, c) for c in found
    )


def _importers(layer: set[str]) -> list[Import]:
    """Imports of the layer's nodes by nodes outside it, the command line aside."""
    return [
        e for e in EDGES
        if node(e.target) in layer and node(e.source) not in layer and not is_cli(e.source)
    ]


def test_no_package_imports_the_http_entry_points() -> None:
    wrong = _importers(ENTRY)
    assert not wrong, (
        f"{', '.join(sorted(ENTRY))} sit above every package (the app factory imports the "
        "routers); a router takes what it shares from a lower layer "
        "(agentplane.auth.deps, agentplane.errors):\n"
        + "\n".join(f"  {e}" for e in wrong)
    )


def test_only_the_command_line_imports_the_command_line() -> None:
    wrong = [e for e in EDGES if is_cli(e.target) and not is_cli(e.source)]
    assert not wrong, (
        "a module that is not a command line imports one (agentplane.cli, "
        "agentplane.__main__ or a <package>.cli); move what it needs below both:\n"
        + "\n".join(f"  {e}" for e in wrong)
    )


def test_the_foundation_imports_no_package() -> None:
    wrong = [
        e for e in EDGES
        if node(e.source) in FOUNDATION and node(e.target) not in FOUNDATION
    ]
    assert not wrong, (
        f"the foundation ({', '.join(sorted(FOUNDATION))}) is what every package may "
        "import; it imports nothing above it:\n" + "\n".join(f"  {e}" for e in wrong)
    )
