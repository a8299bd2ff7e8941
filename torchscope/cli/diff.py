"""`torchscope diff BASE NEW` / `trace-diff BASE NEW`: the regression gate's command line."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from pathlib import Path
from typing import Iterator, Sequence

from torchscope.analyzers.core.errors import TraceError
from torchscope.analyzers.io.cache import ENV_NO_CACHE
from torchscope.analyzers.diff.metrics import DEFAULT_WARMUP_STEPS, StepSelection, parse_steps
from torchscope.analyzers.diff.model import DEFAULT_MIN_DELTA, FAIL_ON, GATES, DiffOptions, diff_paths, parse_min_delta
from torchscope.analyzers.diff.stats import DEFAULT_ALPHA, DEFAULT_THRESHOLD

__all__ = ["register", "run_command", "invoked_prog", "TRACE_DIFF_PROG"]

#: The alias's program name (`trace-diff BASE NEW`, the console script that runs `torchscope diff`).
TRACE_DIFF_PROG = "trace-diff"


def invoked_prog(argv0: str | None = None) -> str | None:
    """``TRACE_DIFF_PROG`` when the process runs as the `trace-diff` script (``sys.argv[0]``), else None."""
    name = Path(sys.argv[0] if argv0 is None else argv0).name
    return TRACE_DIFF_PROG if name in (TRACE_DIFF_PROG, f"{TRACE_DIFF_PROG}.exe") else None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `diff` subcommand; run as `trace-diff`, its usage, help and errors say `trace-diff`."""
    from torchscope.analyzers.diff.render import FORMATS

    prog = invoked_prog()
    p = subparsers.add_parser(
        "diff", help="compare two runs and exit 1 when NEW regressed", **({"prog": prog} if prog else {}),
        description="Compare BASE and NEW (trace files, run bundles, folders of repeated runs) and exit 1 "
                    "when NEW regressed. Exit codes: 0 ok, 1 regression, 2 bad input or usage.")
    p.add_argument("base", metavar="BASE", help="baseline: a trace, a run bundle, or a folder of run bundles")
    p.add_argument("new", metavar="NEW", help="candidate: a trace, a run bundle, or a folder of run bundles")
    p.add_argument("--base", dest="more_base", action="append", default=[], metavar="PATH",
                   help="another baseline run (repeated runs; repeatable)")
    p.add_argument("--new", dest="more_new", action="append", default=[], metavar="PATH",
                   help="another candidate run (repeatable)")
    p.add_argument("--rank", type=int, default=None, help="rank to compare (default: the lowest rank present)")
    p.add_argument("--steps", default=None, metavar="A:B,C",
                   help="ProfilerStep numbers to compare, inclusive ranges allowed (default: all but warm-up)")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP_STEPS, metavar="N",
                   help="steps skipped at the start of each run when --steps is not given "
                        f"(default {DEFAULT_WARMUP_STEPS})")
    p.add_argument("--threshold", type=_percent, default=DEFAULT_THRESHOLD, metavar="FRACTION",
                   help="relative change that counts, e.g. 0.05 or 5%% (default 5%%)")
    p.add_argument("--min-delta", action="append", default=[], metavar="AMOUNT",
                   help="absolute change that counts, per unit: 2ms, 64MiB, 5J, 0.01 (repeatable)")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="significance level (default 0.05)")
    p.add_argument("--gate", choices=GATES, default="headline", help="which metrics gate (default headline)")
    p.add_argument("--fail-on", choices=FAIL_ON, default="regression",
                   help="exit 1 on a regression (default), on any change, or never")
    p.add_argument("--format", action="append", default=[], metavar="FMT[=PATH]",
                   help=f"report format ({', '.join(FORMATS)}), to stdout or PATH (repeatable)")
    p.add_argument("--output", action="append", default=[], metavar="PATH",
                   help="write a report; its format follows the suffix (.json .md .xml .txt) (repeatable)")
    p.add_argument("--top", type=int, default=15, help="diagnostic rows shown in the text reports (default 15)")
    p.add_argument("--no-cache", action="store_true",
                   help="parse the trace files again; neither read nor write the columnar cache")
    p.set_defaults(func=run_command, diff_prog=p.prog)


def run_command(args: argparse.Namespace) -> int:
    """Run `torchscope diff` from parsed arguments; returns the exit code."""
    from torchscope.analyzers.diff.render import FORMATS, format_for_path, render, write_github_summary

    try:
        options = _options_from_args(args)
        targets = [_format_target(spec, FORMATS) for spec in args.format]
        targets += [(format_for_path(path), path) for path in args.output]
    except ValueError as exc:
        sys.stderr.write(f"{getattr(args, 'diff_prog', 'torchscope diff')}: error: {exc}\n")
        return 2
    if not any(path is None for _, path in targets):
        targets.insert(0, ("text", None))
    with _cache_off(getattr(args, "no_cache", False)):
        report = diff_paths([args.base, *args.more_base], [args.new, *args.more_new], options)
    for fmt, path in targets:
        text = render(report, fmt, top=args.top)
        if path is None or path == "-":
            sys.stdout.write(text)
        else:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                Path(path).write_text(text, encoding="utf-8")
            except OSError as exc:
                raise TraceError(path, f"cannot write the report: {exc.strerror or exc}") from None
    write_github_summary(report, top=args.top)
    return report.exit_code


@contextlib.contextmanager
def _cache_off(off: bool) -> Iterator[None]:
    """With ``off``, $TORCHSCOPE_NO_CACHE set while the diff loads its runs (its loads take no cache= argument)."""
    if not off:
        yield
        return
    before = os.environ.get(ENV_NO_CACHE)
    os.environ[ENV_NO_CACHE] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV_NO_CACHE, None)
        else:
            os.environ[ENV_NO_CACHE] = before


def _options_from_args(args: argparse.Namespace) -> DiffOptions:
    min_delta = dict(DEFAULT_MIN_DELTA)
    for spec in args.min_delta:
        unit, amount = parse_min_delta(spec)
        if unit == "ratio":
            min_delta["ratio"] = amount
            min_delta["fraction"] = amount
        else:
            min_delta[unit] = amount
    steps = parse_steps(args.steps) if args.steps else None
    if args.warmup < 0:
        raise ValueError("--warmup must be 0 or more")
    if not 0 < args.alpha < 1:
        raise ValueError("--alpha must be between 0 and 1")
    if args.threshold < 0 or not math.isfinite(args.threshold):
        raise ValueError("--threshold must be 0 or more")
    return DiffOptions(threshold=args.threshold, min_delta=min_delta, alpha=args.alpha, gate=args.gate,
                       fail_on=args.fail_on, selection=StepSelection(steps=steps, warmup=args.warmup),
                       rank=args.rank)


def _format_target(spec: str, formats: Sequence[str]) -> tuple[str, str | None]:
    fmt, _, path = spec.partition("=")
    fmt = fmt.strip().lower()
    if fmt not in formats:
        raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(formats)})")
    return fmt, (path or None)


def _percent(text: str) -> float:
    text = text.strip()
    try:
        return float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a fraction or percentage: {text!r}") from None

