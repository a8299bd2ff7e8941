"""How a `torchscope diff` report is shown: terminal table, markdown, JSON and JUnit XML.

Every number reaches people through ``report/units.py`` (ns → ms, bytes → MiB, mJ → J, shares as
percentages); the JSON is ``DiffReport.to_dict`` (``report/json.to_jsonable``: NaN/inf → null).
A p-value is that of the one-sided test in the direction the medians moved, and says so.
Markdown puts the verdict first and folds the details; JSON has one row per metric key with base,
new, delta, ratio, interval, p_value and verdict; JUnit has one test case per gated metric.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

import orjson

from torchscope.analyzers.diff.model import DiffReport, DiffRow
from torchscope.analyzers.diff.stats import CHANGE_VERDICTS
from torchscope.analyzers.report.units import MISSING, format_number, format_quantity, format_share

__all__ = ["FORMATS", "render", "format_for_path", "write_github_summary"]

FORMATS = ("text", "markdown", "json", "junit")
_SUFFIX_FORMAT = {".json": "json", ".md": "markdown", ".markdown": "markdown", ".xml": "junit",
                  ".txt": "text", ".log": "text"}
#: Longest metric name shown in the text reports (the JSON keeps the whole key).
MAX_KEY_CHARS = 72
_VERDICT_MARK = {"regression": "✗", "improvement": "✓", "changed": "~", "added": "+", "removed": "-",
                 "unchanged": " ", "not_significant": "?"}


def format_for_path(path: str) -> str:
    """The report format implied by a file name's suffix (ValueError when none is)."""
    suffix = Path(path).suffix.lower()
    try:
        return _SUFFIX_FORMAT[suffix]
    except KeyError:
        raise ValueError(f"{path}: cannot tell the report format from the suffix; use .json, .md, .xml or .txt, "
                         f"or --format FMT=PATH") from None


def render(report: DiffReport, fmt: str, *, top: int = 15) -> str:
    """The report as text in format ``fmt`` (one of FORMATS)."""
    renderers: dict[str, Callable[..., str]] = {
        "text": _text, "markdown": _markdown, "json": _json, "junit": _junit,
    }
    return renderers[fmt](report, top=top)


