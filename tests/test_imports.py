"""fastdet's modules import each other without circles: the graph of their module-level imports,
read from the source (nothing is imported), is acyclic, and no submodule imports the package root
(the root re-exports; it is imported by none). An import inside a function (an optional heavy
dependency, loaded when it is used) is not part of the graph."""

from __future__ import annotations

import ast
import importlib.machinery
from collections.abc import Iterator, Mapping
from pathlib import Path

import fastdet
import pytest

ROOT = "fastdet"
PACKAGE = Path(fastdet.__file__).parent


def _module_names(package: Path) -> dict[str, Path | None]:
    """Module name -> source file, for every module of the package (compiled ones: None)."""
    names: dict[str, Path | None] = {}
    for path in package.rglob("*.py"):
        parts = (ROOT, *path.relative_to(package).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    # Compiled modules: their extension file, or (an editable install keeps that elsewhere)
    # their stub.
    for suffix in (*importlib.machinery.EXTENSION_SUFFIXES, ".pyi"):
        for path in package.rglob(f"*{suffix}"):
            parts = (ROOT, *path.parent.relative_to(package).parts, path.name[: -len(suffix)])
            names.setdefault(".".join(parts), None)
    return names


def _module_level(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports that run when the module is imported (not those inside functions)."""
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        pending.extend(ast.iter_child_nodes(node))


def _imported(
    name: str, path: Path, node: ast.Import | ast.ImportFrom, known: set[str]
) -> set[str]:
    """The package's modules an import statement of module `name` (file `path`) loads."""

    def nearest(target: str) -> str | None:
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        # `from package import module` loads the module; `from module import name` the module.
        targets = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
            for alias in node.names
        ]
    found = {nearest(t) for t in targets if t == ROOT or t.startswith(ROOT + ".")}
    return {t for t in found if t is not None and t != name}


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module name -> the package's modules it imports at module level."""
    modules = _module_names(package)
    known = set(modules)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        if path is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in _module_level(tree):
            graph[name] |= _imported(name, path, node, known)
    return graph


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None when the graph is acyclic."""
    state: dict[str, str] = {}  # "open" while on the path, "done" once fully explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state:
                cycle = visit(target)
                if cycle is not None:
                    return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle is not None:
                return cycle
    return None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(PACKAGE)


def test_the_graph_holds_every_layer(graph) -> None:
    # The graph is read from the files it should be read from: the layers are there, with the
    # imports that tie them together.
    assert {"fastdet.ops.postprocess", "fastdet.pipeline.detector", "fastdet.tools.cli"} <= set(
        graph
    )
    assert "fastdet._core" in graph["fastdet.ops.postprocess"]
    assert "fastdet.pipeline.model_spec" in graph["fastdet.pipeline.detector"]


def test_no_import_circles(graph) -> None:
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_no_submodule_imports_the_package_root(graph) -> None:
    importers = sorted(name for name, targets in graph.items() if ROOT in targets)
    assert importers == [], f"{importers} import the package root (import the submodule instead)"


def test_the_check_sees_circles_and_lazy_imports(tmp_path) -> None:
    package = tmp_path / ROOT
    (package / "ops").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "ops" / "__init__.py").write_text("")
    (package / "ops" / "a.py").write_text("from . import b\n")
    (package / "ops" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fastdet.ops.c import C\n"
    )
    (package / "ops" / "c.py").write_text("def f():\n    from fastdet.ops import a\n")
    found = import_graph(package)
    assert found["fastdet.ops.a"] == {"fastdet.ops.b"}
    assert found["fastdet.ops.b"] == {"fastdet.ops.c"}
    assert found["fastdet.ops.c"] == set()  # an import inside a function
    assert find_cycle(found) is None
    (package / "ops" / "c.py").write_text("import fastdet.ops.a\n")
    assert find_cycle(import_graph(package)) == [
        "fastdet.ops.a",
        "fastdet.ops.b",
        "fastdet.ops.c",
        "fastdet.ops.a",
    ]
