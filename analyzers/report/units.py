"""Numbers for people: the one place that turns a measured quantity into display text.

Inside the code times are int ns, sizes int bytes, energy mJ or J, FLOPs counts; only this module
decides how they read on a screen. Two entry points:

- ``format_quantity(value, unit)`` when the unit is known (``"ns"``, ``"bytes"``, ``"mJ"``, ...);
- ``format_for_key(key, value)`` for a summary or evidence value, whose unit is its key's suffix
  (``step_median_ns``, ``peak_rss_bytes``, ``idle_pct``; see ``KEY_UNITS``), with ``key_label``
  the key without the suffix the formatted value makes redundant (``step_median_ns`` -> "step median").

A timestamp key (``*_ts_ns``, an absolute time on the trace's clock) reads relative to the trace's
first event when the caller passes that ``origin_ns`` ("peak rss at: +1.25 s"). A mapping reads as
"name value, name value" and a list as its items joined, never as a Python repr; names in them
can be shortened (``names.short_name``) to a width.

Sizes use binary units (KiB, MiB, GiB), as allocators and ``nvidia-smi`` report them; rates use
decimal ones (GB/s, TFLOP/s), as device data sheets quote them. A missing value (None, NaN, NA)
reads ``MISSING``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from torchscope.analyzers.report.names import looks_like_symbol, short_name

__all__ = [
    "format_quantity", "format_for_key", "key_label", "unit_of_key", "format_duration_ns", "format_bytes",
    "format_energy_mj", "format_flops", "format_rate", "format_pct", "format_share", "format_ratio", "format_count",
    "format_number", "format_plain", "format_timestamp_ns", "plural", "is_timestamp_key", "is_empty_value",
    "KEY_UNITS", "BARE_KEY_UNITS", "VALUE_UNITS", "MISSING", "LIST_ITEMS_SHOWN", "UNITS",
]

#: Text shown for a missing value (None, NaN, pandas NA/NaT).
MISSING = "n/a"
#: Items of a list value shown before "…".
LIST_ITEMS_SHOWN = 8
#: Integers at least this large (in magnitude) get thousands separators ("12,345").
THOUSANDS_FROM = 10_000

#: Key suffix -> (unit, whether the label drops the suffix), longest suffixes first. A key ending
#: in ``_share`` or ``_fraction`` holds a 0..1 fraction and reads as a percentage.
KEY_UNITS: tuple[tuple[str, str, bool], ...] = (
    ("_ts_ns", "ts", True),
    ("_flops_per_s", "flop/s", False),
    ("_bytes_per_s", "bytes/s", False),
    ("_flop_per_byte", "flop/byte", False),
    ("_fraction", "share", False),
    ("_share", "share", False),
    ("_bytes", "bytes", True),
    ("_flops", "flop", True),
    ("_gbps", "GB/s", True),
    ("_mhz", "MHz", True),
    ("_pct", "%", True),
    ("_ns", "ns", True),
    ("_ms", "ms", True),
    ("_us", "us", True),
    ("_mj", "mJ", True),
    ("_mw", "mW", True),
    ("_j", "J", True),
    ("_w", "W", True),
    ("_c", "°C", True),
)
#: Whole keys that are a unit by themselves (``bytes``, ``flops`` in a summary).
BARE_KEY_UNITS: dict[str, str] = {"bytes": "bytes", "flops": "flop"}
#: Evidence keys whose name carries no unit suffix but whose values (a mapping name -> amount) have one.
#: The keys belong to their analyzers and the JSON keeps them; renaming them ``*_ns`` makes this moot.
VALUE_UNITS: dict[str, str] = {"top_ops": "ns", "misaligned_shapes": "ns"}
#: Every unit ``format_quantity`` knows; any other reads as a plain number. ``ts``: an absolute time, ns.
UNITS: tuple[str, ...] = ("ts", "ns", "us", "ms", "bytes", "mJ", "J", "flop", "flop/s", "bytes/s", "GB/s", "flop/byte",
                          "W", "mW", "MHz", "°C", "%", "share", "count")

_BINARY = ((1024.0**3, "Gi"), (1024.0**2, "Mi"), (1024.0, "Ki"))
_FLOP = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"))
_DECIMAL = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _missing(value: object) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, NaT; pd.NA raises on bool()
    except (TypeError, ValueError):
        return True


def _sign(v: float, signed: bool) -> str:
    return "+" if signed and v > 0 else ""


def _scaled(value: float, scales: Sequence[tuple[float, str]], unit: str, signed: bool) -> str:
    """``value`` divided by the largest scale it reaches, 4 significant digits, that scale's name + ``unit``."""
    s = _sign(value, signed)
    for scale, prefix in scales:
        if abs(value) >= scale:
            return f"{s}{value / scale:.4g} {prefix}{unit}"
    return f"{s}{value:.4g} {unit}"


