"""The report for a terminal: a summary per analyzer and rank, then the findings ranked by gain.

Lines are wrapped to the terminal (``output_width``: its width when stdout is one, else
``DEFAULT_WIDTH``); values are labelled and in readable units (``units``), mappings and lists read
as text, long kernel/operator names are folded (``names.short_name``; the JSON keeps them whole),
absolute timestamps (``*_ts_ns``) read relative to the trace's first event, empty values are left
out. At the top: how the run ended when not normally ("incomplete: <reason>") and the loader's
warnings (``info.run_status``), then the source, and what was traced ("3 of 20 steps traced (wait 1,
warmup 1, active 3)", ``traced_steps_line``); a line every rank shares is said once, others name
their ranks. Also holds the pieces the markdown report shares (header and status lines, rank tag,
evidence, summary items).
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from typing import TextIO

import pandas as pd

from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.result import Result
from torchscope.analyzers.core.trace import TraceSet
from torchscope.analyzers.info import run_status
from torchscope.analyzers.report.names import short_name
from torchscope.analyzers.report.units import (
    MISSING, format_duration_ns, format_for_key, format_pct, is_empty_value, is_timestamp_key, key_label, plural,
)
from torchscope.analyzers.timeline.steps import schedule_words, step_count, steps_run

__all__ = ["render_text", "header_lines", "status_lines", "traced_steps_line", "rank_tag", "evidence_text",
           "evidence_items", "summary_items", "wrap_line", "pack_items",
           "output_width", "origin_ns", "TEXT_TOP_KERNELS", "SHOWN_FINDINGS", "DEFAULT_WIDTH", "MIN_WIDTH",
           "VALUE_NAME_WIDTH"]

#: Kernels listed per rank in the text report.
TEXT_TOP_KERNELS = 5
#: Findings shown in the text/markdown report (JSON has them all).
SHOWN_FINDINGS = 20
#: Columns the text report fills when stdout is not a terminal (a pipe, a file, a CI log).
DEFAULT_WIDTH = 100
#: Narrowest width wrapped to, however narrow the terminal.
MIN_WIDTH = 60
#: Kernel/operator names inside evidence and summary values are folded to this many columns.
VALUE_NAME_WIDTH = 48
#: Separator of the summary's "label: value" pieces on one line.
_GAP = "   "


def output_width(stream: TextIO | None = None) -> int:
    """Columns to wrap to: the terminal's width when ``stream`` (default stdout) is one, else DEFAULT_WIDTH."""
    stream = sys.stdout if stream is None else stream
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        tty = False
    if not tty:
        return DEFAULT_WIDTH
    return max(MIN_WIDTH, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns)


def origin_ns(traces: TraceSet, rank: int | None) -> int | None:
    """Start of the trace's first event (of ``rank``, or of every rank when None), ns; None when it has none."""
    chosen = [traces.ranks[rank]] if rank in traces.ranks else list(traces) if rank is None else []
    starts = [t.span_ns[0] for t in chosen if not t.events.empty]
    return min(starts) if starts else None


def _shown(key: str, value: object, origin: int | None) -> bool:
    """Whether a summary/evidence value is worth a line: not empty, not an unplaceable timestamp."""
    if is_empty_value(value):
        return False
    if is_timestamp_key(key):
        # *_ts: a unit not stated; *_ts_ns: shown relative to the trace start when there is one (-1: none)
        return key.endswith("_ts_ns") and origin is not None and isinstance(value, (int, float)) and value >= 0
    return True


def summary_items(result: Result, *, origin: int | None = None,
                  name_width: int | None = VALUE_NAME_WIDTH) -> list[tuple[str, str]]:
    """(label, value text) of every scalar or list summary value worth showing, in the summary's order."""
    return [(key_label(k), format_for_key(k, v, origin_ns=origin, name_width=name_width))
            for k, v in result.summary.items()
            if not isinstance(v, (dict, pd.DataFrame)) and _shown(k, v, origin)]


def evidence_items(f: Finding, *, origin: int | None = None,
                   name_width: int | None = VALUE_NAME_WIDTH) -> list[tuple[str, str]]:
    """(label, value text) of a finding's evidence, each value in its key's unit, empty ones left out."""
    return [(key_label(k), format_for_key(k, v, origin_ns=origin, name_width=name_width))
            for k, v in f.evidence.items() if _shown(k, v, origin)]


def evidence_text(f: Finding, *, origin: int | None = None, name_width: int | None = VALUE_NAME_WIDTH) -> str:
    """A finding's evidence as "label: value; label: value", values in their keys' units."""
    return "; ".join(f"{label}: {value}" for label, value in evidence_items(f, origin=origin, name_width=name_width))


def rank_tag(rank: int | None) -> str:
    """ "rank 3", or "all ranks" for a job-level result."""
    return f"rank {rank}" if rank is not None else "all ranks"


def traced_steps_line(steps: int, steps_run: int | None, schedule: str | None) -> str:
    """ "3 of 20 steps traced (wait 1, warmup 1, active 3)"; "5 steps traced" when the run's steps are unknown.

    The arguments are training_loop's summary ``steps``, ``steps_run`` and ``schedule`` (or
    ``timeline.steps.step_count``, ``steps_run`` and ``schedule_words`` of a trace).
    """
    if steps_run is None:
        line = f"{plural(steps, 'step')} traced"
    else:
        line = f"{steps} of {plural(steps_run, 'step')} traced"
    return f"{line} ({schedule})" if schedule else line


