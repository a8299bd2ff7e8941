"""Conversion to plain JSON values: the one place that decides how numpy, pandas and NaN come out.

Rule: numpy scalars become Python numbers; NaN, +inf, -inf, ``pd.NA`` and ``NaT`` become ``None``
(JSON has no such numbers, and a reader must not mistake them for data); tuples, sets and arrays
become lists; mapping keys become strings; timestamps become ISO strings; any other object its
``str``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd

__all__ = ["to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON-compatible Python objects (non-finite floats become None)."""
    if value is None:
        return None
    if isinstance(value, str):
        return str(value)  # numpy's str_ too
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return [to_jsonable(v) for v in value]
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, (pd.Timestamp, pd.Timedelta)) or hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
