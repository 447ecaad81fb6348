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
import subprocess
import sys
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

# Wrong-way imports tolerated for now, each as (file, imported module). None is left:
# keep it empty.
KNOWN: set[tuple[str, str]] = set()


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


def test_importing_all_of_bspump_loads_no_runtime_module() -> None:
    # The same direction, seen from a fresh interpreter: whatever bspump imports, however
    # indirectly, must not bring in the runtime.
    script = (
        "import importlib, pkgutil, sys, bspump\n"
        "for m in pkgutil.walk_packages(bspump.__path__, 'bspump.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted(m for m in sys.modules\n"
        "             if m.split('.')[0] in ('cluster', 'coordinator', 'workers')))\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "[]", f"importing bspump loaded {out}"


def runtime_import_cycles(package: str, root: Path = ROOT) -> list[list[str]]:
    """Groups of ``package``'s modules that import each other in a circle when they run
    (imports under ``if TYPE_CHECKING:`` do not run, so they do not count)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test)
                       for stmt in node.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            # The package itself is loaded before any of its modules: not a cycle.
            edges[name] |= {t for t in targets if t in modules and t not in (name, package)}
    cycles: list[list[str]] = []
    for start in sorted(modules):
        if any(start in c for c in cycles) or start not in reachable(edges, start):
            continue
        # Its cycle: the modules it reaches that reach it again.
        cycles.append(sorted({m for m in reachable(edges, start)
                              if start in reachable(edges, m)}))
    return cycles


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or not."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in edges[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_bspump_modules_do_not_import_each_other_in_a_circle() -> None:
    assert runtime_import_cycles("bspump") == []


def test_the_cycle_check_finds_a_cycle(tmp_path: Path) -> None:
    (tmp_path / "bspump").mkdir()
    (tmp_path / "bspump" / "a.py").write_text("from bspump.b import x\n", encoding="utf-8")
    (tmp_path / "bspump" / "b.py").write_text("import bspump.a\n", encoding="utf-8")
    (tmp_path / "bspump" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import bspump.a\n",
        encoding="utf-8")
    assert runtime_import_cycles("bspump", tmp_path) == [["bspump.a", "bspump.b"]]


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
