"""A Hugging Face ``Trainer`` callback that records a torchscope run bundle::

    from torchscope.integrations.transformers import ProfilerCallback
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[ProfilerCallback("runs/hf")])
    trainer.train()

``ProfilerCallback(out_dir, **profile_options)`` takes ``torchscope.profile``'s options (checked here,
before training). It starts the profile at ``on_train_begin`` (``model=`` defaults to the trainer's
model), calls ``prof.step()`` once per optimizer step (``on_step_end``), names each
gradient-accumulation micro-batch as the phase ``micro_step_<i>`` (opened at ``on_step_begin`` and
``on_substep_end``, closed at ``on_pre_optimizer_step``), and stops at ``on_train_end``.

Tokens and samples per step: the element count and first dimension of the ``input_ids`` given to the
model's forward during the step, on this rank, padding included (a model fed without ``input_ids``
gets no counts). Distributed runs (torchrun, accelerate): every rank's callback writes its own
``rank<N>`` files into the same ``out_dir``, the rank taken from ``torch.distributed``.

Errors: ``Trainer`` has no hook for an exception, so when ``train()`` raises, the profile is stopped
with ``complete: false`` and the reason by the next ``on_train_begin``, by ``with callback:`` around
``trainer.train()``, or at the latest when the process exits (with Python's uncaught exception). SIGTERM
is handled by the profile itself. ``transformers`` is imported by this module only.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import TrainerCallback

from torchscope.integrations._driver import MICRO_STEP_PHASE, CallbackDriver, DrivenCallback

__all__ = ["ProfilerCallback", "MICRO_STEP_PHASE"]


class ProfilerCallback(DrivenCallback, TrainerCallback):
    """Record a torchscope run bundle of a ``transformers.Trainer`` training run (see the module docstring)."""

    def __init__(self, out_dir: str | os.PathLike = "runs/run", **profile_options: Any) -> None:
        self._driver = CallbackDriver(out_dir, profile_options)

    def __enter__(self) -> "ProfilerCallback":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self.stop(error=exc)
        return False

    # ---- TrainerCallback events -----------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Start the profile."""
        self._driver.begin_run(model)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """An optimizer step's first micro-batch begins."""
        self._driver.begin_step()

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """A gradient-accumulation micro-batch ended; the next begins."""
        self._driver.next_micro_step()

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """The last micro-batch ended."""
        self._driver.end_micro_steps()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """One ``prof.step()`` per optimizer step."""
        self._driver.end_step()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Stop the profile: a complete run."""
        self._driver.finish()
