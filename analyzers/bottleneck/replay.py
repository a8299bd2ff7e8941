"""Replay: re-simulate a step model after a change, to predict the new step times (Daydream's idea).

The simulation
--------------
* **Host.** The host threads follow one timeline. A change shortens host intervals (``Change.cuts``:
  start, end, new length); every later host time moves earlier by what was cut before it (inside a
  cut, proportionally). That is the warp ``W(t)``.
* **Synchronizations.** A sync (``StepModel.syncs``) returns once the GPU work it waited for is done.
  It waited for the work launched before it started that had finished by the time it returned. In
  the replay it returns at ``max(host arrival, that work's new end) + base``, where ``base`` is what
  the call cost after the work was done (the copy itself for a blocking copy, the call's overhead
  for a synchronize). Every host time after it moves by the difference (``D_k``). A change may
  *free* a sync: it no longer waits, it only costs its base.
* **GPU.** Each stream runs its work in order; an op starts when it is ready and its stream is free:
  ``end_i = max(ready_i, end_(i-1)) + dur_i``, solved per stream with a running maximum over the
  prefix sums (``end_i = D_i + max(carry, cummax(ready_j - D_(j-1)))``), in chunks between syncs.
  ``ready_i`` is its launch's new host time plus its launch latency. Queued work (launched long
  before it started, at most ``QUEUE_GAP_MAX_NS`` after its predecessor) starts when its stream
  frees plus the front-end gap it had, its launch bounding it from below with the trace's median
  idle-stream latency; other work keeps the latency it had in the trace (which keeps waits on other
  streams, e.g. NCCL on compute, as they were).
* **Steps.** A step's new length runs from its new start to the next step's new start; the last
  runs to its own new end or to the end of all GPU work, whichever is later (a GPU-bound run's
  backlog is paid there, so host savings the GPU cannot use gain nothing), and is at least any
  floor the change sets (``Change.step_floor_ns``). Gains compare sums over all steps.

The unmodified replay reproduces the trace closely (``replay_error`` in the summary). Gains are
taken against the replay of the same run *without the profiler* (``profiler_overhead``: its
per-op bookkeeping cut from the host gaps), and every change is replayed on that run: a change's
cuts give their new lengths in unprofiled time and replace the overhead cuts they cover
(``compose_cuts``). So the replay's own error cancels, and bookkeeping the unprofiled run never
paid is neither a saving nor part of the step a saving is compared with.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from torchscope.analyzers.bottleneck.model import StepModel

__all__ = ["DEFAULT_LAUNCH_LATENCY_NS", "IDENTITY", "IDLE_STREAM_EPS_NS", "Change", "compose_cuts", "replay"]

#: An op whose start is this much after its stream's previous end found the stream idle.
IDLE_STREAM_EPS_NS = 1_000
#: An op that starts at most this long after its stream's previous op, launched long before, was
#: queued: the gap is the GPU front end's, kept with the op.
QUEUE_GAP_MAX_NS = 20_000
#: Launch latency used when a trace shows no op starting on an idle stream.
DEFAULT_LAUNCH_LATENCY_NS = 5_000

_EMPTY = np.zeros(0, np.int64)


@dataclass(frozen=True)
class Change:
    """A transformation of the step model: host cuts, new GPU durations, freed syncs, step floors (ns)."""

    #: Host intervals whose length changes: starts, ends, new lengths (ns; disjoint).
    cuts: tuple[np.ndarray, np.ndarray, np.ndarray] = (_EMPTY, _EMPTY, _EMPTY)
    #: New duration of each ``model.gpu`` row (ns), or None to keep them.
    gpu_dur: np.ndarray | None = None
    #: Per ``model.syncs`` row: True when the sync no longer waits for the device.
    free_syncs: np.ndarray | None = None
    #: Per window: a lower bound of the new step length (ns), or None.
    step_floor_ns: np.ndarray | None = None


IDENTITY = Change()


def _warp(cuts: tuple[np.ndarray, np.ndarray, np.ndarray]):
    """The host warp W(t) of a set of cuts, as a vectorised function of int64 times."""
    cs, ce, cl = (np.asarray(a, np.int64) for a in cuts)
    if cs.size == 0:
        return lambda t: np.asarray(t, np.int64)
    order = np.argsort(cs, kind="stable")
    cs, ce, cl = cs[order], ce[order], np.minimum(cl[order], (ce - cs)[order])
    removed = (ce - cs) - cl
    before = np.concatenate([[0], np.cumsum(removed)])

    def warp(t):
        t = np.asarray(t, np.int64)
        pos = np.searchsorted(cs, t, side="right") - 1
        at = np.maximum(pos, 0)
        inside = (pos >= 0) & (t < ce[at])
        length = np.maximum(ce[at] - cs[at], 1)
        partial = np.where(inside, ((t - cs[at]) * (removed[at] / length)).astype(np.int64), 0)
        full = np.where(pos >= 0, before[at] + np.where(inside, 0, removed[at]), 0)
        return t - full - partial

    return warp


def compose_cuts(under: tuple[np.ndarray, np.ndarray, np.ndarray],
                 over: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cuts ``over`` applied on top of the disjoint cuts ``under``: where an ``over`` cut lies, it alone sets the
    length; the parts of ``under`` cuts outside every ``over`` cut keep their share of their removal (ns)."""
    us, ue, ul = (np.asarray(a, np.int64) for a in under)
    os_, oe, ol = (np.asarray(a, np.int64) for a in over)
    if os_.size == 0 or us.size == 0:
        return (us, ue, ul) if os_.size == 0 else (os_, oe, ol)
    order = np.argsort(os_, kind="stable")
    os_, oe, ol = os_[order], oe[order], ol[order]
    # The over cuts that can touch each under cut form a contiguous run: none (kept whole), or some.
    lo = np.searchsorted(oe, us, side="right")
    hi = np.searchsorted(os_, ue, side="left")
    clear = hi <= lo
    keep = [(us[clear], ue[clear], ul[clear])]
    # An under cut straddling over cuts keeps the pieces between them: [a, os_j), [oe_j, os_j+1), ..., [oe_k, b).
    part = np.flatnonzero(~clear)
    if part.size:
        a, b, n = us[part], ue[part], hi[part] - lo[part]
        ratio = ul[part] / np.maximum(b - a, 1)
        j = np.repeat(lo[part], n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
        owner = np.repeat(np.arange(part.size), n)
        off = np.cumsum(n + 1) - (n + 1)  # where each cut's pieces begin
        inner = np.repeat(off, n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
        ps = np.empty(int((n + 1).sum()), np.int64)
        pe = np.empty_like(ps)
        ps[off], pe[off + n] = a, b
        ps[inner + 1] = np.clip(oe[j], a[owner], b[owner])
        pe[inner] = np.clip(os_[j], a[owner], b[owner])
        r = np.repeat(ratio, n + 1)
        ok = pe > ps
        keep.append((ps[ok], pe[ok], ((pe - ps) * r).astype(np.int64)[ok]))
    keep.append((os_, oe, ol))
    cs, ce, cl = (np.concatenate([k[j] for k in keep]).astype(np.int64) for j in range(3))
    order = np.argsort(cs, kind="stable")
    return cs[order], ce[order], cl[order]


def _latency(model: StepModel) -> tuple[np.ndarray, np.ndarray]:
    """Per GPU op, its launch latency and its queue gap (ns) as the replay uses them (module docstring)."""
    gpu = model.gpu
    ts = gpu["ts_ns"].to_numpy(np.int64)
    end = gpu["end_ns"].to_numpy(np.int64)
    stream = gpu["stream"].to_numpy(np.int64)
    launch = gpu["launch_ts_ns"].to_numpy(np.int64)
    # The previous op's furthest end on the same stream (ops are sorted by stream, then start).
    run = pd.Series(end).groupby(stream).cummax().to_numpy(np.int64)
    prev_end = np.concatenate([[np.iinfo(np.int64).min], run[:-1]])
    first = np.concatenate([[True], stream[1:] != stream[:-1]])
    prev_end[first] = np.iinfo(np.int64).min
    known = launch >= 0
    own = np.maximum(ts - launch, 0)
    gap = np.where(first, QUEUE_GAP_MAX_NS + 1, ts - np.where(first, ts, prev_end))
    idle = ts > prev_end + IDLE_STREAM_EPS_NS
    idle_lat = own[known & idle & (gap > QUEUE_GAP_MAX_NS)]
    median = int(np.median(idle_lat)) if idle_lat.size else DEFAULT_LAUNCH_LATENCY_NS
    # Queued: launched well before it started, a front-end gap after its predecessor. It starts when
    # the stream frees, plus that gap; its launch only bounds it from below.
    queued = known & (own > median) & (gap >= 0) & (gap <= QUEUE_GAP_MAX_NS) & ~first
    lat = np.where(queued, np.minimum(own, median), own)
    return np.where(known, lat, 0).astype(np.int64), np.where(queued, np.maximum(gap, 0), 0).astype(np.int64)


@dataclass(frozen=True)
class Replay:
    """Replayed step lengths (ns) per window."""

    step_ns: np.ndarray


class _Plan:
    """What does not depend on the change: chunk and sync assignment of every GPU op, sync bases."""

    def __init__(self, model: StepModel) -> None:
        gpu, syncs = model.gpu, model.syncs
        self.sync_s = syncs["ts_ns"].to_numpy(np.int64)
        self.sync_e = np.maximum.accumulate(syncs["end_ns"].to_numpy(np.int64)) if len(syncs) else _EMPTY
        n = len(gpu)
        self.ts = gpu["ts_ns"].to_numpy(np.int64) if n else _EMPTY
        self.end = gpu["end_ns"].to_numpy(np.int64) if n else _EMPTY
        self.stream = gpu["stream"].to_numpy(np.int64) if n else _EMPTY
        self.window = gpu["window"].to_numpy(np.int64) if n else _EMPTY
        launch = gpu["launch_ts_ns"].to_numpy(np.int64) if n else _EMPTY
        self.known = launch >= 0
        self.host_t = np.where(self.known, launch, self.ts)
        self.lat, self.gap = _latency(model) if n else (_EMPTY, _EMPTY)
        k = len(self.sync_s)
        # Chunk c: launched after sync c-1 started and before sync c started.
        chunk = np.searchsorted(self.sync_s, self.host_t, side="right")
        # A stream runs in order: an op is simulated no earlier than the chunk of any op before it on its stream.
        self.chunk = pd.Series(chunk).groupby(self.stream).cummax().to_numpy(np.int64) if n else chunk
        # The sync that waited for an op: the first at or after its chunk that returned after it ended.
        waited = np.maximum(self.chunk, np.searchsorted(self.sync_e, self.end, side="left"))
        self.waited = np.where(waited < k, waited, -1)
        done = np.full(k, np.iinfo(np.int64).min, np.int64)
        if k and n:
            w = self.waited >= 0
            np.maximum.at(done, self.waited[w], self.end[w])
        arrive = np.maximum(self.sync_s, done)
        self.base = np.clip(syncs["end_ns"].to_numpy(np.int64) - arrive, 0, None) if k else _EMPTY
        self.order = np.lexsort((self.ts, self.stream, self.chunk)) if n else _EMPTY
        self.k = k
        # The replay walks the ops in ``order``: per chunk one slice, inside it one run per stream.
        order = self.order
        chunks = self.chunk[order] if n else _EMPTY
        self.bounds = np.searchsorted(chunks, np.arange(k + 2), side="left") if n else np.zeros(k + 2, np.int64)
        s = self.stream[order] if n else _EMPTY
        new_run = np.concatenate([[True], (s[1:] != s[:-1]) | (chunks[1:] != chunks[:-1])]) if n else _EMPTY.astype(bool)
        self.run = np.cumsum(new_run) - 1 if n else _EMPTY
        self.run_last = np.concatenate([new_run[1:], [True]]) if n else _EMPTY.astype(bool)
        self.stream_code = np.unique(s, return_inverse=True)[1].reshape(-1) if n else _EMPTY
        self.n_streams = int(self.stream_code.max()) + 1 if n else 0
        # The ops each sync waited for, as positions in ``order``.
        position = np.empty(n, np.int64)
        position[order] = np.arange(n)
        self.waited_at = [position[g] for g in _groups(self.waited, k)]


def replay(model: StepModel, change: Change = IDENTITY, plan: _Plan | None = None,
           unprofiled: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> Replay:
    """New step lengths (ns) of every window after ``change``; with ``unprofiled`` (the profiler overhead's
    cuts) of the run without the profiler (see the module docstring)."""
    plan = plan or _Plan(model)
    warp = _warp(change.cuts if unprofiled is None else compose_cuts(unprofiled, change.cuts))
    dur = (model.gpu["dur_ns"].to_numpy(np.int64) if change.gpu_dur is None
           else np.asarray(change.gpu_dur, np.int64)) if len(model.gpu) else _EMPTY
    free = (np.zeros(plan.k, bool) if change.free_syncs is None else np.asarray(change.free_syncs, bool))
    ready_w = warp(plan.host_t) + plan.lat
    shift = np.zeros(plan.k + 1, np.int64)  # D: host shift after sync k-1 (index k)
    order = plan.order
    # Each stream runs its ops in order: end_i = max(ready_i, end_(i-1)) + d_i with d = dur + gap (a queued op's
    # front-end gap travels with it). Per run of one stream inside a chunk, with D the prefix sums of d:
    # end_i - D_i = max(carry, cummax_j(ready_j - gap_j - D_(j-1))), the stream's carry from earlier chunks.
    # A chunk's host shift adds to every ready time of the chunk, so the running maxima are taken once for all
    # chunks before the walk and shifted per chunk there.
    d = (dur + plan.gap)[order]
    total = _run_cumsum(d, plan.run)
    lead0 = _run_cummax((ready_w - plan.gap)[order] - (total - d), plan.run)
    end_o = np.zeros(order.size, np.int64)
    none = np.iinfo(np.int64).min
    carry = np.full(plan.n_streams, none, np.int64)
    code, last, bounds = plan.stream_code, plan.run_last, plan.bounds
    sync_e_w = warp(plan.sync_e) if plan.k else _EMPTY
    sync_s_w = warp(plan.sync_s) if plan.k else _EMPTY
    for c in range(plan.k + 1):
        a, b = bounds[c], bounds[c + 1]
        if b > a:
            end = total[a:b] + np.maximum(lead0[a:b] + shift[c], carry[code[a:b]])
            end_o[a:b] = end
            ends = last[a:b]
            carry[code[a:b][ends]] = end[ends]
        if c < plan.k:
            arrive = sync_s_w[c] + shift[c]
            if not free[c]:
                members = plan.waited_at[c]
                if members.size:
                    arrive = max(arrive, int(end_o[members].max()))
            shift[c + 1] = arrive + plan.base[c] - sync_e_w[c]
    end_new = np.zeros(len(dur), np.int64)
    end_new[order] = end_o
    return Replay(_steps(model, warp, plan, shift, end_new, change))


def _groups(key: np.ndarray, k: int) -> list[np.ndarray]:
    """Positions of each key value 0..k-1 (ops grouped by the sync that waited for them)."""
    if k == 0:
        return []
    valid = np.flatnonzero(key >= 0)
    order = valid[np.argsort(key[valid], kind="stable")]
    cuts = np.searchsorted(key[order], np.arange(k + 1), side="left")
    return [order[cuts[i]:cuts[i + 1]] for i in range(k)]


def _run_cumsum(v: np.ndarray, run: np.ndarray) -> np.ndarray:
    """Prefix sums of ``v`` restarting at each run (``run``: non-decreasing run number per element)."""
    if v.size == 0:
        return v.astype(np.int64)
    total = np.cumsum(v)
    first = np.concatenate([[True], run[1:] != run[:-1]])
    before = (total - v)[first]  # the sum of the earlier runs, where each run starts
    return total - before[run]


def _run_cummax(v: np.ndarray, run: np.ndarray) -> np.ndarray:
    """Running maxima of ``v`` restarting at each run: one accumulate over the runs lifted apart by an offset."""
    if v.size == 0:
        return v.astype(np.int64)
    lo = int(v.min())
    width = int(v.max()) - lo + 1
    if width * (int(run[-1]) + 1) < 2 ** 62:
        lift = run.astype(np.int64) * width
        return np.maximum.accumulate((v - lo) + lift) - lift + lo
    out = np.empty_like(v)  # offsets would overflow: one accumulate per run
    edges = np.flatnonzero(np.concatenate([[True], run[1:] != run[:-1], [True]]))
    for a, b in itertools.pairwise(edges):
        out[a:b] = np.maximum.accumulate(v[a:b])
    return out


def _steps(model, warp, plan, shift, end_new, change) -> np.ndarray:
    """New length of each window: host start to host start, the last to the end of all work."""
    win = model.windows
    starts = win["start_ns"].to_numpy(np.int64)
    last_end = int(win["end_ns"].iloc[-1])

    def host(t):
        t = np.asarray(t, np.int64)
        k = np.searchsorted(plan.sync_e, t, side="right") if plan.k else np.zeros(t.size, np.int64)
        return warp(t) + shift[k]
    new_starts = host(starts)
    new_last = int(host(np.array([last_end]))[0])
    if end_new.size:
        # The run ends when the host and the GPU are both done: the GPU's backlog lands in the last step.
        new_last = max(new_last, int(end_new.max()))
    step = np.diff(np.concatenate([new_starts, [new_last]])).astype(np.int64)
    if change.step_floor_ns is not None:
        step = np.maximum(step, np.asarray(change.step_floor_ns, np.int64))
    return step

