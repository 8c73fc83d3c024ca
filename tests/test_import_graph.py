"""The core's import graph: no cycles, and every import points down the layers.

The graph is read from the source with ``ast`` (every ``import`` statement, including the ones
inside functions: a lazy import is still a dependency), between the modules of
``core/paddlellm``. The layers, bottom to top, are the ones ``docs/architecture.md`` draws; a
module may import its own layer and the ones below it, never one above.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "core" / "paddlellm"

#: bottom to top; a module belongs to the layer of its longest matching prefix
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("paddlellm.errors", "paddlellm.version", "paddlellm.interfaces",
                    "paddlellm.hookspecs", "paddlellm.kinds", "paddlellm.hub",
                    "paddlellm.testing.contract")),
    ("plugin host", ("paddlellm.plugin",)),
    ("checkpoints and text", ("paddlellm.checkpoint", "paddlellm.tokenizer", "paddlellm.data")),
    ("modeling", ("paddlellm.modeling", "paddlellm.testing")),
    ("training", ("paddlellm.training", "paddlellm.loggers")),
    ("inference", ("paddlellm.engine", "paddlellm.serving")),
    ("interface", ("paddlellm.cli", "paddlellm.plugin.builtin", "paddlellm.__main__",
                   "paddlellm.api", "paddlellm")),
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in CORE.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """module -> the core modules it imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1]
                                    + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer of LAYERS: add it to one "
                             "(and to docs/architecture.md)")
    return best


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_core_has_no_import_cycle():
    assert cycles(import_graph()) == []


def test_every_module_is_in_a_layer():
    for module in _modules():
        layer_of(module)


def test_imports_point_down_the_layers():
    upward = []
    for module, targets in import_graph().items():
        for target in targets:
            if target == module.rpartition(".")[0] or module == target.rpartition(".")[0]:
                continue  # a package and its own modules
            if layer_of(target) > layer_of(module):
                upward.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
                              f"({LAYERS[layer_of(target)][0]})")
    assert upward == []


def test_the_checks_catch_what_they_claim():
    """The detectors themselves: a cycle and an upward import are found."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("paddlellm.modeling.kv_manager") < layer_of("paddlellm.engine.llm_engine")
    assert layer_of("paddlellm.checkpoint.reader") < layer_of("paddlellm.serving.app")


@pytest.mark.parametrize("doc", ["docs/architecture.md"])
def test_the_architecture_page_names_every_layer(doc):
    text = (CORE.parents[1] / doc).read_text(encoding="utf-8")
    for name, prefixes in LAYERS:
        assert name in text, f"{doc} does not describe the layer {name!r}"
