"""The test tree's import layout (issue 12 point 6): every test file runs alone, nothing edits sys.path, bench/
does not import from tests/.

A test module that imports a helper or another test module by its bare name (``from test_report_sr import ...``)
finds it through pyproject's ``pythonpath`` only; pytest's own path insertion would hide a missing entry whenever
the other module's folder happened to be collected first, and the file would then fail when run alone.
"""
from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imported_top_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_every_test_module_import_resolves_through_the_configured_pythonpath() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    search = [(ROOT / p).resolve() for p in config["tool"]["pytest"]["ini_options"]["pythonpath"]]
    local = {p.stem: p.parent.resolve() for p in (ROOT / "tests").rglob("*.py") if "data" not in p.parts}
    unresolved = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if "data" in path.relative_to(ROOT / "tests").parts:
            continue
        for name in _imported_top_names(path) & set(local):
            if local[name] not in search:
                unresolved.append(f"{path.relative_to(ROOT)} imports {name} from {local[name].relative_to(ROOT)}")
    assert not unresolved, "not on [tool.pytest.ini_options] pythonpath: " + "; ".join(unresolved)


def test_no_sys_path_edits_and_bench_does_not_import_tests() -> None:
    edits = [str(p.relative_to(ROOT)) for folder in ("tests", "bench", "testpeers")
             for p in (ROOT / folder).rglob("*.py")
             if "sys.path" in p.read_text() and p.resolve() != Path(__file__).resolve()]
    assert not edits
    test_modules = {p.stem for p in (ROOT / "tests").rglob("*.py")} | {"tests", "conftest"}
    from_tests = [f"{p.relative_to(ROOT)}: {sorted(_imported_top_names(p) & test_modules)}"
                  for p in (ROOT / "bench").rglob("*.py") if _imported_top_names(p) & test_modules]
    assert not from_tests
