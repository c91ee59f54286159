"""The installer runs inside image builds with only the base's Python, PyYAML and py-rattler,
from the files ``lockdock.installer.INSTALLER_SOURCES`` names. Both checks here fail on any
other import: the modules really loaded by importing every installer module in a fresh
interpreter (the import closure), and every import statement in those files, including the
ones inside functions that only run later."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import lockdock
from lockdock.installer import INSTALLER_SOURCES

SRC = Path(lockdock.__file__).resolve().parent
THIRD_PARTY = frozenset({"yaml", "_yaml", "rattler"})  # PyYAML (and its C part), py-rattler
#: Imports allowed in one file only, and why the installer never reaches them.
EXEMPT = {
    # progress.status/bar draw with rich on a terminal; the installer calls only
    # progress.interactive() (rattler's own progress switch), never status() or bar().
    "progress.py": frozenset({"rich.console", "rich.progress"}),
}


def _installer_files() -> list[Path]:
    files: list[Path] = []
    for entry in INSTALLER_SOURCES:
        path = SRC / entry
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def _module_name(path: Path) -> str:
    parts = ["lockdock", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


ALLOWED_LOCKDOCK = frozenset(_module_name(p) for p in _installer_files())


def _problem(module: str) -> str | None:
    top = module.split(".")[0]
    if top == "lockdock":
        return None if module in ALLOWED_LOCKDOCK else f"{module} (not in INSTALLER_SOURCES)"
    if top in sys.stdlib_module_names or top in THIRD_PARTY:
        return None
    if top == "cython_runtime" or top.startswith("_cython_"):
        return None  # registered by Cython-compiled extensions (PyYAML's _yaml), not imports
    return module


def test_the_allowed_set_is_what_installer_sources_names() -> None:
    assert {"lockdock", "lockdock.errors", "lockdock.fsutil", "lockdock.progress",
            "lockdock.installer", "lockdock.installer.install", "lockdock.installer.store",
            "lockdock.installer.lockfile"} <= ALLOWED_LOCKDOCK  # fmt: skip
    assert "lockdock.cli" not in ALLOWED_LOCKDOCK and "lockdock.image" not in ALLOWED_LOCKDOCK
    assert _problem("click") == "click" and _problem("lockdock.cli") is not None
    assert _problem("json") is None and _problem("rattler.platform") is None


def test_import_closure_of_every_installer_module() -> None:
    modules = sorted(_module_name(p) for p in _installer_files())
    code = (
        "import importlib, json, sys\n"
        "before = set(sys.modules)\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert set(modules) <= set(loaded) | {"lockdock"}  # it really imported them
    assert "yaml" in loaded  # rattler is imported where it is used, inside functions
    assert [m for m in loaded if _problem(m)] == []


def _imported_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    module_name = _module_name(path)
    package = module_name if path.name == "__init__.py" else module_name.rsplit(".", 1)[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module.startswith("lockdock"):
                # ``from lockdock.installer import store`` names a module, not an attribute
                names.extend(
                    f"{module}.{a.name}" if f"{module}.{a.name}" in ALLOWED_LOCKDOCK else module
                    for a in node.names
                )
            else:
                names.append(module)
    return names


def test_every_import_statement_in_the_installer_files() -> None:
    files = _installer_files()
    found = {str(p.relative_to(SRC)): _imported_names(p) for p in files}
    assert any("rattler" in n for names in found.values() for n in names)
    problems = {
        f: [n for n in names if _problem(n) and n not in EXEMPT.get(f, ())]
        for f, names in found.items()
    }
    assert {f: p for f, p in problems.items() if p} == {}
