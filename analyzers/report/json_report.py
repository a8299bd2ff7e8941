"""The report as a JSON document (``torchscope analyze --format json``), machine readable.

Every value goes through ``report.json.to_jsonable``, the one JSON rule (NaN and inf become null).
This lives beside ``json.py`` rather than in it: ``core.findings`` uses that rule, and the
document needs ``core``'s Report, so one module holding both would import itself in a cycle.
"""

from __future__ import annotations

import orjson

from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.result import Result
from torchscope.analyzers.core.trace import TraceSet
from torchscope.analyzers.report.json import to_jsonable

__all__ = ["render_json", "report_dict", "result_dict", "SCHEMA_VERSION", "JSON_TABLE_ROWS"]

#: Version of the JSON report layout; bump on incompatible changes.
SCHEMA_VERSION = 1
#: Rows kept per table in the JSON report (``rows_total`` says how many there were).
JSON_TABLE_ROWS = 200


def report_dict(traces: TraceSet, report: Report) -> dict:
    """Plain-JSON form of the report (``schema_version`` first)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "torchscope",
        "source": report.source or traces.path,
        "ranks": sorted(int(r) for r in traces.ranks),
        "world_size": int(traces.world_size),
        "device": next(iter(traces)).meta.device_name,
        "findings": [f.to_dict() for f in report.findings],
        "results": [result_dict(r) for r in report.results],
        "skipped": dict(report.skipped),
        "errors": dict(report.errors),
    }


def result_dict(res: Result) -> dict:
    """Plain-JSON form of one Result: summary and tables (first JSON_TABLE_ROWS rows of each)."""
    tables = {}
    for name, frame in res.tables.items():
        shown = frame.head(JSON_TABLE_ROWS)
        tables[name] = {"rows_total": int(len(frame)), "columns": [str(c) for c in frame.columns],
                        "rows": [to_jsonable(row) for row in shown.itertuples(index=False, name=None)]}
    return {"analyzer": res.analyzer, "rank": res.rank, "summary": to_jsonable(dict(res.summary)), "tables": tables}


def render_json(traces: TraceSet, report: Report) -> str:
    """The report as indented JSON."""
    return orjson.dumps(report_dict(traces, report), option=orjson.OPT_INDENT_2).decode() + "\n"
