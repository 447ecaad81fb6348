"""The packages import one way: bspump <- cluster <- coordinator | workers.

``bspump`` is the user's API and runs the spec's examples in one process: it imports
nothing of the runtime, not even for type annotations (the runtime plugs in through
interfaces bspump defines: :mod:`bspump.arrays`, :mod:`bspump.state`). ``cluster``
holds what the coordinator and the workers share and starts them by module name, so it
imports neither. The coordinator and the workers meet over ZeroMQ only.

Every import statement counts: at module level, inside functions, and under
``if TYPE_CHECKING:``. Each statement is read from the source with :mod:`ast`, so an
import that runs only on some path (an error branch, a rarely used command) is checked
as well as those that run whenever the module is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bspump", "cluster", "coordinator", "workers")

# What each package must never import.
FORBIDDEN = {
    "bspump": {"cluster", "coordinator", "workers"},
    "cluster": {"coordinator", "workers"},
    "coordinator": {"workers"},
    "workers": {"coordinator"},
}

# Wrong-way imports being removed elsewhere; each names the file and the module it imports.
# coordinator/main.py's ``--in-process`` mode imports the worker's code; it goes away with
# that mode (issue 12, item 1: the coordinator side). Remove the entry when it has.
KNOWN: set[tuple[str, str]] = {("coordinator/main.py", "workers.runtime")}


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    here = path.relative_to(root).with_suffix("").parts
    if here[-1] == "__init__":
        here = here[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # ``from . import x`` in a/b/c.py is a.b; in a/b/__init__.py it is a.b too.
                is_init = path.name == "__init__.py"
                base = list(here) if is_init else list(here[:-1])
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return found


def wrong_way_imports(root: Path = ROOT) -> list[str]:
    """``file:line imports module`` for every import against the layering."""
    problems = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            for line, module in imported_modules(path, root):
                top = module.split(".")[0]
                if top in FORBIDDEN[package] and (rel, module) not in KNOWN:
                    problems.append(f"{rel}:{line} imports {module} ({package} -> {top})")
    return problems


def test_every_package_imports_only_the_layers_below_it() -> None:
    problems = wrong_way_imports()
    assert not problems, f"{len(problems)} wrong-way imports:\n" + "\n".join(problems)


@pytest.mark.parametrize("source, expected", [
    ("import cluster.shm\n", "cluster.shm"),
    ("def f():\n    from cluster.errors import ConfigError\n", "cluster.errors"),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cluster import wire\n",
     "cluster"),
])
def test_the_check_sees_imports_in_functions_and_type_checking_blocks(
        tmp_path: Path, source: str, expected: str) -> None:
    # The walk must find an import wherever it is written, or the test above proves nothing.
    (tmp_path / "bspump").mkdir()
    path = tmp_path / "bspump" / "piece.py"
    path.write_text(source, encoding="utf-8")
    assert expected in [m for _, m in imported_modules(path, tmp_path)]
    assert [p.split(" imports ")[0] for p in wrong_way_imports(tmp_path)] == [
        f"bspump/piece.py:{source.count(chr(10))}"]


def test_relative_imports_resolve_to_their_package(tmp_path: Path) -> None:
    (tmp_path / "workers").mkdir()
    path = tmp_path / "workers" / "loop.py"
    path.write_text("from . import runtime\nfrom .runtime import serve\n", encoding="utf-8")
    init = tmp_path / "workers" / "__init__.py"
    init.write_text("from .loop import x\n", encoding="utf-8")
    assert [m for _, m in imported_modules(path, tmp_path)] == ["workers", "workers.runtime"]
    assert [m for _, m in imported_modules(init, tmp_path)] == ["workers.loop"]
