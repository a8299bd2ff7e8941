"""The markdown report: a findings table, one section per finding, summaries as tables."""

from __future__ import annotations

from torchscope.analyzers.analyze import analyze_path
from torchscope.analyzers.core.findings import Finding
from torchscope.analyzers.core.report import Report
from torchscope.analyzers.core.result import Result
from torchscope.analyzers.report.markdown import render_markdown

NCCL = "a100_train_2rank_rank0_nccl.json.gz"


def test_markdown_report(shared_traces):
    out = render_markdown(*analyze_path(str(shared_traces / NCCL)))
    assert out.startswith("# torchscope analysis")
    assert "| # | severity | finding | rank | estimated gain |" in out
    assert "### gpu_time (rank 0)" in out


def test_pipes_in_text_are_escaped(shared_traces):
    traces, _ = analyze_path(str(shared_traces / NCCL))
    f = Finding(id="toy.rule", analyzer="toy", severity="warning", title="a | b", evidence={"window_ns": 1000},
                recommendation="x\ny", estimated_gain="1 | 2", gain_fraction=0.1)
    out = render_markdown(traces, Report(source="x", results=(Result("toy", summary={"wait_ns": 1500},
                                                                       findings=(f,)),)))
    assert "| 1 | warning | a \\| b | all ranks | 1 \\| 2 |" in out
    assert "- **change**: x y" in out and "- **evidence**: window: 1 µs" in out
    assert "| wait | 1.5 µs |" in out


def test_markdown_says_what_was_traced_and_an_incomplete_run_first(sample_traces):
    import dataclasses

    from torchscope.analyzers.core.trace import TraceSet

    traces, report = analyze_path(str(sample_traces / "gpt_train"))
    out = render_markdown(traces, report)
    assert "- 4 of 60 steps traced (wait 54, warmup 1, active 4)\n" in out
    assert "| steps run | 60 |" in out and "| schedule | wait 54, warmup 1, active 4 |" in out
    (one,) = traces
    manifest = {**one.meta.manifest, "complete": False, "incomplete_reason": "the loop raised OSError: disk full"}
    killed = dataclasses.replace(one, meta=dataclasses.replace(one.meta, manifest=manifest))
    lines = render_markdown(TraceSet(ranks={0: killed}, path=traces.path), report).splitlines()
    assert lines[:3] == ["# torchscope analysis", "", "- **incomplete: the loop raised OSError: disk full**"]
