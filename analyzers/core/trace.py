"""In-memory model of a loaded trace: typed pandas frames plus metadata.

Column contract of ``Trace.events`` (one row per complete or instant event):

=============  ==========  =====================================================
column         dtype       meaning
=============  ==========  =====================================================
ts_ns          int64       start, absolute ns (file µs × 1000 + baseTimeNanoseconds)
dur_ns         int64       duration in ns (0 for instants)
name           category    event name
cat            category    category as spelled in the file
kind           category    normalised category (see ``KINDS``)
ph             category    Chrome trace phase ("X", "i", ...)
pid, tid       int64       process / thread (GPU: device / stream); -1 if not numeric
stream         int64       CUDA/HIP stream from args, -1 if none
device         int64       device index from args, -1 if none
correlation    int64       runtime↔kernel correlation id, -1 if none
external_id    int64       op↔kernel external id, -1 if none
rank           int32       rank of the trace
args           object      the event's args: raw JSON bytes, a dict or None (read via core.args.decode_args)
=============  ==========  =====================================================

``Trace.counters`` (one row per series of a ``"ph": "C"`` event, e.g. our power and host samples):

=============  ==========  =====================================================
column         dtype       meaning
=============  ==========  =====================================================
ts_ns          int64       sample time, absolute ns
pid            int64       process of the counter event, -1 if not numeric
name           category    counter name (e.g. ``power_w``)
series         category    series inside the counter (e.g. ``gpu0``)
value          float64     the sample
rank           int32       rank of the trace
=============  ==========  =====================================================

``Trace.flows`` (one row per flow event, e.g. launch→kernel ``ac2g`` arrows):

=============  ==========  =====================================================
column         dtype       meaning
=============  ==========  =====================================================
id             int64       flow id shared by the start and its finish
ph             category    "s" (start), "t" (step) or "f" (finish)
cat            category    flow category as spelled in the file
ts_ns          int64       time, absolute ns
pid, tid       int64       process / thread, -1 if not numeric
rank           int32       rank of the trace
=============  ==========  =====================================================

``Trace.streams`` maps a bundle's JSONL stream name (samples, steps, moe, ...) to its lines as a
DataFrame, columns as written by the profiler; empty for a plain trace file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator, Mapping

import numpy as np
import pandas as pd

__all__ = ["Trace", "TraceMeta", "TraceSet", "KINDS", "GPU_WORK_KINDS", "distinct_names", "name_mask"]

#: Normalised event kinds, independent of the Kineto version or GPU vendor that wrote the file.
KINDS = (
    "kernel", "memcpy", "memset", "gpu_annotation", "runtime", "driver", "cuda_sync",
    "cpu_op", "annotation", "python", "memory", "phase", "module", "instant", "other",
)
#: Kinds that occupy a GPU stream.
GPU_WORK_KINDS = ("kernel", "memcpy", "memset")

_STEP_PREFIX = "ProfilerStep#"


@dataclass(frozen=True)
class TraceMeta:
    """Metadata of one rank's trace: where it came from, devices, distributed info."""

    path: str
    rank: int = 0
    world_size: int = 1
    distributed: Mapping = field(default_factory=dict)
    device_properties: tuple = ()
    schema_version: object = None
    trace_name: str | None = None
    base_time_ns: int = 0
    manifest: Mapping | None = None
    processes: Mapping = field(default_factory=dict)
    threads: Mapping = field(default_factory=dict)
    dropped_events: int = 0
    warnings: tuple = ()

    @property
    def device_name(self) -> str | None:
        """Name of the first GPU in deviceProperties, or of the manifest's first device."""
        for props in self.device_properties:
            if props.get("name"):
                return str(props["name"])
        if self.manifest:
            for dev in self.manifest.get("devices") or ():
                if isinstance(dev, Mapping) and dev.get("name"):
                    return str(dev["name"])
        return None


