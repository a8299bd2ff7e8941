"""The corpus's figures and how they are judged: fires before, not after, estimate within ±20% of realized.

Pure arithmetic over figures the runner measured (no torch, no traces), so the tests can check it
on hand-made numbers.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Sequence

__all__ = ["TOLERANCE", "PATHS", "Detection", "PathFigures", "PairFigures", "Summary", "realized_change",
           "relative_error", "summarize"]

#: an estimate is right when |estimated - realized| / |realized| is at most this
TOLERANCE = 0.20
#: the two ways a pair is recorded: plain torch.profiler (a foreign trace) and torchscope.profile (a bundle)
PATHS: tuple[str, ...] = ("torch_profiler", "torchscope")


@dataclass(frozen=True)
class Detection:
    """What the analyzers said about one recording: did the expected finding fire, with what gain."""

    fired: bool
    #: the finding's gain_fraction (0..1 of step time); None when it did not fire or said "unknown"
    gain_fraction: float | None = None
    estimated_gain: str = ""
    #: every finding id of the report with its gain_fraction, largest first
    findings: tuple[tuple[str, float], ...] = ()
    #: why the recording could not be analyzed (then fired is False)
    error: str | None = None
    #: why the expected finding's analyzer skipped or failed on this recording, if it did
    analyzer_note: str | None = None
    #: the median step of the recording as that analyzer measured it (profiler on), ns; None if it did not
    recorded_step_ns: int | None = None
    #: the bundle path's steps with the profiler off (bottleneck's untraced_step_ns), ns, and how far the step
    #: model's replay without the profiler landed from them with the per-op cost the trace alone measures
    #: (measured_overhead_replay_error_share); None on the plain path
    untraced_step_ns: int | None = None
    measured_overhead_replay_error_share: float | None = None


@dataclass(frozen=True)
class PathFigures:
    """One recording path of one pair: the before's and the after's detections, first round and repeats.

    A recording is five steps, one sample of the machine's speed in that second; with several rounds the
    path fires before when every before recording fired, fires after when any after recording did, and
    its estimate is the median of the before recordings' estimates (`estimates` keeps them all)."""

    path: str
    before: Detection
    after: Detection
    #: the (before, after) detections of the rounds after the first
    repeats: tuple[tuple[Detection, Detection], ...] = ()

    @property
    def befores(self) -> tuple[Detection, ...]:
        """The before's detections, one per round."""
        return (self.before, *(b for b, _ in self.repeats))

    @property
    def afters(self) -> tuple[Detection, ...]:
        """The after's detections, one per round."""
        return (self.after, *(a for _, a in self.repeats))

    @property
    def fires_before(self) -> bool:
        """The expected finding fired on every before recording."""
        return all(d.fired for d in self.befores)

    @property
    def fires_after(self) -> bool:
        """The expected finding fired on any after recording (it should on none)."""
        return any(d.fired for d in self.afters)

    @property
    def estimates(self) -> tuple[float, ...]:
        """Each before recording's estimate (0..1 of step time), where it fired with one."""
        return tuple(d.gain_fraction for d in self.befores if d.fired and d.gain_fraction is not None)

    @property
    def estimated(self) -> float | None:
        """The gain the before's finding predicts (median over rounds, 0..1 of step time); None when it gave none."""
        values = self.estimates
        return statistics.median(values) if values and self.fires_before else None


@dataclass(frozen=True)
class PairFigures:
    """Everything measured for one pair: step times without a profiler and each path's detections."""

    name: str
    expected: str
    change: str
    #: "ok", "skipped: <why>" or "error: <one line>"
    status: str = "ok"
    #: what the step times below were measured by: "wall" or "cpu" (the process's CPU time)
    clock: str = "wall"
    #: per-step seconds of each timed repetition, in the order they ran (before and after interleaved)
    before_step_s: tuple[float, ...] = ()
    after_step_s: tuple[float, ...] = ()
    paths: tuple[PathFigures, ...] = field(default_factory=tuple)

    @property
    def before_ns(self) -> int | None:
        """Median step time of the before, ns."""
        return int(statistics.median(self.before_step_s) * 1e9) if self.before_step_s else None

    @property
    def after_ns(self) -> int | None:
        """Median step time of the after, ns."""
        return int(statistics.median(self.after_step_s) * 1e9) if self.after_step_s else None

    @property
    def realized(self) -> float | None:
        """1 - median(after) / median(before): the share of step time the change saved (negative: slower)."""
        return realized_change(self.before_step_s, self.after_step_s)

    @property
    def realized_paired(self) -> float | None:
        """1 - median of after/before over adjacent repetitions: a check on `realized` less moved by drift."""
        ratios = [a / b for b, a in zip(self.before_step_s, self.after_step_s) if b > 0]
        return 1.0 - statistics.median(ratios) if ratios else None

    def error_of(self, path: PathFigures) -> float | None:
        """|estimated - realized| / |realized| for one path, None when either is missing."""
        return relative_error(path.estimated, self.realized)

    def right_on(self, path: PathFigures) -> bool:
        """Fires before, not after, and the estimate is within TOLERANCE of the realized change."""
        err = self.error_of(path)
        return path.fires_before and not path.fires_after and err is not None and err <= TOLERANCE

    @property
    def right(self) -> bool:
        """Right on every recording path."""
        return self.status == "ok" and bool(self.paths) and all(self.right_on(p) for p in self.paths)


def realized_change(before_step_s: Sequence[float], after_step_s: Sequence[float]) -> float | None:
    """1 - median(after) / median(before), from per-step seconds of interleaved repetitions."""
    if not before_step_s or not after_step_s:
        return None
    before = statistics.median(before_step_s)
    return 1.0 - statistics.median(after_step_s) / before if before > 0 else None


def relative_error(estimated: float | None, realized: float | None) -> float | None:
    """|estimated - realized| / |realized|; None when either is missing or nothing was realized."""
    if estimated is None or realized is None or realized == 0:
        return None
    return abs(estimated - realized) / abs(realized)


@dataclass(frozen=True)
class Summary:
    """The corpus in a few numbers."""

    right: int
    total: int
    #: per recording path: pairs right on that path
    right_by_path: dict[str, int]
    skipped: int
    #: |estimated - realized| / |realized| over every (pair, path) that gave an estimate
    errors: tuple[float, ...]

    @property
    def median_error(self) -> float | None:
        """Median relative error of the estimates, None when there is none."""
        return statistics.median(self.errors) if self.errors else None

    @property
    def worst_error(self) -> float | None:
        """Largest relative error of the estimates, None when there is none."""
        return max(self.errors) if self.errors else None


def summarize(pairs: Sequence[PairFigures]) -> Summary:
    """Pairs right / total (skipped pairs left out, failed ones counted as wrong) and the estimate errors."""
    measured = [p for p in pairs if not p.status.startswith("skipped")]
    by_path = {path: sum(1 for p in measured for f in p.paths if f.path == path and p.right_on(f))
               for path in PATHS}
    errors = tuple(e for p in measured for f in p.paths if (e := p.error_of(f)) is not None)
    return Summary(right=sum(p.right for p in measured), total=len(measured), right_by_path=by_path,
                   skipped=len(pairs) - len(measured), errors=errors)
