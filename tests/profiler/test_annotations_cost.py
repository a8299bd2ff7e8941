"""The per-module hooks cost nothing outside Kineto's windows (``keep`` False) and record both directions inside."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from torchscope.profiler.annotations import MODULE_CAT, Annotator
from tests.profiler.workloads_for_tests import TinyNet


def _step(model: TinyNet, annotator: Annotator, step: int) -> None:
    ids = torch.randint(0, 50, (4, 8))
    loss = F.cross_entropy(model(ids).reshape(-1, 50), ids.reshape(-1))
    loss.backward()
    annotator.on_step(step)


def test_module_hooks_do_nothing_outside_the_window_and_record_forward_and_backward_inside():
    model = TinyNet()
    annotator = Annotator(model=model, modules=True)
    annotator.install()
    try:
        annotator.keep = False
        before = len(annotator.events)
        _step(model, annotator, 1)
        assert len(annotator.events) == before and not annotator._mod_start and not annotator._bwd_start
        annotator.keep = True
        _step(model, annotator, 2)
    finally:
        annotator.remove()
    modules = [e for e in annotator.events if e[1] == MODULE_CAT]
    directions = {(e[0], e[4]["direction"]) for e in modules}
    for name in ("embed", "blocks.0", "blocks.1", "head"):
        assert (name, "forward") in directions and (name, "backward") in directions
    assert {e[4]["step"] for e in modules} == {1}  # the step that on_step(1) opened