def write_github_summary(report: DiffReport, *, top: int = 15) -> bool:
    """Append the markdown report to $GITHUB_STEP_SUMMARY when it is set; True when written."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return False
    try:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(_markdown(report, top=top))
            fh.write("\n")
    except OSError:
        return False
    return True


# --- values ---------------------------------------------------------------------------------------

def _change(row: DiffRow) -> str:
    c = row.comparison
    if c.ratio is None or c.delta is None:
        return MISSING
    if not math.isfinite(c.ratio):
        return "new"
    return format_share(c.ratio - 1.0, signed=True)


def _evidence(row: DiffRow) -> str:
    c = row.comparison
    if c.method == "mann-whitney":
        return f"p={format_number(c.p_value)} (one-sided U test, n={c.n_base}/{c.n_new})"
    if c.method == "bootstrap" and c.interval is not None:
        lo, hi = (format_quantity(x, row.unit) for x in c.interval)
        return f"Δ∈[{lo}, {hi}] (one-sided bootstrap, n={c.n_base}/{c.n_new})"
    if c.method == "bootstrap":
        return f"bootstrap, n={c.n_base}/{c.n_new}"
    if c.method == "single":
        return "one sample each"
    return c.method


def _label(row: DiffRow) -> str:
    """Verdict as shown: kernel and operator timings read "slower"/"faster"; a change the thresholds let
    pass reads "within threshold" (the JSON verdict stays "unchanged")."""
    v = row.verdict
    delta = row.comparison.delta
    if v == "unchanged" and isinstance(delta, (int, float)) and delta != 0 and math.isfinite(delta):
        return "within threshold"
    if row.group in ("kernel", "operator") and row.unit == "ns":
        v = {"regression": "slower", "improvement": "faster"}.get(v, v)
    return v.replace("_", " ")


def _key(row: DiffRow) -> str:
    return row.key if len(row.key) <= MAX_KEY_CHARS else row.key[: MAX_KEY_CHARS - 1] + "…"


def _headline(report: DiffReport) -> str:
    gated = report.gated_rows
    if report.verdict == "regression":
        n = sum(r.verdict == "regression" for r in gated)
        return f"REGRESSION: {n} of {len(gated)} gated metrics regressed"
    if report.verdict == "changed":
        n = sum(r.verdict in CHANGE_VERDICTS for r in gated)
        return f"CHANGED: {n} of {len(gated)} gated metrics changed (no regression)"
    return f"OK: no regression in {len(gated)} gated metrics"


def _diagnostics(report: DiffReport, top: int) -> list[DiffRow]:
    """Ungated rows that changed, largest absolute time/size change first."""
    rows = [r for r in report.rows if not r.gated and not r.headline and r.verdict != "unchanged"]

    def weight(r: DiffRow) -> float:
        c = r.comparison
        if c.delta is not None and not isinstance(c.delta, list):
            return abs(float(c.delta))
        for v in (c.base, c.new):
            if isinstance(v, (int, float)):
                return abs(float(v))
        return 0.0

    rows.sort(key=lambda r: (r.unit != "ns", -weight(r)))
    return rows[:top] if top >= 0 else rows


def _sides(report: DiffReport) -> tuple[str, str]:
    def side(info) -> str:
        src = ", ".join(info.sources[:3]) + (f" (+{len(info.sources) - 3})" if len(info.sources) > 3 else "")
        return f"{src} — {len(info.runs)} run(s), {info.n_steps} step(s)"
    return side(report.base), side(report.new)


# --- text -----------------------------------------------------------------------------------------

def _table(rows: list[DiffRow]) -> list[str]:
    head = ("", "metric", "base", "new", "change", "evidence", "verdict")
    body = [(_VERDICT_MARK.get(r.verdict, " "), _key(r), format_quantity(r.comparison.base, r.unit),
             format_quantity(r.comparison.new, r.unit), _change(r), _evidence(r), _label(r)) for r in rows]
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(head), line(tuple("-" * w for w in widths)), *[line(b) for b in body]]


def _text(report: DiffReport, *, top: int) -> str:
    base, new = _sides(report)
    opts = report.options
    out = [f"trace-diff: {_headline(report)}", f"  base: {base}", f"  new:  {new}",
           f"  gate: {opts.gate} metrics, fail on {opts.fail_on}; threshold {format_share(opts.threshold)}, "
           f"alpha {format_number(opts.alpha)}",
           ""]
    gated = report.gated_rows
    if gated:
        out += ["Gated metrics", *_table(gated), ""]
    info = [r for r in report.rows if not r.gated and r.headline]
    if info:
        out += ["Reported, not gated", *_table(info), ""]
    diag = _diagnostics(report, top)
    if diag:
        changed = sum(1 for r in report.rows if not r.gated and not r.headline and r.verdict != "unchanged")
        out += [f"Diagnostics (top {len(diag)} of {changed} changed rows; not gated)", *_table(diag), ""]
    notes = [f"  {side}: {r.source}: {n}" for side, info in (("base", report.base), ("new", report.new))
             for r in info.runs for n in r.notes]
    if notes:
        out += ["Notes", *notes, ""]
    return "\n".join(out) + "\n"


# --- markdown -------------------------------------------------------------------------------------

def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _md_table(rows: list[DiffRow]) -> list[str]:
    out = ["| | metric | base | new | change | evidence | verdict |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append("| " + " | ".join(_md_escape(x) for x in (
            _VERDICT_MARK.get(r.verdict, " ").strip(), f"`{_key(r)}`", format_quantity(r.comparison.base, r.unit),
            format_quantity(r.comparison.new, r.unit), _change(r), _evidence(r),
            f"**{_label(r)}**" if r.verdict == "regression" else _label(r))) + " |")
    return out


def _markdown(report: DiffReport, *, top: int) -> str:
    icon = {"regression": "❌", "changed": "⚠️", "ok": "✅"}[report.verdict]
    base, new = _sides(report)
    opts = report.options
    out = [f"### {icon} trace-diff — {_headline(report)}", "",
           f"**base:** {_md_escape(base)}  ", f"**new:** {_md_escape(new)}  ",
           f"gate: {opts.gate} metrics, fail on {opts.fail_on}, threshold {format_share(opts.threshold)}, "
           f"alpha {format_number(opts.alpha)}", ""]
    failing = report.failing_rows
    if failing:
        out += [*_md_table(failing), ""]
    out += ["<details><summary>All gated metrics "
            f"({len(report.gated_rows)})</summary>", "", *_md_table(report.gated_rows), "", "</details>", ""]
    info = [r for r in report.rows if not r.gated and r.headline]
    if info:
        out += [f"<details><summary>Reported, not gated ({len(info)})</summary>", "", *_md_table(info), "",
                "</details>", ""]
    diag = _diagnostics(report, top)
    if diag:
        out += [f"<details><summary>Diagnostics: kernels, operators, phases, GPU time (top {len(diag)})</summary>",
                "", *_md_table(diag), "", "</details>", ""]
    return "\n".join(out) + "\n"


# --- JSON -----------------------------------------------------------------------------------------

def _json(report: DiffReport, *, top: int) -> str:
    return orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n"


# --- JUnit ----------------------------------------------------------------------------------------

def _junit(report: DiffReport, *, top: int) -> str:
    gated = report.gated_rows
    policy = "regression" if report.options.fail_on == "never" else report.options.fail_on
    failures = [r for r in gated if r.trips(policy)]
    suites = ET.Element("testsuites", name="torchscope diff", tests=str(len(gated)), failures=str(len(failures)),
                        errors="0")
    suite = ET.SubElement(suites, "testsuite", name="torchscope diff", tests=str(len(gated)),
                          failures=str(len(failures)), errors="0", skipped="0")
    props = ET.SubElement(suite, "properties")
    for name, value in (("base", ", ".join(report.base.sources)), ("new", ", ".join(report.new.sources)),
                        ("gate", report.options.gate), ("fail_on", report.options.fail_on),
                        ("threshold", str(report.options.threshold)), ("verdict", report.verdict)):
        ET.SubElement(props, "property", name=name, value=value)
    for row in gated:
        case = ET.SubElement(suite, "testcase", classname=f"torchscope.diff.{row.group}", name=row.key, time="0")
        detail = (f"base {format_quantity(row.comparison.base, row.unit)}, "
                  f"new {format_quantity(row.comparison.new, row.unit)}, change {_change(row)}, {_evidence(row)}, "
                  f"verdict {row.verdict}")
        if row.trips(policy):
            failure = ET.SubElement(case, "failure", type=row.verdict,
                                    message=f"{row.key}: {row.verdict} ({_change(row)})")
            failure.text = detail
        else:
            ET.SubElement(case, "system-out").text = detail
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
