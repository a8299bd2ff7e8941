"""The advice corpus (benchmarks/advice): every pair's interface, one pair's steps, the runner's arithmetic and usage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.advice import run_advice
from benchmarks.advice.pairs import (CLOCKS, DEVICES, PAIR_NAMES, REQUIRED_ATTRS, VARIANTS, clock_of, load_pair,
                                     load_pairs)
from benchmarks.advice.scoring import (PATHS, TOLERANCE, Detection, PairFigures, PathFigures, realized_change,
                                       relative_error, summarize)
from torchscope.analyzers.core.findings import FINDING_ID_RE

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "benchmarks" / "advice" / "run_advice.py"
#: the finding ids of the bottleneck analyzer's contract (issue 11)
CONTRACT_FINDING_IDS = frozenset({
    "bottleneck.data_loading", "bottleneck.blocking_copy", "bottleneck.device_sync", "bottleneck.dispatch_bound",
    "bottleneck.exposed_communication", "bottleneck.unfused_elementwise", "bottleneck.optimizer_dispatch",
    "bottleneck.fp32_matmul",
})
MIN_CPU_PAIRS = 10
#: what the GPU half of the corpus must cover (issue 11, item 7)
GPU_EXPECTED = {"bottleneck.blocking_copy", "bottleneck.device_sync", "bottleneck.dispatch_bound",
                "bottleneck.fp32_matmul", "bottleneck.exposed_communication"}


@pytest.mark.parametrize("name", PAIR_NAMES)
def test_every_pair_module_has_the_interface(name: str) -> None:
    pair = load_pair(name)
    missing = [a for a in REQUIRED_ATTRS if not hasattr(pair, a)]
    assert not missing, f"{name} lacks {missing}"
    assert pair.NAME == name
    assert pair.DEVICE in DEVICES
    assert pair.WORLD_SIZE in (1, 2)
    assert isinstance(pair.CHANGE, str) and pair.CHANGE.strip() and "\n" not in pair.CHANGE
    assert all(callable(getattr(pair, f)) for f in ("build", "step", "close"))
    if pair.WORLD_SIZE == 2:
        assert pair.BACKEND == ("nccl" if pair.DEVICE == "cuda" else "gloo")
    assert clock_of(pair) in CLOCKS
    if clock_of(pair) == "cpu":  # CPU time sees no waiting: only for one process computing on the host
        assert pair.DEVICE == "cpu" and pair.WORLD_SIZE == 1 and pair.EXPECTED != "bottleneck.data_loading"


@pytest.mark.parametrize("name", PAIR_NAMES)
def test_expected_ids_are_finding_ids_of_the_contract(name: str) -> None:
    expected = load_pair(name).EXPECTED
    assert FINDING_ID_RE.match(expected)
    assert expected in CONTRACT_FINDING_IDS


def test_the_corpus_has_ten_cpu_pairs_and_the_gpu_causes() -> None:
    pairs = load_pairs()
    cpu = [p for p in pairs if p.DEVICE == "cpu"]
    assert len(cpu) >= MIN_CPU_PAIRS
    assert {p.WORLD_SIZE for p in cpu} == {1, 2}
    assert {p.EXPECTED for p in pairs if p.DEVICE == "cuda"} == GPU_EXPECTED
    assert len({p.CHANGE for p in pairs}) >= len(pairs) - 2  # each pair says what its own after changes


def test_a_cpu_pair_runs_two_steps_before_and_after_and_the_change_keeps_the_loss() -> None:
    import torch

    pair = load_pair("vectorised_loss")
    losses = {}
    for variant in VARIANTS:
        state = pair.build(variant)
        weight = state.model[0].weight.detach().clone()
        for _ in range(2):
            pair.step(state)
        assert not torch.equal(weight, state.model[0].weight)  # the steps trained
        losses[variant] = state.loss_fn(state.model(state.inputs), state.target).item()
        pair.close(state)
    # the same seed, the same math: the after changes how the loss is computed, not what it is
    assert losses["before"] == pytest.approx(losses["after"], rel=1e-4)


def _figures(name: str, realized: float, *, est: float | None, fires=(True, False), status: str = "ok") -> PairFigures:
    before = Detection(fired=fires[0], gain_fraction=est if fires[0] else None)
    after = Detection(fired=fires[1], gain_fraction=0.01 if fires[1] else None)
    paths = tuple(PathFigures(p, before, after) for p in PATHS) if status == "ok" else ()
    # every before rep 100 ms; after reps chosen so that the median realizes `realized`
    return PairFigures(name, "bottleneck.data_loading", "a change", status=status,
                       before_step_s=(0.1,) * 7 if status == "ok" else (),
                       after_step_s=(0.1 * (1 - realized),) * 7 if status == "ok" else (), paths=paths)


def test_realized_is_one_minus_the_ratio_of_medians() -> None:
    assert realized_change([0.10, 0.30, 0.20], [0.05, 0.15, 0.10, 0.90, 0.12]) == pytest.approx(1 - 0.12 / 0.20)
    assert realized_change([0.1], [0.2]) == pytest.approx(-1.0)  # slower after: negative
    assert realized_change([], [0.1]) is None
    assert relative_error(0.25, 0.20) == pytest.approx(0.25)
    assert relative_error(None, 0.2) is None and relative_error(0.1, 0.0) is None
    assert relative_error(0.1, -0.2) == pytest.approx(1.5)
    drifting = PairFigures("p", "bottleneck.data_loading", "c", before_step_s=(0.10, 0.20, 0.40),
                           after_step_s=(0.05, 0.10, 0.20))  # the machine slowed down, the ratio held
    assert drifting.realized == pytest.approx(0.5) and drifting.realized_paired == pytest.approx(0.5)


def test_summary_counts_right_pairs_and_the_median_and_worst_error() -> None:
    pairs = [
        _figures("exact", 0.50, est=0.50),                      # right, error 0
        _figures("edge", 0.50, est=0.50 * (1 + TOLERANCE)),     # right, error at the tolerance
        _figures("over", 0.20, est=0.30),                       # fires right, error 50%: wrong
        _figures("fires_after", 0.40, est=0.40, fires=(True, True)),   # error 0 but fires after: wrong
        _figures("silent", 0.30, est=None, fires=(False, False)),      # no estimate: wrong, no error
        _figures("broken", 0.0, est=None, status="error: ranks died"),  # counted, wrong
        _figures("gpu", 0.0, est=None, status="skipped: no CUDA"),      # left out
    ]
    s = summarize(pairs)
    assert (s.right, s.total, s.skipped) == (2, 6, 1)
    assert s.right_by_path == {p: 2 for p in PATHS}
    assert sorted(s.errors) == pytest.approx([0.0, 0.0, 0.0, 0.0, TOLERANCE, TOLERANCE, 0.5, 0.5])
    assert s.median_error == pytest.approx(TOLERANCE / 2)  # the middle two of eight: 0 and 20%
    assert s.worst_error == pytest.approx(0.5)
    assert summarize([]).median_error is None and summarize([]).worst_error is None


def test_a_pair_right_on_one_path_only_is_not_right() -> None:
    good = Detection(fired=True, gain_fraction=0.3)
    figures = PairFigures("p", "bottleneck.data_loading", "c", before_step_s=(0.1,), after_step_s=(0.07,),
                          paths=(PathFigures(PATHS[0], good, Detection(False)),
                                 PathFigures(PATHS[1], Detection(False), Detection(False))))
    assert figures.right_on(figures.paths[0]) and not figures.right
    assert summarize([figures]).right_by_path == {PATHS[0]: 1, PATHS[1]: 0}


def test_rounds_of_recordings_fire_on_all_befores_no_after_and_estimate_their_median() -> None:
    def d(est: float | None, fired: bool = True) -> Detection:
        return Detection(fired=fired, gain_fraction=est if fired else None)

    three = PathFigures(PATHS[0], d(0.40), d(None, False), repeats=((d(0.20), d(None, False)),
                                                                    (d(0.30), d(None, False))))
    assert three.estimates == (0.40, 0.20, 0.30) and three.estimated == pytest.approx(0.30)
    assert three.fires_before and not three.fires_after
    once_missed = PathFigures(PATHS[0], d(0.40), d(None, False), repeats=((d(None, False), d(None, False)),))
    assert not once_missed.fires_before and once_missed.estimated is None
    once_after = PathFigures(PATHS[1], d(0.30), d(None, False), repeats=((d(0.30), d(0.05)),))
    assert once_after.fires_after
    pair = PairFigures("p", "bottleneck.data_loading", "c", before_step_s=(0.1,), after_step_s=(0.07,),
                       paths=(three, once_after))
    assert pair.right_on(three) and not pair.right_on(once_after)
    row = run_advice._rows([pair], per_round=True)[1]
    assert row[2:4] == ("yes", "1/2") and row[-1] == "30.0%, 30.0%"  # the after fired in 1 of 2 rounds
    md = run_advice.render_markdown([pair])
    assert run_advice.SPREAD_COLUMN in md.splitlines()[0] and "40.0%, 20.0%, 30.0%" in md
    rounds = run_advice.figures_json([pair])["pairs"][0]["paths"][PATHS[0]]["rounds"]
    assert [r["before"]["gain_fraction"] for r in rounds] == [0.40, 0.20, 0.30]
    missed = PathFigures(PATHS[0], d(0.40), d(None, False), repeats=((d(None, False), d(None, False)),
                                                                     (Detection(fired=True), d(None, False))))
    assert run_advice._estimates_text(missed) == "40.0%, -, unknown"  # fired / did not fire / fired, no estimate


def test_the_runner_finds_every_round_a_run_folder_holds(tmp_path: Path) -> None:
    from benchmarks.advice.record import recording_dir

    for k in (1, 2, 3):
        for v in VARIANTS:
            for p in PATHS:
                recording_dir(tmp_path, v, p, k).mkdir(parents=True)
    recording_dir(tmp_path, VARIANTS[0], PATHS[0], 4).mkdir()  # a round cut short is not a round
    assert run_advice._rounds_recorded(tmp_path) == 3
    assert recording_dir(tmp_path, "before", "torchscope", 1).name == "torchscope"
    assert recording_dir(tmp_path, "before", "torchscope", 2).name == "torchscope.2"


def test_table_fits_100_columns_and_markdown_has_every_pair() -> None:
    pairs = [_figures("compile_layernorm_softmax", 0.5, est=0.45), _figures("gpu", 0.0, est=None,
             status="skipped: no CUDA"), _figures("broken", 0.0, est=None, status="error: " + "x" * 200)]
    text = run_advice.render_table(pairs, bottleneck_registered=False)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "pairs right: 1/2" in text and "skipped: no CUDA" in text and "no 'bottleneck' analyzer" in text
    md = run_advice.render_markdown(pairs)
    assert md.splitlines()[0].startswith("| pair |")
    assert all(f"| {p.name} |" in md for p in pairs)
    assert run_advice.figures_json(pairs)["summary"]["right"] == 1


def test_the_notes_say_what_tracing_cost_where_the_bundle_measured_untraced_steps() -> None:
    measured = Detection(fired=True, gain_fraction=0.2, recorded_step_ns=12_000_000, untraced_step_ns=5_000_000,
                         measured_overhead_replay_error_share=1.3)
    bundle = PathFigures("torchscope", measured, Detection(fired=False))
    plain = PathFigures("torch_profiler", Detection(fired=True, gain_fraction=0.2, recorded_step_ns=9_000_000),
                        Detection(fired=False))
    pair = PairFigures("adam_foreach", "bottleneck.optimizer_dispatch", "c", before_step_s=(0.005,) * 7,
                       after_step_s=(0.004,) * 7, paths=(plain, bundle))
    text = run_advice.render_table([pair, _figures("other", 0.5, est=0.5)])
    assert "adam_foreach 2.40-2.40x (130.0%-130.0%)" in " ".join(text.split())
    assert "other " not in text.split("traced step / untraced step", 1)[1]  # no untraced steps: not listed
    assert max(len(line) for line in text.splitlines()) <= 100
    assert run_advice.figures_json([pair])["pairs"][0]["paths"]["torchscope"]["before"]["untraced_step_ns"] == 5_000_000


def test_a_cuda_pair_without_cuda_is_skipped_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_advice, "_cuda_devices", lambda: 0)
    figures = run_advice.run_pair(load_pair("cuda_item_sync"), REPO / "unused")
    assert figures.status == "skipped: no CUDA" and not figures.paths
    assert run_advice.skip_reason(load_pair("adam_foreach")) is None


def test_detect_reports_a_recording_it_cannot_read_instead_of_crashing(tmp_path: Path,
                                                                       sample_traces: Path) -> None:
    missing = run_advice.detect(tmp_path / "nothing", "bottleneck.data_loading")
    assert not missing.fired and missing.error and "\n" not in missing.error
    found = run_advice.detect(sample_traces / "cnn_train", "bottleneck.data_loading")
    assert found.error is None and found.findings  # the analyzers ran and said something
    ids = [i for i, _ in found.findings]
    assert found.fired == ("bottleneck.data_loading" in ids)


def test_an_unknown_pair_exits_2_with_one_line() -> None:
    proc = subprocess.run([sys.executable, str(RUNNER), "--pair", "no_such_pair"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "unknown pair 'no_such_pair'" in proc.stderr
    assert proc.stdout == ""


def test_too_few_repetitions_exit_2_with_one_line(capsys: pytest.CaptureFixture) -> None:
    assert run_advice.main(["--reps", str(run_advice.MIN_REPS - 1)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"--reps must be at least {run_advice.MIN_REPS}" in err


def test_the_run_says_its_load_average_and_warns_when_the_machine_was_busy_as_it_started() -> None:
    quiet = run_advice.load_line([0.2, 1.9, 0.4], cpus=2)  # the corpus's own ranks raise the load: no warning
    assert quiet.startswith("load average before the run: 0.2 on 2 CPUs; over it 0.2-1.9") and "busy" not in quiet
    busy = " ".join(run_advice.load_line([1.8, 3.8], cpus=2).split())
    assert "-- busy" in busy and "quiet machine" in busy
    assert all(len(line) <= 100 for line in run_advice.load_line([1.8, 3.8], cpus=2).splitlines())
    assert run_advice.load_line([None], cpus=2) == "load average: unknown on this platform"
