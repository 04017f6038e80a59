"""The import graph keeps workflows apart (issue 12: a workflow is one package and nothing else names it).

A workflow package imports no other workflow package, except what a workflow it declares in `depends_on` hands
over: that workflow's result (its ``reference`` module) and its workflow object (its ``workflow`` module). Code
shared by several workflows lives in neutral packages (node.imaging, node.dose, node.report, ...), which import
no workflow; only the registry (the composition root) names every workflow. Imports inside functions count.
"""
from __future__ import annotations

import ast
from pathlib import Path

from node.registry import WORKFLOWS

NODE = Path(__file__).resolve().parents[2] / "node"
#: what a workflow may import from a workflow it depends on
HANDED_OVER = ("reference", "workflow")
#: modules outside the workflow packages that may name them
COMPOSITION_ROOT = {"node.registry"}


def _package(module: str) -> str:
    return module.split(".")[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import in `path`; `from node.x import y` counts as node.x.y when y is a
    module of the package node.x."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            package_dir = NODE.parent.joinpath(*node.module.split("."))
            for a in node.names:
                is_module = package_dir.is_dir() and ((package_dir / f"{a.name}.py").exists()
                                                      or (package_dir / a.name).is_dir())
                out.append((node.lineno, f"{node.module}.{a.name}" if is_module else node.module))
    return out


def _module_of(path: Path) -> str:
    return ".".join(("node", *path.relative_to(NODE).with_suffix("").parts))


def _violations(files: list[tuple[Path, str]]) -> tuple[list[str], int]:
    """Forbidden imports of `files` ((path, module name) pairs) and the number of allowed hand-overs."""
    packages = {_package(type(w).__module__): w for w in WORKFLOWS}
    by_name = {w.name: _package(type(w).__module__) for w in WORKFLOWS}
    found, allowed = [], 0
    for path, module in files:
        parts = module.split(".")
        own = parts[1] if len(parts) > 2 and parts[1] in packages else None
        for line, target in _imports(path):
            tparts = target.split(".")
            if tparts[0] != "node" or len(tparts) < 2 or tparts[1] not in packages or tparts[1] == own:
                continue
            where = f"{module}:{line} imports {target}"
            if own is None:
                if module not in COMPOSITION_ROOT:
                    found.append(f"{where} (a neutral module names a workflow)")
                continue
            deps = {by_name[d] for d in packages[own].depends_on}
            if tparts[1] not in deps:
                found.append(f"{where} ({own} does not depend on {tparts[1]})")
            elif len(tparts) < 3 or tparts[2] not in HANDED_OVER:
                found.append(f"{where} (only {', '.join(HANDED_OVER)} of a dependency may be imported)")
            else:
                allowed += 1
    return found, allowed


def test_no_workflow_package_imports_another() -> None:
    found, allowed = _violations([(p, _module_of(p)) for p in sorted(NODE.rglob("*.py"))])
    assert found == [], "\n".join(found)
    # the walk sees the declared hand-overs (MAA <- perfusion, post-therapy <- MAA, plan evaluation <- GSA)
    assert allowed >= 3


def test_the_check_sees_forbidden_imports(tmp_path: Path) -> None:
    """The checker itself, on modules written here: a neutral module naming a workflow, a workflow importing a
    workflow it does not depend on, and one importing a dependency's internals are each reported."""
    probe = tmp_path / "probe.py"
    probe.write_text("import numpy\n\n\ndef f() -> None:\n    from node.gsa.liver import find_liver\n"
                     "    from node.perfusion import reference\n")
    found, allowed = _violations([(probe, "node.dose.probe"), (probe, "node.maa.probe"),
                                  (probe, "node.y90post.probe"), (probe, "node.registry")])
    assert found == ["node.dose.probe:5 imports node.gsa.liver (a neutral module names a workflow)",
                     "node.dose.probe:6 imports node.perfusion.reference (a neutral module names a workflow)",
                     "node.maa.probe:5 imports node.gsa.liver (maa does not depend on gsa)",
                     "node.y90post.probe:5 imports node.gsa.liver (y90post does not depend on gsa)",
                     "node.y90post.probe:6 imports node.perfusion.reference (y90post does not depend on perfusion)"]
    assert allowed == 1  # node.maa.probe's import of the perfusion result it depends on
