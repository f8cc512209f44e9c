"""The package's import graph reads top to bottom (issue 23).

cli -> demo/bench -> engine/infer/export/viz/convert -> model/eval -> data -> runtime/config.
A module may import from its own layer and the layers below it, never from a layer above; and
outside ``pavenet/cli`` no function imports a module, except an optional dependency that is
only needed on that path.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pavenet"

#: top to bottom; a name is the first component under ``pavenet`` (package or module)
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"cli", "__main__"}),
    frozenset({"demo", "bench"}),
    frozenset({"engine", "infer", "export", "viz", "convert"}),
    frozenset({"model", "eval"}),
    frozenset({"data"}),
    frozenset({"runtime", "config", "config_rules", "config_schema", "errors"}),
)
#: imports a function may make: optional dependencies, loaded only where they are used
OPTIONAL = ("onnx", "onnxruntime", "onnxscript", "triton")


def layer_of(part: str) -> int:
    for depth, names in enumerate(LAYERS):
        if part in names:
            return depth
    raise AssertionError(f"pavenet/{part} has no layer in tests/test_layers.py: add it")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel == Path("__init__.py"):
            continue  # the package root re-exports the public API lazily
        out.append((rel.parts[0].removesuffix(".py"), path))
    return out


def _absolute(node: ast.ImportFrom, path: Path) -> str:
    """The dotted module an ``ImportFrom`` reads, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    base = package[:-node.level]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(tree: ast.AST, path: Path):
    """(imported module, line, inside a function) for every import of ``tree``."""
    def walk(node: ast.AST, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, in_function
            elif isinstance(child, ast.ImportFrom):
                yield _absolute(child, path), child.lineno, in_function
            yield from walk(child, inner)
    yield from walk(tree, False)


def _violations() -> tuple[list[str], list[str]]:
    upward, local = [], []
    for part, path in _modules():
        own = layer_of(part)
        for module, line, in_function in _imports(ast.parse(path.read_text()), path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
            names = module.split(".")
            if names[0] == "pavenet" and len(names) > 1 and layer_of(names[1]) < own:
                upward.append(where)
            if in_function and part != "cli" and not module.startswith(OPTIONAL):
                local.append(where)
    return upward, local


def test_every_package_has_a_layer_and_the_layers_are_disjoint() -> None:
    names = [name for layer in LAYERS for name in layer]
    assert len(names) == len(set(names))
    for part, _ in _modules():
        layer_of(part)


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward, _ = _violations()
    assert upward == []


def test_no_function_local_imports_outside_the_cli() -> None:
    _, local = _violations()
    assert local == []


def test_the_checker_sees_an_upward_and_a_local_import(tmp_path, monkeypatch) -> None:
    fake = tmp_path / "pavenet"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "bad.py").write_text("from pavenet.engine import trainer\n"
                                          "def f():\n    from ..model import network\n")
    (fake / "engine").mkdir()
    (fake / "engine" / "ok.py").write_text("from pavenet.data import bad\nimport onnx\n"
                                           "def g():\n    import onnxruntime\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    upward, local = _violations()
    assert upward == ["pavenet/data/bad.py:1 imports pavenet.engine", "pavenet/data/bad.py:3 imports pavenet.model"]
    assert local == ["pavenet/data/bad.py:3 imports pavenet.model"]
    with pytest.raises(AssertionError, match="has no layer"):
        layer_of("nowhere")