def format_duration_ns(ns: float, *, signed: bool = False) -> str:
    """A duration given in ns, as ns, µs, ms or s (4 significant digits, 3 for seconds)."""
    a, s = abs(ns), _sign(ns, signed)
    if a >= 1e9:
        return f"{s}{ns / 1e9:.3g} s"
    if a >= 1e6:
        return f"{s}{ns / 1e6:.4g} ms"
    if a >= 1e3:
        return f"{s}{ns / 1e3:.4g} µs"
    return f"{s}{ns:.4g} ns"


def format_bytes(n: float, *, signed: bool = False) -> str:
    """A size given in bytes, as B, KiB, MiB or GiB (binary units, 4 significant digits)."""
    return _scaled(n, _BINARY, "B", signed)


def format_energy_mj(mj: float, *, signed: bool = False) -> str:
    """An energy given in mJ, as mJ or J."""
    s = _sign(mj, signed)
    return f"{s}{mj / 1e3:.4g} J" if abs(mj) >= 1e3 else f"{s}{mj:.4g} mJ"


def format_flops(flop: float, *, signed: bool = False) -> str:
    """A count of floating-point operations, as FLOP, MFLOP, GFLOP, TFLOP or PFLOP."""
    return _scaled(flop, _FLOP, "FLOP", signed)


def format_rate(per_s: float, unit: str, *, signed: bool = False) -> str:
    """A rate per second with a decimal prefix: ``format_rate(3.35e12, "B")`` is "3.35 TB/s"."""
    return _scaled(per_s, _DECIMAL, f"{unit}/s", signed)


def format_pct(pct: float, *, signed: bool = False) -> str:
    """A percentage given in percent (0..100), one decimal: "12.5%"."""
    return f"{_sign(pct, signed)}{pct:.1f}%"


def format_share(fraction: float, *, signed: bool = False) -> str:
    """A fraction given as 0..1, as a percentage: 0.125 -> "12.5%"."""
    return format_pct(100.0 * fraction, signed=signed)


def format_ratio(ratio: float, *, signed: bool = False) -> str:
    """A ratio of two like quantities, two decimals and a times sign: 1.74 -> "1.74×"."""
    return f"{_sign(ratio, signed)}{ratio:.2f}×"


def format_count(n: int, *, signed: bool = False) -> str:
    """A count, with thousands separators from THOUSANDS_FROM on: 12345 -> "12,345"."""
    n = int(n)
    return f"{_sign(n, signed)}{n:,}" if abs(n) >= THOUSANDS_FROM else f"{_sign(n, signed)}{n}"


def format_number(value: float, *, signed: bool = False) -> str:
    """A number without a unit: whole numbers as counts, others with 4 significant digits (40,210 not 4.021e+04)."""
    f = float(value)
    if f.is_integer() and abs(f) < 1e15:
        return format_count(int(f), signed=signed)
    if THOUSANDS_FROM <= abs(f) < 1e15:
        return format_count(round(f), signed=signed)
    return f"{_sign(f, signed)}{f:.4g}"


def format_timestamp_ns(ts_ns: float, origin_ns: float | None = None) -> str:
    """An absolute time (ns, the trace's clock) after ``origin_ns`` ("+1.25 s"), or on the clock itself."""
    if origin_ns is None:
        return f"{format_count(int(ts_ns))} ns on the trace clock"
    return format_duration_ns(int(ts_ns) - int(origin_ns), signed=True)


def plural(n: int, word: str, words: str | None = None) -> str:
    """A count and its noun, singular or plural: plural(1, "finding") -> "1 finding", plural(3, ...) -> "3 findings"."""
    return f"{format_count(n)} {word if n == 1 else (words or word + 's')}"


def is_timestamp_key(key: str) -> bool:
    """Whether ``key`` holds an absolute time (``*_ts_ns``, or ``*_ts`` in an unstated unit)."""
    return key.endswith(("_ts", "_ts_ns"))


def is_empty_value(value: object) -> bool:
    """An empty list, tuple, mapping or string: nothing worth a line."""
    if isinstance(value, np.ndarray):
        return value.size == 0
    return isinstance(value, (list, tuple, dict, str, set)) and len(value) == 0


