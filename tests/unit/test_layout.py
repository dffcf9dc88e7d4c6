"""The layout's rules, read from the source (the import contracts themselves are checked by
``lint-imports`` in ``make lint``):

- each package lists its public names in ``__all__``, and every name listed exists;
- code outside a package imports only those names, from the package itself (never from one of
  its modules): the modules inside are free to move;
- no module imports, directly or through others, a module that imports it back (imports inside
  functions included: a cycle may not hide there).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("services", "api", "ingest", "stream")
#: The packages whose insides are private to them. ``services.entrypoints`` is the top: nothing
#: imports it.
PACKAGES = (
    "api",
    "ingest.http",
    "ingest.mqtt",
    "stream",
    *sorted(
        f"services.{p.name}"
        for p in (ROOT / "services").iterdir()
        if (p / "__init__.py").exists() and p.name != "entrypoints"
    ),
)


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


MODULES = {
    _module_name(path): path for source in SOURCES for path in sorted((ROOT / source).rglob("*.py"))
}


def _package_of(module: str) -> str | None:
    for package in sorted(PACKAGES, key=len, reverse=True):
        if module == package or module.startswith(package + "."):
            return package
    return None


def _imports(module: str) -> list[tuple[int, str, list[str]]]:
    """``(line, imported module, names)`` of every absolute import of ``module``."""
    tree = ast.parse(MODULES[module].read_text())
    found: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name, []) for a in node.names)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_lists_its_public_names(package: str) -> None:
    module = importlib.import_module(package)
    public = getattr(module, "__all__", None)
    assert isinstance(public, list), f"{package} has no __all__"
    assert public == sorted(set(public), key=public.index), f"{package}.__all__ repeats a name"
    missing = [name for name in public if not hasattr(module, name)]
    assert not missing, f"{package}.__all__ names what it does not have: {missing}"


def test_outside_code_imports_only_public_names() -> None:
    exported = {p: set(importlib.import_module(p).__all__) for p in PACKAGES}
    wrong: list[str] = []
    for module in MODULES:
        home = _package_of(module)
        for line, target, names in _imports(module):
            package = _package_of(target)
            if package is None or package == home or module == package:
                continue
            where = f"{MODULES[module].relative_to(ROOT)}:{line}"
            if target != package:
                wrong.append(f"{where}: imports {target}, inside {package}")
            elif not names:
                wrong.append(f"{where}: imports {package} as a whole")
            else:
                wrong += [
                    f"{where}: {package}.{n} is not in its __all__"
                    for n in names
                    if n not in exported[package]
                ]
    assert not wrong, "\n".join(wrong)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for module in MODULES:
        for _, target, names in _imports(module):
            targets = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            if target in MODULES and len(targets) < len(names) or not names:
                targets.append(target)
            graph[module].update(t for t in targets if t in MODULES and t != module)
    return graph


def test_no_module_is_part_of_an_import_cycle() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"
