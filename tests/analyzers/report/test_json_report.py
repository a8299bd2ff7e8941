"""The JSON report: schema version, findings ranked by gain, tables cut to JSON_TABLE_ROWS, JSON-safe values."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from torchscope.analyzers.analyze import analyze_path
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.result import Result
from torchscope.analyzers.report.json_report import JSON_TABLE_ROWS, SCHEMA_VERSION, render_json, result_dict


@pytest.fixture(scope="module")
def job128(shared_traces):
    return analyze_path(str(shared_traces / "job128_rank0.json.gz"))


def _toy_findings(*gains: float) -> Result:
    from torchscope.analyzers.core.findings import Finding

    return Result("toy", findings=tuple(
        Finding(id="toy.rule", analyzer="toy", severity="info", title=f"gain {g}", evidence={}, recommendation="x",
                estimated_gain="some", gain_fraction=g) for g in gains))


def test_json_report_ranks_findings_and_carries_a_schema_version(job128):
    traces, report = job128
    doc = json.loads(render_json(traces, report))
    assert doc["schema_version"] == SCHEMA_VERSION and doc["ranks"] == [0] and doc["world_size"] == 128
    assert [f["id"] for f in doc["findings"]] == [f.id for f in report.findings] and doc["findings"]
    more = Report(source=report.source, results=(*report.results, _toy_findings(0.02, 0.6, 0.3)))
    gains = [f["gain_fraction"] for f in json.loads(render_json(traces, more))["findings"]]
    assert gains == sorted(gains, reverse=True) and {0.02, 0.6, 0.3} <= set(gains)
    by_name = {r["analyzer"]: r for r in doc["results"]}
    assert {"gpu_time", "kernels", "training_loop"} <= set(by_name)
    steps = by_name["training_loop"]["tables"]["steps"]
    assert steps["rows_total"] == 2 and "backward_ns" in steps["columns"]
    assert [row[0] for row in steps["rows"]] == [551, 552]
    assert 0 < by_name["gpu_time"]["summary"]["comm_overlap_pct"] < 100
    assert doc["skipped"].get("stragglers") == "single rank"


def test_result_tables_are_cut_and_non_finite_values_become_null():
    frame = pd.DataFrame({"step": np.arange(JSON_TABLE_ROWS + 5), "x": np.nan,
                          "when": pd.Timestamp("2024-05-01T12:00:00")})
    res = Result("toy", tables={"t": frame},
                 summary={"n": np.int64(3), "share": np.float32(0.5), "bad": float("inf"), "none": pd.NA,
                          "steps": (1, 2), "nested": {"a": np.nan}})
    out = result_dict(res)
    table = out["tables"]["t"]
    assert table["rows_total"] == JSON_TABLE_ROWS + 5 and len(table["rows"]) == JSON_TABLE_ROWS
    assert table["rows"][0] == [0, None, "2024-05-01T12:00:00"]
    assert out["summary"] == {"n": 3, "share": 0.5, "bad": None, "none": None, "steps": [1, 2],
                              "nested": {"a": None}}
    json.dumps(out, allow_nan=False)  # strict JSON


def test_empty_report_renders(job128):
    traces, _ = job128
    doc = json.loads(render_json(traces, Report(source="x", results=())))
    assert doc["findings"] == [] and doc["results"] == [] and doc["source"] == "x"