def _format_list(values: Sequence, unit: str, signed: bool) -> str:
    shown = ", ".join(format_quantity(v, unit, signed=signed) for v in list(values)[:LIST_ITEMS_SHOWN])
    return f"[{shown}{', …' if len(values) > LIST_ITEMS_SHOWN else ''}]"


def format_quantity(value: object, unit: str, *, signed: bool = False) -> str:
    """``value`` in ``unit`` (one of UNITS; any other: a plain number) as text in a readable unit."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return _format_list(value, unit, signed)
    if _missing(value):
        return MISSING
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if unit == "ts":
        return format_timestamp_ns(v)
    if unit == "ns":
        return format_duration_ns(v, signed=signed)
    if unit in ("us", "ms"):
        return format_duration_ns(v * (1e3 if unit == "us" else 1e6), signed=signed)
    if unit == "bytes":
        return format_bytes(v, signed=signed)
    if unit == "mJ":
        return format_energy_mj(v, signed=signed)
    if unit == "J":
        return format_energy_mj(v * 1e3, signed=signed)
    if unit == "flop":
        return format_flops(v, signed=signed)
    if unit == "flop/s":
        return format_rate(v, "FLOP", signed=signed)
    if unit == "bytes/s":
        return format_rate(v, "B", signed=signed)
    if unit == "GB/s":
        return format_rate(v * 1e9, "B", signed=signed)
    if unit == "%":
        return format_pct(v, signed=signed)
    if unit == "share":
        return format_share(v, signed=signed)
    if unit == "mW":
        return f"{_sign(v, signed)}{v / 1e3:.4g} W"
    if unit == "flop/byte":
        return f"{_sign(v, signed)}{v:.4g} FLOP/B"
    if unit in ("W", "MHz", "°C"):
        return f"{_sign(v, signed)}{v:.4g} {unit}"
    return format_number(v, signed=signed)  # "count", and values without a unit


def format_plain(value: object) -> str:
    """A value in the unit it is stored in (a table cell, whose column name carries the unit)."""
    return format_quantity(value, "")


def unit_of_key(key: str) -> str | None:
    """The unit a summary/evidence key's suffix names (``"step_median_ns"`` -> ``"ns"``), or None."""
    if key in BARE_KEY_UNITS:
        return BARE_KEY_UNITS[key]
    for suffix, unit, _ in KEY_UNITS:
        if key.endswith(suffix) and len(key) > len(suffix):
            return unit
    return None


def key_label(key: str) -> str:
    """A key as a label for people: the unit suffix the value shows dropped, ``_`` as spaces (``*_ts_ns``: "… at")."""
    for suffix, unit, drop in KEY_UNITS:
        if key.endswith(suffix) and len(key) > len(suffix):
            if drop:
                key = key[: -len(suffix)] + ("_at" if unit == "ts" else "")
            break
    return key.replace("_", " ")


def format_for_key(key: str, value: object, *, origin_ns: float | None = None,
                   name_width: int | None = None) -> str:
    """A summary or evidence value as text, in the unit its key's suffix names (``*_ns``, ``*_pct``, ...).

    A mapping reads "name value, name value" (each value in its own key's unit, else ``key``'s); a list
    its items joined; names shortened to ``name_width`` when given; ``*_ts_ns`` relative to ``origin_ns``.
    """
    unit = unit_of_key(key) or VALUE_UNITS.get(key, "")
    if isinstance(value, dict):
        parts = []
        for k, v in value.items():
            text = (format_for_key(str(k), v, origin_ns=origin_ns, name_width=name_width)
                    if isinstance(v, (dict, list, tuple)) else _item(v, unit_of_key(str(k)) or unit, name_width))
            parts.append(f"{_name(str(k), name_width)} {text}")
        return ", ".join(parts)
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
        shown = ", ".join(_item(v, unit, name_width) for v in items[:LIST_ITEMS_SHOWN])
        return shown + (f", … ({len(items) - LIST_ITEMS_SHOWN} more)" if len(items) > LIST_ITEMS_SHOWN else "")
    if unit == "ts" and not _missing(value) and not isinstance(value, str):
        return format_timestamp_ns(value, origin_ns)  # type: ignore[arg-type]
    if isinstance(value, str):
        return _name(value, name_width)
    return format_quantity(value, unit, signed=False)


def _item(value: object, unit: str, name_width: int | None) -> str:
    if isinstance(value, str):
        return _name(value, name_width)
    return format_quantity(value, unit)


def _name(text: str, width: int | None) -> str:
    """A kernel/operator name shortened to ``width``; prose (spaces outside brackets) stays whole, to be wrapped."""
    return short_name(text, width) if width is not None and looks_like_symbol(text) else text
