"""No import cycles between our modules (voicectl/, agent/).

The graph is read from the source with `ast`, not by importing: every `import x` and
`from x import y`, also inside functions and under `if TYPE_CHECKING:`, because a lazy import
hides a cycle without removing it. `from pkg import mod` counts as an import of the module
pkg.mod when that is a module; every module depends on its package's `__init__`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

from tests.support.project import REPO

PACKAGES = ("voicectl", "agent")


def module_files(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Dotted module name -> source file, for every .py file under the packages."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _absolute(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a (possibly relative) `from ... import` target."""
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name the module imports, wherever the import statement stands."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.level, node.module)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The longest of our modules that `name` is or lies in (None: not ours)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _with_packages(module: str, modules: dict[str, Path]) -> set[str]:
    """The module and every package above it: importing it runs their `__init__` first."""
    parts = module.split(".")
    return {".".join(parts[:end]) for end in range(1, len(parts) + 1)
            if ".".join(parts[:end]) in modules}


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the modules of ours it depends on (what it imports and the packages above
    those, and its own enclosing packages)."""
    modules = module_files(root, packages)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        deps = _with_packages(module, modules)
        for name in imported_names(module, path):
            owner = _owner(name, modules)
            if owner is not None:
                deps |= _with_packages(owner, modules)
        deps.discard(module)
        graph[module] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        # iterative, so that a deep graph cannot hit the recursion limit
        nonlocal counter
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def describe(graph: dict[str, set[str]], component: list[str]) -> str:
    """One cycle's modules and the imports between them."""
    members = set(component)
    edges = [f"    {m} -> {d}" for m in component for d in sorted(graph[m] & members)]
    return f"  cycle of {len(component)}: {', '.join(component)}\n" + "\n".join(edges)


def test_our_modules_import_no_cycle() -> None:
    graph = import_graph(REPO, PACKAGES)
    assert len(graph) > 20, sorted(graph)  # it read the packages
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(describe(graph, c) for c in found)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_finds_cycles_hidden_in_functions_and_type_checking(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": "def later():\n    from . import c\n",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n",
        "pkg/d.py": "import os\nfrom pkg.a import something\n",
        "pkg/sub/__init__.py": "from pkg.sub.e import E\n",
        "pkg/sub/e.py": "E = 1\n",
        "pkg/f.py": "import other.g\n",
        "other/__init__.py": "from pkg.f import F\n",
        "other/g.py": "",
    })
    graph = import_graph(tmp_path, ["pkg", "other"])
    assert graph["pkg.b"] == {"pkg", "pkg.c"}
    assert graph["pkg.d"] == {"pkg", "pkg.a"}
    assert graph["pkg.f"] == {"pkg", "other", "other.g"}
    assert cycles(graph) == [
        ["other", "other.g", "pkg.f"],  # importing other.g runs other/__init__: pkg.f again
        ["pkg.a", "pkg.b", "pkg.c"],
        ["pkg.sub", "pkg.sub.e"],  # a module depends on its __init__, which imports it
    ]


def test_the_checker_passes_a_package_without_cycles(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": '"""Nothing imported here."""\n',
        "pkg/a.py": "from pkg import b\nfrom .b import name\n",
        "pkg/b.py": "import json\nname = 1\n",
    })
    graph = import_graph(tmp_path, ["pkg"])
    assert graph == {"pkg": set(), "pkg.a": {"pkg", "pkg.b"}, "pkg.b": {"pkg"}}
    assert cycles(graph) == []
