"""Build small Kineto-shaped traces (times in µs, as in the files) for the loop/GPU/kernel analyzer tests."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from torchscope import analyzers
from tests.conftest import require_or_skip

MAIN_PID = 100
MAIN_TID = 100
BWD_TID = 101


class KinetoBuilder:
    """Accumulates events; `launch` adds a runtime call and its kernel with one correlation id."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self._corr = 1000

    def op(self, name: str, ts: float, dur: float, *, cat: str = "cpu_op", tid: int = MAIN_TID, **args) -> None:
        self.events.append({"ph": "X", "cat": cat, "name": name, "pid": MAIN_PID, "tid": tid,
                            "ts": ts, "dur": dur, "args": args})

    def annotation(self, name: str, ts: float, dur: float, *, tid: int = MAIN_TID) -> None:
        self.op(name, ts, dur, cat="user_annotation", tid=tid)

    def step(self, n: int, ts: float, dur: float) -> None:
        self.annotation(f"ProfilerStep#{n}", ts, dur)

    def launch(self, kernel: str, launch_ts: float, kernel_ts: float, kernel_dur: float, *,
               stream: int = 7, launch_dur: float = 2.0, cat: str = "kernel",
               api: str = "cudaLaunchKernel") -> int:
        self._corr += 1
        corr = self._corr
        self.events.append({"ph": "X", "cat": "cuda_runtime", "name": api, "pid": MAIN_PID, "tid": MAIN_TID,
                            "ts": launch_ts, "dur": launch_dur, "args": {"correlation": corr}})
        self.events.append({"ph": "X", "cat": cat, "name": kernel, "pid": 0, "tid": stream,
                            "ts": kernel_ts, "dur": kernel_dur,
                            "args": {"device": 0, "stream": stream, "correlation": corr}})
        return corr

    def runtime(self, name: str, ts: float, dur: float) -> None:
        self._corr += 1
        self.events.append({"ph": "X", "cat": "cuda_runtime", "name": name, "pid": MAIN_PID, "tid": MAIN_TID,
                            "ts": ts, "dur": dur, "args": {"correlation": self._corr}})

    def write(self, path: Path, *, compute_major: int | None = 8, device_name: str = "NVIDIA A100-SXM4-80GB") -> Path:
        doc: dict = {"schemaVersion": 1, "traceEvents": self.events,
                     "distributedInfo": {"rank": 0, "world_size": 1, "backend": "nccl"}}
        if compute_major is not None:
            doc["deviceProperties"] = [{"id": 0, "name": device_name, "computeMajor": compute_major,
                                        "computeMinor": 0, "totalGlobalMem": 80 * 2**30, "numSms": 108}]
        path.write_text(json.dumps(doc))
        return path

    def load(self, path: Path, **kwargs) -> "analyzers.Trace":
        return analyzers.load(self.write(path, **kwargs))


def load_shared(folder: str, name: str) -> "analyzers.Trace":
    """A shared trace loaded once per test session (analyzers never mutate what they are given).

    A missing file skips the test outside CI and fails it in CI, as the `shared_traces` fixture does.
    """
    require_or_skip(Path(folder, name).is_file(), f"shared trace {name} not found in {folder}")
    return _load_once(folder, name)


@functools.lru_cache(maxsize=None)
def _load_once(folder: str, name: str) -> "analyzers.Trace":
    return analyzers.load(Path(folder, name))
