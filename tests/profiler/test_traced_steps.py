"""Say what was traced: the default schedule traces steps 2-4 of a run, the analysis says "3 of 20 steps
traced (wait 1, warmup 1, active 3)", and a ProfilerStep that no prof.step() ended is not written."""

from __future__ import annotations

import torchscope
from torchscope import profiler
from torchscope.analyzers.core.trace import TraceSet
from torchscope.analyzers.report.text import render_text
from tests.profiler.workloads_for_tests import TinyNet, train

QUIET = dict(host_roofline=False, sample_interval_ms=20, power=False, handle_sigterm=False)


def test_the_default_schedule_traces_steps_2_to_4_and_the_analysis_says_so(tmp_path):
    run = tmp_path / "run"
    with profiler.profile(run, **QUIET) as prof:
        train(TinyNet(), prof, n_batches=20)
    trace = torchscope.load(run, cache=False)
    assert trace.steps()["step"].tolist() == [2, 3, 4]
    report = torchscope.run_all(trace)
    loop = report.result("training_loop")
    assert (loop.summary["steps"], loop.summary["steps_run"], loop.summary["schedule"]) == \
        (3, 20, "wait 1, warmup 1, active 3")
    traces = TraceSet(ranks={0: trace}, path=str(run))
    assert "\n  3 of 20 steps traced (wait 1, warmup 1, active 3)\n" in render_text(traces, report)


def test_a_run_that_stops_inside_the_recording_window_has_no_unended_step(tmp_path):
    run = tmp_path / "run"
    # default schedule, 3 steps: step 2 is recorded, and torch.profiler opens ProfilerStep#3 at its end
    with profiler.profile(run, **QUIET) as prof:
        train(TinyNet(), prof, n_batches=3)
    trace = torchscope.load(run, cache=False)
    assert trace.steps()["step"].tolist() == [2]
    assert not trace.events["name"].astype(str).str.fullmatch(r"ProfilerStep#3").any()
    assert trace.events["kind"].eq("cpu_op").sum() > 0  # the step's operators are kept
    loop = torchscope.run_all(trace).result("training_loop")
    assert (loop.summary["steps"], loop.summary["steps_run"]) == (1, 3)
