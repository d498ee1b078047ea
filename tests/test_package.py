"""The house rules of the package: no import circles, no module over 500 lines, components about 400 lines or less,
the onnxruntime helpers import nothing of nlu-bert, and importing the package stays cheap."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set

import pytest

from nlu_testing import REPO_ROOT

PACKAGE = REPO_ROOT / "nlu_bert"
MAX_LINES = 500
ADAPTER_LINES = 420  # "about 400": the Rasa adapters only


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: Dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str) -> Set[str]:
    """The nlu_bert modules ``name`` imports, at the top or inside functions (a lazy import is still an edge)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for alias in node.names:  # `from nlu_bert.bert import native` imports the module nlu_bert.bert.native
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_import_graph_is_read() -> None:
    assert "nlu_bert.bert.native" in GRAPH["nlu_bert.bert.predictors"]
    assert "nlu_bert.onnx_tools" in GRAPH["nlu_bert.bert.native"]  # a lazy import inside a method
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles() -> None:
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_500_lines(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]} has {lines} lines: split it by job"


@pytest.mark.parametrize("name", [n for n in MODULES if n.startswith("nlu_bert.classifiers.") and not n.endswith("s")])
def test_the_components_are_thin_rasa_adapters(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= ADAPTER_LINES, (
        f"{MODULES[name]} has {lines} lines: move what is not Rasa glue into bert/ or fewshot/"
    )


@pytest.mark.parametrize("name", ["nlu_bert.onnx_tools", "nlu_bert.hardware", "nlu_bert.text", "nlu_bert.splits"])
def test_the_shared_helpers_import_nothing_of_the_package(name: str) -> None:
    assert GRAPH[name] == set()


def test_importing_the_package_and_its_components_imports_neither_torch_nor_transformers() -> None:
    code = (
        "import sys, nlu_bert; nlu_bert.BertIntentClassifier; nlu_bert.GPT2FewShotIntentClassifier; "
        "import nlu_bert.bert.serving, nlu_bert.fewshot.serving; "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["False", "False"]