def _once_per_line(lines_by_rank: dict[int, list[str]]) -> list[str]:
    """Each distinct line once, in order: bare when every rank has it, else after the ranks that do."""
    holders: dict[str, list[int]] = {}
    for rank in sorted(lines_by_rank):
        for line in lines_by_rank[rank]:
            holders.setdefault(line, []).append(rank)
    out = []
    for line, ranks in holders.items():
        if len(ranks) == len(lines_by_rank):
            out.append(line)
        else:
            out.append(f"{'rank' if len(ranks) == 1 else 'ranks'} {', '.join(map(str, ranks))}: {line}")
    return out


def status_lines(traces: TraceSet) -> list[str]:
    """How the run ended when not normally ("incomplete: <reason>") and the loader's warnings (``info.run_status``)."""
    return _once_per_line({rank: run_status(t) for rank, t in traces.ranks.items()})


def header_lines(traces: TraceSet, report: Report) -> list[str]:
    """Source, ranks, world size and device of the analyzed traces, and how many of the run's steps were traced."""
    first = next(iter(traces))
    device = first.meta.device_name or "no device recorded"
    ranks = sorted(traces.ranks)
    traced = _once_per_line({rank: [traced_steps_line(step_count(t), steps_run(t), schedule_words(t))]
                             for rank, t in traces.ranks.items()})
    return [f"source: {report.source or traces.path}",
            f"ranks: {', '.join(map(str, ranks))} (world size {traces.world_size})   device: {device}", *traced]


def wrap_line(text: str, width: int, indent: str = "", hang: str | None = None) -> list[str]:
    """``text`` after ``indent``, wrapped to ``width`` columns (continuations after ``hang``, default ``indent``)."""
    return _wrap(text, width, indent, hang)


def pack_items(items: list[tuple[str, str]], width: int, indent: str = "") -> list[str]:
    """"label: value" pieces side by side after ``indent``, as many to a line as fit in ``width`` columns."""
    return _pack(items, width, indent)


def _wrap(text: str, width: int, indent: str, hang: str | None = None) -> list[str]:
    """``text`` wrapped to ``width`` columns; words longer than a line are broken, so none is wider."""
    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent if hang is None else hang,
                         break_on_hyphens=False, break_long_words=True) or [indent.rstrip()]


def _pack(items: list[tuple[str, str]], width: int, indent: str) -> list[str]:
    """"label: value" pieces side by side, a new line before one would pass ``width``; a long one wrapped alone."""
    lines: list[str] = []
    line = ""
    for label, value in items:
        piece = f"{label}: {value}"
        if len(indent) + len(piece) > width:
            if line:
                lines.append(indent + line)
                line = ""
            lines.extend(_wrap(piece, width, indent, indent + "  "))
            continue
        if line and len(indent) + len(line) + len(_GAP) + len(piece) > width:
            lines.append(indent + line)
            line = ""
        line = f"{line}{_GAP}{piece}" if line else piece
    if line:
        lines.append(indent + line)
    return lines


def render_text(traces: TraceSet, report: Report, *, width: int | None = None) -> str:
    """The report for a terminal, wrapped to ``width`` columns (default: ``output_width()``)."""
    width = max(MIN_WIDTH, output_width() if width is None else int(width))
    out = ["torchscope analysis"]
    for line in [*status_lines(traces), *header_lines(traces, report)]:
        out.extend(_wrap(line, width, "  ", "    "))
    out += ["", "Summary"]
    origins = {rank: origin_ns(traces, rank) for rank in {res.rank for res in report.results}}
    for res in report.results:
        items = summary_items(res, origin=origins[res.rank])
        if not items:
            continue
        out.extend(_wrap(f"{res.analyzer} ({rank_tag(res.rank)})", width, "  ", "    "))
        out.extend(_pack(items, width, "    "))
        if "top_kernels" in res.tables:
            out.extend(_top_kernel_lines(res.tables["top_kernels"], width))
    out.append("")
    findings = report.findings
    if findings:
        out.append(f"Findings ({plural(len(findings), 'finding')}, largest estimated gain first)")
    else:
        out += ["Findings", "  none: no rule's threshold was reached"]
    for i, f in enumerate(findings[:SHOWN_FINDINGS], 1):
        head = f"  {i}. "
        out.extend(_wrap(f"{head}[{f.severity}] {f.title}  ({f.analyzer}, {rank_tag(f.rank)})", width, "",
                         " " * len(head)))
        for label, text in (("evidence:", evidence_text(f, origin=origins.get(f.rank, origin_ns(traces, f.rank)))),
                            ("change:", f.recommendation), ("gain:", f.estimated_gain)):
            if text and text != MISSING:
                lead = f"     {label:<10s}"
                out.extend(_wrap(lead + str(text), width, "", " " * len(lead)))
    if len(findings) > SHOWN_FINDINGS:
        more = len(findings) - SHOWN_FINDINGS
        out.append(f"  ... {plural(more, 'more finding')} (see --format json)")
    if report.skipped:
        out += ["", "Skipped"]
        for name, why in sorted(report.skipped.items()):
            out.extend(_wrap(f"{name}: {why}", width, "  ", "    "))
    if report.errors:
        out += ["", "Errors (analyzer bugs; the other results stand)"]
        for name, why in sorted(report.errors.items()):
            out.extend(_wrap(f"{name}: {why}", width, "  ", "    "))
    return "\n".join(out) + "\n"


def _top_kernel_lines(top: pd.DataFrame, width: int, n: int = TEXT_TOP_KERNELS) -> list[str]:
    lines = _wrap("top kernels (share of GPU work, count, mean):", width, "    ")
    for row in top.head(n).itertuples(index=False):
        share, mean = format_pct(row.share_pct), format_duration_ns(row.mean_ns)
        lead = f"      {share:>6s}  {row.count:6d} × {mean:>9s}  "
        lines.append(lead + short_name(row.name, width - len(lead)))
    return lines
