"""Run the before/after advice corpus: does each finding fire before and not after, and is its gain right?

    python benchmarks/advice/run_advice.py                       # every pair (CUDA pairs need a GPU)
    python benchmarks/advice/run_advice.py --pair adam_foreach   # one pair (repeat --pair for more)
    python benchmarks/advice/run_advice.py --markdown --json runs.json
    python benchmarks/advice/run_advice.py --analyze-only        # re-analyze the last recordings

Per pair, one process per rank records the before and the after with plain torch.profiler and with
torchscope.profile, then times both without a profiler, interleaved (benchmarks/advice/record.py).
This process then loads each recording with torchscope.load, runs every analyzer (run_all), and
prints per pair and path: fires before, fires after, estimated gain (the expected finding's
gain_fraction), realized = 1 - median(after step) / median(before step), and |est - real| / real;
then pairs right / total and the median and worst error (benchmarks/advice/scoring.py).
Recordings go to benchmarks/advice/runs/<pair>/ (gitignored). One progress line per pair on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Callable, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script from anywhere: the repository's packages

from benchmarks.advice.pairs import PAIR_NAMES, VARIANTS, clock_of, load_pair  # noqa: E402
from benchmarks.advice.scoring import (PATHS, TOLERANCE, Detection, PairFigures, PathFigures,  # noqa: E402
                                       Summary, summarize)
from torchscope.analyzers.report.units import format_duration_ns, format_share  # noqa: E402

__all__ = ["main", "run_pair", "detect", "render_table", "render_markdown", "figures_json", "MIN_REPS"]

DEFAULT_OUT = HERE / "runs"
#: the realized change needs at least this many interleaved repetitions of each variant
MIN_REPS = 7
#: the default is more, and shorter: on 2 shared cores, other people's bursts then hit before and after
#: alike (two runs of 7 x 0.4 s reps differed by up to 20 points of realized change on a pair)
DEFAULT_REPS = 15
DEFAULT_REP_SECONDS = 0.25
#: rounds of recordings per pair. One 5-step recording samples one moment of a machine whose step time
#: moved 19.6-27.4 ms between three 10-step windows of the same loop (compile_gelu_mlp, CPU time): the
#: recorded step, the denominator of every estimate, moved with it. Three rounds give a median.
DEFAULT_RECORDINGS = 3
#: a pair's ranks that run longer than this are stopped and the pair reported as failed
PAIR_TIMEOUT_S = 1200
#: torch threads per rank. One: this machine's 2 cores are shared, and intra-op threads spinning for a
#: busy core made the small ops of these pairs up to 10x slower (and noisy) when calibrating them
THREADS_PER_RANK = 1
PATH_LABELS = {"torch_profiler": "plain", "torchscope": "bundle"}
#: after the step times of a pair timed by CPU time
CLOCK_MARK = {"wall": "", "cpu": " cpu"}
BOTTLENECK = "bottleneck"
#: the summary key of the expected finding's analyzer that holds its median step time, ns (contract)
STEP_KEY = "step_ns"
#: findings listed for a before that missed its expected finding
INSTEAD_SHOWN = 3
#: the text output's width, columns
WIDTH = 100
MISSING = "-"


def _cuda_devices() -> int:
    import torch  # noqa: PLC0415

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def skip_reason(pair: ModuleType) -> str | None:
    """Why `pair` cannot run on this machine ("skipped: no CUDA"), None when it can."""
    if pair.DEVICE != "cuda":
        return None
    devices = _cuda_devices()
    if devices == 0:
        return "skipped: no CUDA"
    if devices < pair.WORLD_SIZE:
        return f"skipped: needs {pair.WORLD_SIZE} CUDA devices, has {devices}"
    return None


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:160]


def _record(pair: ModuleType, run_dir: Path, reps: int, rep_seconds: float, recordings: int) -> None:
    """Spawn the pair's ranks (benchmarks.advice.record.run_rank) and wait for them."""
    import torch.multiprocessing as mp  # noqa: PLC0415

    from benchmarks.advice.record import RankJob, run_rank  # noqa: PLC0415
    from benchmarks.advice.training import free_port  # noqa: PLC0415

    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    world = int(pair.WORLD_SIZE)
    job = RankJob(pair=pair.NAME, run_dir=str(run_dir), world_size=world, backend=getattr(pair, "BACKEND", None),
                  master_port=free_port(), reps=reps, rep_seconds=rep_seconds, threads=THREADS_PER_RANK,
                  recordings=recordings)
    ctx = mp.start_processes(run_rank, args=(job,), nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + PAIR_TIMEOUT_S
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                if proc.is_alive():
                    proc.kill()
            raise TimeoutError(f"ranks still running after {PAIR_TIMEOUT_S} s")


def detect(path: Path, expected: str) -> Detection:
    """Load one recording, run every analyzer and say whether `expected` fired, with its gain."""
    import torchscope  # noqa: PLC0415

    try:
        report = torchscope.run_all(torchscope.load(path))
    except Exception as exc:  # noqa: BLE001 - a recording that cannot be analyzed is a figure, not a crash
        return Detection(fired=False, error=_one_line(exc))
    ranked = tuple((f.id, float(f.gain_fraction)) for f in report.findings)
    analyzer = expected.split(".", 1)[0]
    note = (f"{analyzer} failed: {report.errors[analyzer]}".splitlines()[0][:160] if analyzer in report.errors
            else f"{analyzer} skipped: {report.skipped[analyzer]}" if analyzer in report.skipped else None)
    result = report.result(analyzer)
    step_ns = result.summary.get(STEP_KEY) if result is not None else None
    step_ns = int(step_ns) if isinstance(step_ns, (int, float)) and step_ns == step_ns else None
    model = report.result("bottleneck")
    untraced = dict(untraced_step_ns=model.summary.get("untraced_step_ns"),
                    measured_overhead_replay_error_share=model.summary.get("measured_overhead_replay_error_share")) \
        if model is not None else {}
    hits = [f for f in report.findings if f.id == expected]
    if not hits:
        return Detection(fired=False, findings=ranked, analyzer_note=note, recorded_step_ns=step_ns, **untraced)
    best = max(hits, key=lambda f: f.gain_fraction)
    unknown = best.gain_fraction == 0 and "unknown" in best.estimated_gain.lower()
    return Detection(fired=True, gain_fraction=None if unknown else float(best.gain_fraction),
                     estimated_gain=best.estimated_gain, findings=ranked, analyzer_note=note,
                     recorded_step_ns=step_ns, **untraced)


def _rounds_recorded(run_dir: Path) -> int:
    """How many rounds of recordings a pair's run folder holds (every variant and path has each round)."""
    from benchmarks.advice.record import recording_dir  # noqa: PLC0415

    k = 1
    while all(recording_dir(run_dir, v, p, k + 1).exists() for v in VARIANTS for p in PATHS):
        k += 1
    return k


def _path_figures(run_dir: Path, path: str, expected: str, rounds_recorded: int) -> PathFigures:
    from benchmarks.advice.record import recording_dir  # noqa: PLC0415

    rounds = [tuple(detect(recording_dir(run_dir, v, path, k), expected) for v in VARIANTS)
              for k in range(1, rounds_recorded + 1)]
    return PathFigures(path, *rounds[0], repeats=tuple(rounds[1:]))


def run_pair(pair: ModuleType, out: Path, *, reps: int = DEFAULT_REPS, rep_seconds: float = DEFAULT_REP_SECONDS,
             recordings: int = DEFAULT_RECORDINGS, analyze_only: bool = False) -> PairFigures:
    """Record (unless analyze_only), time and analyze one pair; failures become the figures' status."""
    from benchmarks.advice.record import TIMING_FILE  # noqa: PLC0415

    figures = PairFigures(name=pair.NAME, expected=pair.EXPECTED, change=pair.CHANGE)
    reason = skip_reason(pair)
    if reason is not None:
        return replace(figures, status=reason)
    run_dir = out / pair.NAME
    try:
        if not analyze_only:
            _record(pair, run_dir, reps, rep_seconds, recordings)
        timing = json.loads((run_dir / TIMING_FILE).read_text())
    except Exception as exc:  # noqa: BLE001 - one failed pair must not stop the corpus
        return replace(figures, status=f"error: {_one_line(exc)}")
    rounds = _rounds_recorded(run_dir)
    paths = tuple(_path_figures(run_dir, path, pair.EXPECTED, rounds) for path in PATHS)
    key = "_cpu_step_s" if clock_of(pair) == "cpu" else "_step_s"
    return replace(figures, clock=clock_of(pair), before_step_s=tuple(timing["before" + key]),
                   after_step_s=tuple(timing["after" + key]), paths=paths)


# ---- output --------------------------------------------------------------------------------------
COLUMNS = ("pair", "path", "before", "after", "estimated", "realized", "|err|", "median step before -> after")
WIDTHS = (25, 6, 6, 5, 9, 8, 6, 0)
#: the markdown table's last column: the estimate of each round, of which "estimated" is the median
SPREAD_COLUMN = "estimate per recording"


def _yes_no(d: Detection) -> str:
    return "error" if d.error else ("yes" if d.fired else "no")


def _fired_text(detections: Sequence[Detection]) -> str:
    """yes / no for one recording or when every round agrees; else how many rounds fired ("2/3")."""
    if len(detections) == 1 or len({_yes_no(d) for d in detections}) == 1:
        return _yes_no(detections[0])
    return f"{sum(d.fired for d in detections)}/{len(detections)}"


def _estimates_text(f: PathFigures) -> str:
    """Each round's estimate, in the order recorded (the markdown table's spread column)."""
    return ", ".join(MISSING if not d.fired else "unknown" if d.gain_fraction is None else format_share(d.gain_fraction)
                     for d in f.befores)


def _share(value: float | None) -> str:
    return MISSING if value is None else format_share(value)


def _estimate_text(f: PathFigures) -> str:
    if not f.fires_before:
        return MISSING
    return "unknown" if f.estimated is None else format_share(f.estimated)


def _rows(pairs: Sequence[PairFigures], *, per_round: bool = False) -> list[tuple[str, ...]]:
    """One row per pair and path; ``per_round`` adds each round's estimate (SPREAD_COLUMN) at the end."""
    rows: list[tuple[str, ...]] = []
    for p in pairs:
        if p.status != "ok":
            rows.append((p.name, p.status))
            continue
        steps = f"{format_duration_ns(p.before_ns)} -> {format_duration_ns(p.after_ns)}" + CLOCK_MARK[p.clock]
        for i, f in enumerate(p.paths):
            err = p.error_of(f)
            rows.append((p.name if i == 0 else "", PATH_LABELS[f.path], _fired_text(f.befores), _fired_text(f.afters),
                         _estimate_text(f), _share(p.realized) if i == 0 else "", _share(err),
                         steps if i == 0 else "") + ((_estimates_text(f),) if per_round else ()))
    return rows


def _summary_lines(s: Summary) -> list[str]:
    per_path = ", ".join(f"{PATH_LABELS[k]} {v}/{s.total}" for k, v in s.right_by_path.items())
    lines = [f"pairs right: {s.right}/{s.total} (both paths; {per_path})"
             + (f"; {s.skipped} skipped" if s.skipped else ""),
             f"|est - real| / real over {len(s.errors)} estimates: median {_share(s.median_error)}, "
             f"worst {_share(s.worst_error)}"]
    return lines


def _notes(pairs: Sequence[PairFigures]) -> list[str]:
    notes = [f"right = fires before, not after, and |est - real| / real <= {format_share(TOLERANCE)}",
             "plain = recorded with torch.profiler, bundle = recorded with torchscope.profile",
             "step times by the wall clock; 'cpu': by the process's CPU time (host-compute-only pairs)"]
    errors = {f"{p.name} {PATH_LABELS[f.path]} {v}: {d.error}" for p in pairs for f in p.paths
              for v, ds in (("before", f.befores), ("after", f.afters)) for d in ds if d.error}
    notes += sorted(errors)
    notes += _untraced_notes(pairs)
    for p in pairs:  # what the analyzers said instead, where the before missed the expected finding
        for f in p.paths:
            missed = next((d for d in f.befores if not d.fired and not d.error), None)
            if missed is not None:
                top = ", ".join(f"{i} {format_share(g)}" for i, g in missed.findings[:INSTEAD_SHOWN]) or "nothing"
                why = f" ({missed.analyzer_note})" if missed.analyzer_note else ""
                notes.append(f"{p.name} {PATH_LABELS[f.path]} before found instead: {top}{why}")
    return notes


def _untraced_notes(pairs: Sequence[PairFigures]) -> list[str]:
    """Per pair, what tracing cost the bundle path's before recordings (their steps with the profiler off against
    the traced ones) and how far the step model's replay without the profiler lands from those steps."""
    parts = []
    for p in pairs:
        ds = [d for f in p.paths for d in f.befores if d.untraced_step_ns and d.recorded_step_ns]
        if ds:
            slow = sorted(d.recorded_step_ns / d.untraced_step_ns for d in ds)
            err = sorted(d.measured_overhead_replay_error_share for d in ds if d.measured_overhead_replay_error_share is not None)
            parts.append(f"{p.name} {slow[0]:.2f}-{slow[-1]:.2f}x"
                         + (f" ({_share(err[0])}-{_share(err[-1])})" if err else ""))
    if not parts:
        return []
    return ["traced step / untraced step on the bundle path's before recordings (in brackets: the step model's "
            "replay without the profiler, with the per-op cost the trace alone measures, against the untraced "
            "step; the bundle's gains use a cost fitted to that step): " + "; ".join(parts)]


def render_table(pairs: Sequence[PairFigures], *, bottleneck_registered: bool = True) -> str:
    """The corpus as fixed-width text, at most WIDTH (100) columns, then the summary."""
    def line(cells: Sequence[str]) -> str:
        if len(cells) == 2:  # a skipped or failed pair: its status fills the rest of the line
            return f"{cells[0]:<{WIDTHS[0]}s} {cells[1]}"[:WIDTH]
        return " ".join(f"{c:<{w}s}" if w else c for c, w in zip(cells, WIDTHS)).rstrip()[:WIDTH]

    out = [line(COLUMNS), line(["-" * (w or 27) for w in WIDTHS])]
    out += [line(r) for r in _rows(pairs)]
    out += [""] + _summary_lines(summarize(pairs)) + [w for n in _notes(pairs) for w in textwrap.wrap(n, WIDTH, subsequent_indent="    ")]
    if not bottleneck_registered:
        out.append("note: no 'bottleneck' analyzer is registered yet, so no bottleneck.* finding can fire")
    return "\n".join(out)


def render_markdown(pairs: Sequence[PairFigures], *, bottleneck_registered: bool = True) -> str:
    """The corpus as a Markdown table, then the summary, for the README."""
    columns = (*COLUMNS, SPREAD_COLUMN)
    out = ["| " + " | ".join(c.replace("|", "\\|") for c in columns) + " |", "|" + "---|" * len(columns)]
    for r in _rows(pairs, per_round=True):
        cells = list(r) + [""] * (len(columns) - len(r))
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    out += [""] + [f"- {ln}" for ln in _summary_lines(summarize(pairs)) + _notes(pairs)]
    if not bottleneck_registered:
        out.append("- note: no 'bottleneck' analyzer is registered yet, so no bottleneck.* finding can fire")
    return "\n".join(out)


def _detection_json(d: Detection) -> dict:
    return {"fired": d.fired, "gain_fraction": d.gain_fraction, "estimated_gain": d.estimated_gain,
            "error": d.error, "analyzer_note": d.analyzer_note, "recorded_step_ns": d.recorded_step_ns,
            "untraced_step_ns": d.untraced_step_ns, "measured_overhead_replay_error_share": d.measured_overhead_replay_error_share,
            "findings": [{"id": i, "gain_fraction": g} for i, g in d.findings]}


def figures_json(pairs: Sequence[PairFigures]) -> dict:
    """Every figure of the run as plain JSON (per pair, per path, and the summary)."""
    s = summarize(pairs)
    return {
        "tolerance": TOLERANCE,
        "pairs": [{
            "name": p.name, "expected": p.expected, "change": p.change, "status": p.status, "clock": p.clock,
            "before_step_s": list(p.before_step_s), "after_step_s": list(p.after_step_s),
            "before_median_ns": p.before_ns, "after_median_ns": p.after_ns, "realized": p.realized,
            "realized_paired": p.realized_paired,
            "right": p.right,
            "paths": {f.path: {"before": _detection_json(f.before), "after": _detection_json(f.after),
                               "rounds": [{"before": _detection_json(b), "after": _detection_json(a)}
                                          for b, a in zip(f.befores, f.afters)],
                               "estimates": list(f.estimates), "estimated": f.estimated,
                               "relative_error": p.error_of(f), "right": p.right_on(f)}
                      for f in p.paths},
        } for p in pairs],
        "summary": {"right": s.right, "total": s.total, "right_by_path": s.right_by_path, "skipped": s.skipped,
                    "median_error": s.median_error, "worst_error": s.worst_error, "errors": list(s.errors)},
    }


def _bottleneck_registered() -> bool:
    from torchscope.analyzers.core.registry import load_analyzers  # noqa: PLC0415

    return BOTTLENECK in load_analyzers()


def _progress(i: int, n: int, name: str) -> Callable[[PairFigures, float], None]:
    print(f"[{i}/{n}] {name} ...", file=sys.stderr, flush=True)

    def done(figures: PairFigures, seconds: float) -> None:
        what = (figures.status if figures.status != "ok"
                else f"realized {_share(figures.realized)}, fires before "
                     + "/".join(_fired_text(f.befores) for f in figures.paths))
        print(f"[{i}/{n}] {name}: {what} ({seconds:.0f} s)", file=sys.stderr, flush=True)

    return done


def main(argv: list[str] | None = None) -> int:
    """Run the corpus (or the named pairs) and print the table; 0 when it ran, 2 on bad usage."""
    parser = argparse.ArgumentParser(prog="run_advice.py", description=__doc__.splitlines()[0])
    parser.add_argument("--pair", action="append", default=None, metavar="NAME", help="run only this pair (repeatable)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="write every figure to FILE")
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS, help=f"timed repetitions of each variant (>= {MIN_REPS})")
    parser.add_argument("--rep-seconds", type=float, default=DEFAULT_REP_SECONDS, help="length of one repetition")
    parser.add_argument("--recordings", type=int, default=DEFAULT_RECORDINGS,
                        help=f"rounds of recordings per pair, estimate = their median (default {DEFAULT_RECORDINGS})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the recordings go")
    parser.add_argument("--analyze-only", action="store_true", help="analyze the recordings already in --out")
    args = parser.parse_args(argv)
    names = args.pair or list(PAIR_NAMES)
    unknown = [n for n in names if n not in PAIR_NAMES]
    if unknown:
        print(f"run_advice.py: unknown pair {unknown[0]!r} (known: {', '.join(PAIR_NAMES)})", file=sys.stderr)
        return 2
    if args.reps < MIN_REPS:
        print(f"run_advice.py: --reps must be at least {MIN_REPS}, got {args.reps}", file=sys.stderr)
        return 2
    if args.recordings < 1:
        print(f"run_advice.py: --recordings must be at least 1, got {args.recordings}", file=sys.stderr)
        return 2
    if not args.rep_seconds > 0:
        print(f"run_advice.py: --rep-seconds must be positive, got {args.rep_seconds}", file=sys.stderr)
        return 2
    figures = []
    loads = [_load_average()]
    for i, name in enumerate(names, 1):
        done = _progress(i, len(names), name)
        t0 = time.monotonic()
        figures.append(run_pair(load_pair(name), args.out, reps=args.reps, rep_seconds=args.rep_seconds,
                                recordings=args.recordings, analyze_only=args.analyze_only))
        loads.append(_load_average())
        done(figures[-1], time.monotonic() - t0)
    registered = _bottleneck_registered()
    if args.json is not None:  # first: the figures are kept even when stdout is closed early
        args.json.write_text(json.dumps(figures_json(figures), indent=1))
    render = render_markdown if args.markdown else render_table
    print(render(figures, bottleneck_registered=registered))
    if not args.analyze_only:
        print(load_line(loads, os.cpu_count() or 1))
    return 0


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on Windows
        return None


#: Load average above this share of the CPUs before the corpus starts marks a run whose realized changes are not
#: fit to judge by. Only that first sample tells other work: during the run the corpus's own ranks and
#: DataLoader workers count in the load average too.
BUSY_LOAD_SHARE = 0.75


def load_line(loads: Sequence[float | None], cpus: int) -> str:
    """The machine's 1-minute load average before and over the run, and a warning when other work shared the
    CPUs as it started: the recording is wall-clock time and the realized change is timed at another moment, so
    contention that differs between the two moves the error, not the model."""
    seen = [v for v in loads if v is not None]
    if not seen or loads[0] is None:
        return "load average: unknown on this platform"
    line = (f"load average before the run: {loads[0]:.1f} on {cpus} CPUs; over it {min(seen):.1f}-{max(seen):.1f} "
            "(the corpus's own ranks and DataLoader workers included)")
    if loads[0] > BUSY_LOAD_SHARE * cpus:
        line += (" -- busy: other work shared the CPUs, so the recordings and the realized changes were measured "
                 "under different contention; judge the estimates on a quiet machine")
    return textwrap.fill(line, width=100, subsequent_indent="  ")


if __name__ == "__main__":
    sys.exit(main())
