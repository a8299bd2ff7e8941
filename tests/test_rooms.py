"""The rooms' one-way arrows and no import cycles, read from the source (function-level imports too)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

_FOLDERS = {"torchscope": "torchscope", "profiler": "torchscope.profiler", "integrations": "torchscope.integrations",
            "analyzers": "torchscope.analyzers", "dashboard": "torchscope.dashboard"}

#: What each room may import of the others (and of torch). The CLI may use every room.
_FORBIDDEN = {
    "torchscope.analyzers": ("torch", "torchscope.profiler", "torchscope.integrations", "torchscope.dashboard",
                             "torchscope.cli"),
    "torchscope.dashboard": ("torch", "torchscope.profiler", "torchscope.integrations", "torchscope.cli"),
    "torchscope.profiler": ("torchscope.analyzers", "torchscope.integrations", "torchscope.dashboard", "torchscope.cli"),
    # a framework callback drives the profiler; it analyzes nothing and serves nothing
    "torchscope.integrations": ("torchscope.analyzers", "torchscope.dashboard", "torchscope.cli"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in _FOLDERS.items():
        for py in sorted((REPO_ROOT / folder).rglob("*.py")):
            parts = list(py.relative_to(REPO_ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = py
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules (and `torch`) that ``name`` imports anywhere in its source."""
    is_pkg = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            if t == "torch" or t.startswith("torch."):
                found.add("torch")
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def test_rooms_import_only_what_they_may() -> None:
    bad = []
    for name, deps in _graph().items():
        for room, forbidden in _FORBIDDEN.items():
            if name == room or name.startswith(room + "."):
                bad += [f"{name} -> {d}" for d in deps if any(d == f or d.startswith(f + ".") for f in forbidden)]
    assert not bad, bad


def test_no_import_cycles() -> None:
    graph = _graph()
    # A package's __init__ re-exporting its own modules is not a cycle of logic: drop parent edges.
    edges = {m: {d for d in deps if not m.startswith(d + ".") and d in graph} for m, deps in graph.items()}
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    assert not cycles, cycles


def test_the_graph_sees_function_level_imports() -> None:
    graph = _graph()
    # torchscope/__init__ imports the recording side inside __getattr__ only.
    assert "torchscope.profiler" in graph["torchscope"]
    assert "torch" in graph["torchscope.profiler.annotations"]
