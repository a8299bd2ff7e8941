"""Result: named tables with an error that lists what exists; NotApplicable carries its reason."""

from __future__ import annotations

import pandas as pd
import pytest

from torchscope.analyzers.core.result import NotApplicable, Result


def test_table_returns_the_named_frame():
    steps = pd.DataFrame({"step": [1, 2]})
    assert Result("toy", tables={"steps": steps}).table("steps") is steps


def test_missing_table_error_names_the_analyzer_and_the_tables_it_has():
    res = Result("toy", tables={"steps": pd.DataFrame(), "phases": pd.DataFrame()})
    with pytest.raises(KeyError, match=r"toy has no table 'ops'; it has \['phases', 'steps'\]"):
        res.table("ops")
    with pytest.raises(KeyError, match=r"it has \[\]"):
        Result("empty").table("steps")


def test_defaults_and_frozen():
    res = Result("toy")
    assert (dict(res.tables), dict(res.summary), res.findings, res.rank) == ({}, {}, (), None)
    with pytest.raises(AttributeError):
        res.rank = 1  # type: ignore[misc]


def test_not_applicable_is_an_exception_with_the_reason():
    with pytest.raises(NotApplicable, match="no GPU events"):
        raise NotApplicable("no GPU events")
