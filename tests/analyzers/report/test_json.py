"""to_jsonable: the one JSON rule (numpy -> Python, NaN/inf/NA/NaT -> None, containers -> lists/dicts)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from torchscope.analyzers.report.json import to_jsonable


@pytest.mark.parametrize("value,plain", [
    (np.int64(3), 3), (np.float32(0.5), 0.5), (np.bool_(True), True), (np.str_("a"), "a"), (7, 7), ("x", "x"),
    (None, None), (True, True),
])
def test_scalars_become_python_values(value, plain):
    out = to_jsonable(value)
    assert out == plain and type(out) is type(plain)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -np.inf, np.float64("nan"), pd.NA, pd.NaT])
def test_non_finite_and_missing_become_none(value):
    assert to_jsonable(value) is None


def test_containers_keys_and_timestamps():
    value = {1: (np.int64(1), {2.5}), "arr": np.array([1.0, np.nan]), "when": pd.Timestamp("2024-05-01T12:00"),
             "date": dt.date(2024, 5, 1), "span": pd.Timedelta(seconds=1)}
    out = to_jsonable(value)
    assert out == {"1": [1, [2.5]], "arr": [1.0, None], "when": "2024-05-01T12:00:00", "date": "2024-05-01",
                   "span": "P0DT0H0M1S"}
    json.dumps(out, allow_nan=False)


def test_other_objects_become_their_str():
    class Thing:
        def __str__(self) -> str:
            return "thing"

    assert to_jsonable(Thing()) == "thing"
    assert to_jsonable(pd.Categorical(["a"])[0]) == "a"
