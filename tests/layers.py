"""The package's import graph, read from the source with `ast` (nothing is imported): what
tests/test_layers.py checks the layering and dvc.yaml's `deps` against."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "dcganlab"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_path(name: str) -> Path | None:
    base = PACKAGE.parent.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _targets(node: ast.AST, here: str) -> set[str]:
    """The dcganlab modules one import statement loads (`from pkg import mod` names a module)."""
    found = set()
    if isinstance(node, ast.Import):
        found |= {a.name for a in node.names if a.name.split(".")[0] == "dcganlab"}
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: from the importing module's package
            package = here.split(".")[: -node.level] if not here.endswith("__init__") else here.split(".")
            base = ".".join([*package, *([base] if base else [])])
        if base.split(".")[0] == "dcganlab":
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names if module_path(f"{base}.{a.name}")}
    return {name for name in found if module_path(name)}


@cache
def imports(path: Path, only: tuple[str, ...] | None = None) -> frozenset[str]:
    """Every dcganlab module `path` imports, at module level or inside functions; with `only`,
    just the imports inside those top-level functions (and none at module level)."""
    tree = ast.parse(path.read_text())
    here = module_name(path)
    if only is None:
        nodes = list(ast.walk(tree))
    else:
        nodes = [n for top in tree.body if isinstance(top, ast.FunctionDef) and top.name in only for n in ast.walk(top)]
    return frozenset(t for node in nodes for t in _targets(node, here))


def _packages(name: str) -> set[str]:
    """A module's parent packages: importing it runs their __init__.py first."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def closure(start: set[str]) -> set[Path]:
    """The files the modules in `start` load, transitively (packages' __init__.py included)."""
    seen: set[str] = set()
    todo = set(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo |= _packages(name) - seen
        todo |= set(imports(module_path(name))) - seen
    return {module_path(name) for name in seen}


def trivial(path: Path) -> bool:
    """A file with nothing but a docstring, `from __future__` and dunder constants (`__version__`):
    no stage's behaviour depends on it."""

    def inert(node: ast.stmt) -> bool:
        if isinstance(node, ast.Expr):
            return isinstance(node.value, ast.Constant)
        if isinstance(node, ast.ImportFrom):
            return node.module == "__future__"
        return (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and all(isinstance(t, ast.Name) and t.id.startswith("__") for t in node.targets)
        )

    return all(inert(node) for node in ast.parse(path.read_text()).body)
