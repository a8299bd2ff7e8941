"""Generic rendering of analyzer output: any Result's summary, findings and tables as Dash components.

This works for every analyzer, including ones the dashboard has no dedicated figure for: a page
shows each of its analyzers' Results through `analyzer_section`, and says why when an analyzer
was skipped or failed for the run. Summary and evidence keys read as words (``key_label``) with
values in their units; missing values are left out; tables are grids (`grid.grid_table`), folded.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import pandas as pd
from dash import dcc, html

from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.registry import REGISTRY
from torchscope.analyzers.core.result import Result
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.report.units import format_for_key, is_empty_value, key_label

from torchscope.dashboard.grid import grid_table

__all__ = ["findings_list", "table_view", "result_view", "analyzer_section", "not_available",
           "summary_view", "duplicate_tables", "is_shown_value"]

_SEVERITY_COLOURS = {"critical": "#c0392b", "warning": "#d68910", "info": "#2874a6"}


def not_available(name: str | None, reason: str) -> html.Div:
    """The notice shown in place of an analyzer (or, ``name`` None, a whole page) this run cannot fill."""
    text = f"{name}: not available for this run: {reason}" if name else f"Not available for this run: {reason}"
    return html.Div(text, className="not-available")


def is_shown_value(value: object) -> bool:
    """Whether a summary/evidence value is worth a line (not None, NaN, an empty container or a mapping)."""
    if value is None or isinstance(value, (dict, list, tuple, set)) or is_empty_value(value):
        return False
    try:
        return not bool(value != value)
    except (TypeError, ValueError):
        return False


def summary_view(summary: Mapping[str, object], docs: Mapping[str, str] | None = None,
                 origin_ns: int | None = None) -> html.Div:
    """Headline numbers as a compact grid of "label value", each value in its key's unit (``*_ns`` as ms, ...).

    ``docs`` (an analyzer's ``SUMMARY_KEYS``) gives each key its description as a tooltip; missing
    values and containers are left out.
    """
    docs = docs or {}
    items = [html.Div([html.Span(key_label(k), className="kv-key", title=docs.get(k) or k),
                       html.Span(format_for_key(k, v, origin_ns=origin_ns), className="kv-val")], className="kv")
             for k, v in summary.items() if is_shown_value(v)]
    return html.Div(items or None, className="summary")


def _gain_text(f: Finding) -> str:
    """The finding's estimated gain, led by its predicted share of step time when there is one (and the gain's
    own text does not already say it)."""
    if f.gain_fraction and f.gain_fraction > 0:
        share = format_for_key("gain_fraction", f.gain_fraction)
        if not f.estimated_gain.startswith(share):
            return f"{share} of step time · {f.estimated_gain}"
    return f.estimated_gain


def _ranks_text(ranks: Sequence[int], n_ranks: int | None, shown: int = 6) -> str:
    """" · on ranks 2, 5, 8 and 61 more (64 of 64)": the ranks one card stands for, the first the one shown."""
    listed = ", ".join(str(r) for r in ranks[:shown])
    more = f" and {len(ranks) - shown} more" if len(ranks) > shown else ""
    of = f" ({len(ranks)} of {n_ranks})" if n_ranks else ""
    return f" · on ranks {listed}{more}{of}; rank {ranks[0]}'s shown (largest gain)"


def _finding_card(f: Finding, run_query: str, ranks: Sequence[int] = (), n_ranks: int | None = None,
                  here: str | None = None) -> html.Div:
    if len(ranks) > 1 and "rank=" not in run_query:  # a card for several ranks: its evidence is the shown rank's
        run_query = f"{run_query}&rank={f.rank}" if run_query else f"rank={f.rank}"
    link = f"/{f.page}?{run_query}" if run_query else f"/{f.page}"
    # On its own page a finding's evidence is the page itself, unless the card speaks for another rank.
    to_page = None if f.page == here and len(ranks) <= 1 else \
        dcc.Link(f"show evidence on the {f.page} page" + (f" (rank {f.rank})" if len(ranks) > 1 else "") + " →",
                 href=link, className="finding-link")
    evidence = html.Table([html.Tr([html.Td(key_label(str(k))), html.Td(format_for_key(str(k), v, name_width=80))])
                           for k, v in f.evidence.items() if not is_empty_value(v) and v is not None],
                          className="evidence")
    return html.Div([
        html.Div([
            html.Span(f.severity, className=f"sev sev-{f.severity}",
                      style={"background": _SEVERITY_COLOURS.get(f.severity, "#555")}),
            html.Span(f.title, className="finding-title"),
            html.Span(f" · {f.analyzer}" + (_ranks_text(ranks, n_ranks) if len(ranks) > 1 else
                                              f" · rank {f.rank}" if f.rank is not None else ""),
                      className="finding-meta"),
        ]),
        html.Div([html.B("Recommendation: "), f.recommendation], className="finding-rec"),
        html.Div([html.B("Estimated gain: "), _gain_text(f)], className="finding-gain"),
        html.Details([html.Summary("evidence"), evidence]),
        to_page,
    ], className=f"finding finding-{f.severity}", **{"data-analyzer": f.analyzer, "data-severity": f.severity})


def findings_list(findings: Iterable[Finding], run_query: str = "", empty: str = "No findings.",
                  ranks: Sequence[Sequence[int]] | None = None, n_ranks: int | None = None,
                  here: str | None = None) -> html.Div:
    """Findings as cards (severity, title, recommendation, gain, evidence, link to the evidence page).

    ``ranks`` (one entry per finding, from `ranking.one_per_finding`): the ranks each card stands for, said on
    the card with ``n_ranks``, the job's rank count. ``here``: the page the list is on (no link to itself)."""
    findings = list(findings)
    cards = [_finding_card(f, run_query, ranks[i] if ranks else (), n_ranks, here) for i, f in enumerate(findings)]
    return html.Div(cards or [html.Div(empty, className="muted")], className="findings")


