"""The analyzer registry: deterministic order, skips with reasons, errors contained."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT


def test_run_order_follows_analyzer_modules_whatever_was_imported_first() -> None:
    code = """
import torchscope.analyzers.diff.model, torchscope.analyzers.power, torchscope.analyzers.moe.analysis  # out of order
from torchscope.analyzers.core.registry import ANALYZER_MODULES, load_analyzers
specs = list(load_analyzers().values())
order = [ANALYZER_MODULES.index(s.func.__module__) for s in specs]
assert order == sorted(order), order
print(",".join(s.name for s in specs))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    names = proc.stdout.strip().split(",")
    assert names[0] == "training_loop" and names.index("gpu_time") < names.index("roofline")


def test_run_all_reports_skips_and_contains_analyzer_errors(shared_traces, monkeypatch) -> None:
    from torchscope import analyzers
    from torchscope.analyzers.core import registry
    from torchscope.analyzers.core.result import NotApplicable, Result

    def broken(trace):
        raise ZeroDivisionError("bug in an analyzer")

    def picky(trace):
        raise NotApplicable("needs something this trace lacks")

    def fine(trace):
        return Result("fine", summary={"events": len(trace.events)}, rank=trace.rank)

    monkeypatch.setattr(registry, "REGISTRY", {})
    monkeypatch.setattr(registry, "ANALYZER_MODULES", ())
    registry.register("broken", description="raises")(broken)
    registry.register("picky", description="not applicable")(picky)
    registry.register("fine", description="works")(fine)
    registry.register("cross_rank", description="needs ranks", scope="set")(fine)
    trace = analyzers.load(shared_traces / "mi250_minitoy_train.json.gz")
    report = registry.run_all(trace)
    assert report.errors == {"broken": "ZeroDivisionError: bug in an analyzer"}
    assert report.skipped == {"picky": "needs something this trace lacks", "cross_rank": "single rank"}
    assert report.result("fine").summary == {"events": len(trace.events)}


def test_needed_results_are_passed_in_and_run_first(shared_traces, monkeypatch) -> None:
    from torchscope import analyzers
    from torchscope.analyzers.core import registry
    from torchscope.analyzers.core.result import NotApplicable, Result

    calls: list[str] = []

    def base(trace):
        calls.append("base")
        return Result("base", summary={"n": 7}, rank=trace.rank)

    def skipped(trace):
        calls.append("skipped")
        raise NotApplicable("nothing here")

    def user(trace, base_result=None, skipped_result="sentinel"):
        calls.append("user")
        assert skipped_result is None  # a skipped need arrives as None, not as a missing argument
        return Result("user", summary={"twice": 2 * base_result.summary["n"]}, rank=trace.rank)

    monkeypatch.setattr(registry, "REGISTRY", {})
    monkeypatch.setattr(registry, "ANALYZER_MODULES", ())
    # registered before what it needs: the run order must still put the needs first
    registry.register("user", description="needs base", needs=("base", "skipped"))(user)
    registry.register("base", description="a base")(base)
    registry.register("skipped", description="never applies")(skipped)
    trace = analyzers.load(shared_traces / "mi250_minitoy_train.json.gz")

    report = registry.run_all(trace)
    assert calls == ["base", "skipped", "user"]
    assert report.result("user").summary == {"twice": 14}
    assert report.skipped == {"skipped": "nothing here"}

    calls.clear()
    only = registry.run_all(trace, only=("user",))
    assert calls == ["base", "skipped", "user"]  # what `user` needs runs, but is not reported
    assert [r.analyzer for r in only.results] == ["user"] and not only.skipped


def test_a_cycle_of_needs_is_refused(monkeypatch) -> None:
    import pytest

    from torchscope.analyzers.core import registry

    monkeypatch.setattr(registry, "REGISTRY", {})
    monkeypatch.setattr(registry, "ANALYZER_MODULES", ())
    registry.register("a", description="a", needs=("b",))(lambda trace, b_result=None: None)
    registry.register("b", description="b", needs=("a",))(lambda trace, a_result=None: None)
    with pytest.raises(ValueError, match="cycle"):
        registry.load_analyzers()
