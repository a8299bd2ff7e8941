"""The sampler thread: ticks at its interval and says what CPU time it cost the job."""

from __future__ import annotations

import time

from torchscope.profiler.sampling import SamplerThread

#: CPU each fake sample burns, s
BURN_S = 0.004


class _Burner:
    source = "burner"

    def sample(self, t_ns: int) -> list[dict]:
        end = time.thread_time() + BURN_S
        while time.thread_time() < end:
            pass
        return [{"t_ns": t_ns, "source": self.source, "value": 1}]

    def close(self) -> None:
        pass


def test_the_sampler_thread_reports_its_cpu_time():
    thread = SamplerThread([_Burner()], None, interval_s=0.01)
    t0 = time.perf_counter()
    thread.start()
    time.sleep(0.3)
    thread.stop()
    wall_ns = (time.perf_counter() - t0) * 1e9
    ticks_in_thread = thread.ticks - 1  # stop() takes the last tick on the caller's thread
    assert ticks_in_thread >= 3
    assert ticks_in_thread * BURN_S * 1e9 <= thread.thread_cpu_ns < wall_ns
    assert len(thread.lines) == thread.ticks
