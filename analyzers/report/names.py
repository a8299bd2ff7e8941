"""Kernel and operator names short enough to read in a terminal line.

Kineto records kernels by their full C++ signature (``void at::native::elementwise_kernel<128, 2,
...>(int, ...)``), hundreds of characters long. ``short_name`` folds what a reader needs least, in
this order, and stops as soon as the name fits: the return type and ``(anonymous namespace)``
qualifiers, template arguments (``<…>``), the argument list (``(…)``), the namespaces, and at last
the tail (cut with ``…``). A name that fits is returned unchanged; the JSON report keeps full names.
"""

from __future__ import annotations

import re

__all__ = ["short_name", "fold_brackets", "looks_like_symbol", "ELLIPSIS", "MIN_NAME_WIDTH"]

#: What replaces folded or cut text.
ELLIPSIS = "…"
#: Narrowest width ``short_name`` honours (a narrower one is raised to this).
MIN_NAME_WIDTH = 8

_RETURN_TYPE = re.compile(r"^(?:__global__\s+)?void\s+")
_ANONYMOUS = re.compile(r"\(anonymous namespace\)::")
_QUALIFIER = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*::)+")


def fold_brackets(text: str, opening: str, closing: str) -> str:
    """``text`` with the contents of every outermost ``opening``…``closing`` pair replaced by "…"."""
    out: list[str] = []
    depth = inner = 0
    for ch in text:
        if ch == opening:
            if depth == 0:
                out.append(ch)
                inner = 0
            else:
                inner += 1
            depth += 1
        elif ch == closing and depth > 0:
            depth -= 1
            if depth == 0:
                out.append((ELLIPSIS if inner else "") + ch)
            else:
                inner += 1
        elif depth == 0:
            out.append(ch)
        else:
            inner += 1
    if depth > 0:  # unbalanced (e.g. "a < b"): leave the name as it is
        return text
    return "".join(out)


def short_name(name: str, width: int) -> str:
    """``name`` folded to at most ``width`` characters (templates, arguments, namespaces, then the tail)."""
    width = max(int(width), MIN_NAME_WIDTH)
    text = " ".join(str(name).split())
    if len(text) <= width:
        return text
    for step in (_drop_noise, lambda t: fold_brackets(t, "<", ">"), lambda t: fold_brackets(t, "(", ")"),
                 _drop_namespaces):
        text = step(text)
        if len(text) <= width:
            return text
    return text[: width - 1].rstrip() + ELLIPSIS


def looks_like_symbol(text: str) -> bool:
    """Whether ``text`` is a name (no space outside its brackets once the return type is dropped), not prose."""
    folded = fold_brackets(fold_brackets(_drop_noise(str(text).strip()), "<", ">"), "(", ")")
    return not any(ch.isspace() for ch in folded)


def _drop_noise(text: str) -> str:
    return _ANONYMOUS.sub("", _RETURN_TYPE.sub("", text))


def _drop_namespaces(text: str) -> str:
    """``at::native::kernel<…>(…)`` -> ``kernel<…>(…)``; an operator's ``aten::`` goes too."""
    return _QUALIFIER.sub("", text)
