"""The package's layers import one way, downward (read from the source with ``ast``).

Every ``import`` counts wherever it stands: a function-level import placed to dodge a cycle is
still an upward import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rsbook"

#: Bottom to top. A module may import its own layer and the layers below it, nothing above.
#: ``core`` is at the bottom: it imports nothing else from rsbook (no storage, no torchrun, no book).
LAYERS = ("core", "infra", "models", "methods", "training", "runs", "bench", "book", "papers", "cli", "")


def layer_of(module: str) -> int:
    """The rank of a dotted module name: its first subpackage under ``rsbook`` (``""`` for the package
    facade ``rsbook/__init__.py`` and ``rsbook/__main__.py``, which sit on top)."""
    parts = module.split(".")
    assert parts[0] == "rsbook", module
    head = parts[1] if len(parts) > 1 else ""
    head = "" if head in ("__main__",) else head
    if head not in LAYERS:
        raise AssertionError(f"rsbook.{head} belongs to no layer; add it to LAYERS in {__file__}")
    return LAYERS.index(head)


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, imported rsbook module)`` for every import in ``source``, relative ones resolved."""
    package = module if is_package else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "rsbook"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "rsbook":
                # ``from .. import x`` may name a subpackage: count each name as a module of it
                if not node.module and node.level:  # a name the facade defines (``__version__``) is the facade's
                    out += [(node.lineno, f"{target}.{a.name}" if target != "rsbook" or a.name in LAYERS else target)
                            for a in node.names]
                else:
                    out.append((node.lineno, target))
    return out


def upward(source: str, module: str, is_package: bool = False) -> list[str]:
    me = layer_of(module)
    return [f"{module}:{line} imports {target} ({LAYERS[layer_of(target)] or 'the package facade'} is above "
            f"{LAYERS[me] or 'the facade'})" for line, target in imports(source, module, is_package) if layer_of(target) > me]


def test_every_import_runs_downward():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        problems += upward(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not problems, "upward imports:\n" + "\n".join(problems)


def test_every_module_belongs_to_a_layer():
    for path in PACKAGE.rglob("*.py"):
        layer_of(module_name(path))  # raises for a module outside every layer


@pytest.mark.parametrize("source, module", [
    ("from ..runs.runner import certify_dataset\n", "rsbook.core.certify"),        # core reaching up to runs
    ("def f():\n    from ..training.fit import Batch\n", "rsbook.methods.soft"),   # a function-level import dodging a cycle
    ("from .. import __version__\n", "rsbook.infra.provenance"),                   # the package facade, from below
    ("import rsbook.book.claims\n", "rsbook.runs.runner"),                          # absolute form
])
def test_the_scan_catches_an_upward_import(source, module):
    assert upward(source, module), "the scan missed an upward import"


def test_the_scan_allows_downward_and_sideways_imports():
    assert not upward("from ..core.noise import Gaussian\nfrom .shards import merge_into\n", "rsbook.runs.runner")