@dataclass(frozen=True)
class Trace:
    """One rank's events, counters, flows and JSONL streams as typed DataFrames."""

    events: pd.DataFrame
    counters: pd.DataFrame
    flows: pd.DataFrame
    meta: TraceMeta
    streams: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    #: Values derived once from the frames and shared by the analyzers (see `derived`).
    _derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def derived(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """``build()`` computed once per trace and kept: for values several analyzers derive alike.

        The frames of a loaded trace are never modified, so a value built from them stays right; it is
        shared, so callers must treat it as read-only (copy before changing it). Not kept across pickling.
        """
        try:
            return self._derived[key]
        except KeyError:
            value = self._derived[key] = build()
            return value

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_derived"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)

    @property
    def rank(self) -> int:
        """Rank id of this trace."""
        return self.meta.rank

    def of_kind(self, *kinds: str) -> pd.DataFrame:
        """Events whose normalised kind is one of ``kinds``."""
        return self.events[self.events["kind"].isin(kinds)]

    def gpu_events(self) -> pd.DataFrame:
        """Kernels, memcpys and memsets: the work that occupies GPU streams."""
        return self.of_kind(*GPU_WORK_KINDS)

    def steps(self) -> pd.DataFrame:
        """``ProfilerStep#N`` annotations sorted by time, with an int ``step`` column."""
        ev = self.events
        mask = ev["kind"].isin(("annotation", "cpu_op")) & ev["name"].astype(str).str.startswith(_STEP_PREFIX)
        steps = ev[mask].copy()
        steps["step"] = pd.to_numeric(
            steps["name"].astype(str).str.slice(len(_STEP_PREFIX)), errors="coerce"
        ).astype("Int64")
        steps = steps[steps["step"].notna()].astype({"step": np.int64})
        # Kineto sometimes writes the same step on the CPU and as a GPU annotation: keep one per step.
        return steps.sort_values("ts_ns").drop_duplicates("step").reset_index(drop=True)

    @property
    def span_ns(self) -> tuple[int, int]:
        """(first start, last end) over all events, ns."""
        ev = self.events
        if ev.empty:
            return (0, 0)
        return int(ev["ts_ns"].min()), int((ev["ts_ns"] + ev["dur_ns"]).max())


@dataclass(frozen=True)
class TraceSet:
    """Several ranks of one job, keyed by rank id."""

    ranks: Mapping[int, Trace]
    path: str = ""

    def __iter__(self) -> Iterator[Trace]:
        return iter(self.ranks[r] for r in sorted(self.ranks))

    def __len__(self) -> int:
        return len(self.ranks)

    def __getitem__(self, rank: int) -> Trace:
        return self.ranks[rank]

    @property
    def world_size(self) -> int:
        """World size stated by the traces, or the number of ranks loaded."""
        return max([t.meta.world_size for t in self.ranks.values()] + [len(self.ranks)])


def distinct_names(names: pd.Series) -> pd.Series:
    """The distinct values of a name column as strings (a categorical's categories, in their order)."""
    if isinstance(names.dtype, pd.CategoricalDtype):
        return pd.Series(names.cat.categories.astype(str), dtype=object)
    return pd.Series(pd.unique(names.astype(str)), dtype=object)


def name_mask(names: pd.Series, rule: Callable[[pd.Series], object]) -> np.ndarray:
    """Per event, ``rule`` of its name: ``rule`` maps the distinct names (a str Series) to booleans.

    Traces hold a few thousand distinct names for hundreds of thousands of events, so a name rule
    (a regex, a prefix test) runs once per distinct name and is spread back over the events.
    """
    if isinstance(names.dtype, pd.CategoricalDtype):
        codes = names.cat.codes.to_numpy()
        uniq = pd.Series(names.cat.categories.astype(str), dtype=object)
    else:
        codes, values = pd.factorize(names.astype(str))
        uniq = pd.Series(values, dtype=object)
    if len(uniq) == 0:
        return np.zeros(len(names), dtype=bool)
    hit = np.asarray(rule(uniq), dtype=bool)
    return (codes >= 0) & hit[np.maximum(codes, 0)]
