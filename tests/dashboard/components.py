"""Test helpers for Dash output: a component tree as the browser receives it, its text, a counting loader."""

from __future__ import annotations

import json
from pathlib import Path

import plotly

from torchscope import analyzers


def tree(component) -> dict:
    """A Dash component as plain JSON (what the browser receives)."""
    return json.loads(json.dumps(component, cls=plotly.utils.PlotlyJSONEncoder))


def text_of(node) -> str:
    """All strings inside a serialised Dash component tree (children, and the values of plain dicts)."""
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return " ".join(text_of(n) for n in node)
    if isinstance(node, dict):
        if "props" in node:
            return text_of(node["props"].get("children"))
        return " ".join(text_of(v) for v in node.values())
    return ""


class CountingLoader:
    """`analyzers.load` that records every path it parses, so tests can prove a run is parsed once."""

    def __init__(self) -> None:
        self.calls: list[Path] = []

    def __call__(self, path: Path):
        self.calls.append(path)
        return analyzers.load(path)
