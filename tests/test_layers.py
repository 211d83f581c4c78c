"""The package's layers, read from the source with `ast` (tests/layers.py): the import rule, and
dvc.yaml's `deps` against each stage's import closure (issue #23)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from layers import PACKAGE, ROOT, closure, imports, module_name, module_path, modules, trivial

# Libraries by role, lowest first: a module imports its own layer or lower ones, never a higher one.
LAYERS = {"core": 0, "data": 1, "gan": 1, "training": 2, "evaluation": 2, "bench": 3, "stages": 4}
# config validates params.yaml's variant names against the variant table (imported inside the function)
ALLOWED_UPWARD = {("dcganlab.core.config", "dcganlab.gan.variants")}


def _layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else None


def _graph() -> dict[str, frozenset[str]]:
    return {module_name(path): imports(path) for path in modules()}


def test_every_module_sits_in_a_layer():
    """Only the package's entry points (cli, __main__, __init__) live outside the layer folders."""
    loose = {module_name(p) for p in modules()} - {n for n in map(module_name, modules()) if _layer(n)}
    assert loose == {"dcganlab", "dcganlab.cli", "dcganlab.__main__"} | {f"dcganlab.{layer}" for layer in LAYERS}


def test_stages_import_libraries_libraries_never_import_stages_no_stage_imports_another():
    bad = []
    for name, targets in _graph().items():
        for target in targets:
            if target.startswith("dcganlab.stages.") and name != "dcganlab.cli":
                bad.append(f"{name} imports the stage {target}")
            if target == "dcganlab.cli" and name != "dcganlab.__main__":
                bad.append(f"{name} imports the command line")
    assert bad == []


def test_libraries_import_only_their_own_layer_or_lower_ones():
    bad = []
    for name, targets in _graph().items():
        here = _layer(name)
        if here is None:
            continue
        for target in targets:
            there = _layer(target)
            if there and LAYERS[there] > LAYERS[here] and (name, target) not in ALLOWED_UPWARD:
                bad.append(f"{name} ({here}) imports {target} ({there})")
    assert bad == []


def test_the_graph_sees_imports_inside_functions():
    """Most stage imports in this package are lazy (inside the commands): the rule reads them too."""
    from layers import _targets

    tree = ast.parse("def f():\n    from dcganlab.stages import evaluate\n    from dcganlab.core import paths\n")
    found = {t for node in ast.walk(tree) for t in _targets(node, "dcganlab.training.loop")}
    assert found == {"dcganlab.stages", "dcganlab.stages.evaluate", "dcganlab.core", "dcganlab.core.paths"}


# ---------------------------------------------------------------- dvc.yaml deps
def _cli_helpers() -> tuple[str, ...]:
    """cli.py's shared helpers (`_run`, `_params`...): every command runs them, so what they import
    is in every stage's closure. cli.py itself is not a dep: its commands only parse and print."""
    tree = ast.parse((PACKAGE / "cli.py").read_text())
    return tuple(n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("_"))


def stage_closure(command: str) -> set[Path]:
    """The source files `dcganlab <command>` runs: its stage module, what cli's helpers import, and
    everything those import, transitively. Inert files (a docstring, `__version__`) are left out."""
    start = {f"dcganlab.stages.{command}"} | set(imports(PACKAGE / "cli.py", _cli_helpers()))
    return {p for p in closure(start) if not trivial(p)}


def _dvc_stages() -> dict[str, dict]:
    """Each dvc.yaml stage (a foreach's template once) with its command's name."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, stage in spec.items():
        body = stage.get("do", stage)
        out[name] = {"command": body["cmd"].split()[1], "deps": body.get("deps", [])}
    return out


def _source_files(deps: list) -> dict[str, set[Path]]:
    """dep -> the .py files it names (a file, or every .py under a folder), src/dcganlab deps only."""
    out = {}
    for dep in deps:
        if str(dep).startswith("src/dcganlab"):
            path = ROOT / dep
            assert path.exists(), f"dvc.yaml names {dep}, which does not exist"
            out[dep] = set(path.rglob("*.py")) if path.is_dir() else {path}
    return out


CORE = "src/dcganlab/core"  # the foundation (params, paths, files, tracking): one folder dep for all stages


@pytest.mark.parametrize("stage", list(_dvc_stages()))
def test_a_stages_deps_cover_its_import_closure_and_little_beyond(stage):
    """Every file the stage's command runs is a dep (else editing it reruns nothing), and every
    dep outside core/ is run by it (else editing it reruns stages it cannot change). core/ is
    one folder dep for every stage: its modules outside a stage's closure are the slack."""
    spec = _dvc_stages()[stage]
    named = _source_files(spec["deps"])
    covered = set().union(*named.values()) if named else set()
    needed = stage_closure(spec["command"])
    missing = sorted(str(p.relative_to(ROOT)) for p in needed - covered)
    assert missing == [], f"{stage}: dvc.yaml deps miss {missing}"
    beyond = sorted(
        str(p.relative_to(ROOT))
        for dep, files in named.items()
        if dep != CORE
        for p in files - needed
        if not trivial(p)
    )
    assert beyond == [], f"{stage}: deps outside its import closure: {beyond}"


def test_the_deps_check_catches_a_missing_library():
    """Today's (pre-#23) gap: the train stage ran files.py, locks.py, atomic.py and cpu_share.py
    without naming them."""
    needed = stage_closure("train")
    assert {PACKAGE / "core" / f for f in ("files.py", "locks.py", "atomic.py", "cpu_share.py")} <= needed
    assert module_path("dcganlab.training.loop") in needed and module_path("dcganlab.stages.evaluate") not in needed
