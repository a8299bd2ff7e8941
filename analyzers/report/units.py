"""Numbers for people: durations, sizes, energy and FLOPs in readable units (display edges only)."""

from __future__ import annotations

import math

__all__ = ["format_quantity"]


def format_quantity(value: object, unit: str, *, signed: bool = False) -> str:
    """A value for people, in a readable unit (ns → ms, bytes → MiB, mJ → J, flop → GFLOP)."""
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        shown = ", ".join(_number(v) for v in value[:6])
        return f"[{shown}{', …' if len(value) > 6 else ''}]"
    v = float(value)
    if not math.isfinite(v):
        return "∞"
    sign = "+" if signed and v > 0 else ""
    if unit == "ns":
        a = abs(v)
        if a >= 1e9:
            return f"{sign}{v / 1e9:.3g} s"
        if a >= 1e6:
            return f"{sign}{v / 1e6:.4g} ms"
        if a >= 1e3:
            return f"{sign}{v / 1e3:.4g} µs"
        return f"{sign}{v:.4g} ns"
    if unit == "bytes":
        for scale, name in ((1024.0**3, "GiB"), (1024.0**2, "MiB"), (1024.0, "KiB")):
            if abs(v) >= scale:
                return f"{sign}{v / scale:.4g} {name}"
        return f"{sign}{v:.4g} B"
    if unit == "mJ":
        return f"{sign}{v / 1e3:.4g} J" if abs(v) >= 1e3 else f"{sign}{v:.4g} mJ"
    if unit == "flop":
        for scale, name in ((1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP")):
            if abs(v) >= scale:
                return f"{sign}{v / scale:.4g} {name}"
        return f"{sign}{v:.4g} FLOP"
    return sign + _number(v)


def _number(v: object) -> str:
    f = float(v)
    if f.is_integer() and abs(f) < 1e15:
        return str(int(f))
    return f"{f:.4g}"