def duplicate_tables(tables: Mapping[str, pd.DataFrame]) -> set[str]:
    """Names of tables that repeat another table's first rows (e.g. ``top_kernels`` of ``by_name``)."""
    out: set[str] = set()
    items = [(n, t) for n, t in tables.items() if isinstance(t, pd.DataFrame)]
    for name, t in items:
        for other, u in items:
            if other == name or other in out or list(t.columns) != list(u.columns) or len(t) > len(u) \
                    or (len(t) == len(u) and name > other):
                continue
            if t.reset_index(drop=True).equals(u.head(len(t)).reset_index(drop=True)):
                out.add(name)
                break
    return out


def table_view(name: str, df: pd.DataFrame, table_id: str | None = None, *, origin_ns: int | None = None,
               first: Sequence[str] = ()) -> html.Div:
    """One named table as a grid: words and units in the headers, human units in the cells."""
    return grid_table(name, df, table_id or f"table-{name}", origin_ns=origin_ns, first=first)


#: Columns a table leads with, by (analyzer, table): what a person reads first. Others keep their order.
FIRST_COLUMNS: dict[tuple[str, str], tuple[str, ...]] = {
    ("kernels", "by_name"): ("name", "category", "total_ns", "share_pct", "count", "mean_ns", "p95_ns"),
    ("kernels", "top_kernels"): ("name", "category", "total_ns", "share_pct", "count", "mean_ns", "p95_ns"),
    ("kernels", "categories"): ("category", "total_ns", "share_pct", "count"),
    ("training_loop", "steps"): ("step", "step_ns", "data_loading_ns", "forward_ns", "backward_ns", "optimizer_ns",
                                 "other_ns"),
    ("training_loop", "phases"): ("phase", "total_ns", "share_pct"),
    ("gpu_time", "steps"): ("step", "step_ns", "busy_pct", "compute_ns", "communication_ns", "idle_ns"),
    ("gpu_time", "breakdown"): ("rank", "window_ns", "compute_pct", "communication_pct", "memcpy_pct", "idle_pct"),
    ("communication", "collectives"): ("name", "type", "dur_ns", "bytes", "busbw_gbps", "exposed_ns"),
    ("communication", "per_step"): ("step", "comm_ns", "exposed_ns", "exposed_pct"),
    ("roofline", "ops"): ("name", "category", "time_ns", "time_share", "bound", "efficiency",
                          "intensity_flop_per_byte", "achieved_flops_per_s"),
    ("roofline", "steps"): ("step", "dur_ns", "mfu", "achieved_flops_per_s"),
    ("memory", "h2d_copies"): ("ts_ns", "name", "bytes", "dur_ns", "host_blocked_ns", "pageable", "synchronous"),
    ("power", "steps"): ("step", "energy_j", "avg_power_w"),
    ("bottleneck", "causes"): ("label", "time_ns", "share", "evidence"),
    ("bottleneck", "whatif"): ("change", "gain_fraction", "step_ns_before", "step_ns_after", "model"),
}


def result_view(result: Result, run_query: str = "", tables: Iterable[str] | None = None,
                origin_ns: int | None = None) -> html.Div:
    """A Result's summary, findings and (selected, default all) tables; empty or repeated tables are named only."""
    names = list(result.tables) if tables is None else [t for t in tables if t in result.tables]
    repeated = duplicate_tables({n: result.tables[n] for n in names})
    empty = [n for n in names if n not in repeated and len(result.tables[n]) == 0]
    shown = [n for n in names if n not in repeated and n not in empty]
    suffix = f" (rank {result.rank})" if result.rank is not None else ""
    notes = []
    if empty:
        notes.append(html.Div(f"no rows: {', '.join(empty)}", className="muted"))
    if repeated:
        notes.append(html.Div(f"left out as the first rows of another table: {', '.join(sorted(repeated))}",
                              className="muted"))
    return html.Div([
        html.H3(result.analyzer + suffix),
        summary_view(result.summary, _summary_docs(result.analyzer), origin_ns),
        findings_list(result.findings, run_query, empty="No findings from this analyzer."),
        *[table_view(n, result.tables[n], f"table-{result.analyzer}-{n}-{result.rank}", origin_ns=origin_ns,
                     first=FIRST_COLUMNS.get((result.analyzer, n), ())) for n in shown],
        *notes,
    ], className="result", **{"data-analyzer": result.analyzer})


def _summary_docs(analyzer: str) -> Mapping[str, str] | None:
    spec = REGISTRY.get(analyzer)
    return spec.summary_keys if spec is not None else None


def analyzer_section(report: Report, name: str, rank: int | None = None, run_query: str = "",
                     tables: Iterable[str] | None = None, origin_ns: int | None = None) -> html.Div:
    """The Result of analyzer ``name`` for ``rank`` (all ranks if None), or why there is none."""
    results = [r for r in report.results if r.analyzer == name and (rank is None or r.rank in (rank, None))]
    if results:
        return html.Div([result_view(r, run_query, tables, origin_ns) for r in results])
    if name in report.skipped:
        return not_available(name, report.skipped[name])
    if name in report.errors:
        return not_available(name, f"the analyzer failed ({report.errors[name]})")
    return not_available(name, "this analyzer is not installed")
