"""What both framework callbacks share: one ``profile`` per training run, driven from the framework's hooks.

Per optimizer step: ``begin_step()`` opens the phase ``micro_step_0``; each further gradient-accumulation
micro-batch closes the open one and opens ``micro_step_<i>`` (``next_micro_step()``); ``end_step()`` closes
it and calls ``prof.step(tokens=..., samples=...)``. Tokens and samples are counted by a forward pre-hook
on the model the framework trains: every call of its ``forward`` inside an optimizer step adds the
``input_ids`` tensor's element count (padding included) and its first dimension; a model called without
``input_ids`` adds nothing, and the step is then recorded without counts (unless the framework's batch
gave them: ``add_counts``, with ``count_forward = False``). Counts are this rank's.

The run ends normally at ``finish()``; ``finish(error=exc)`` records ``complete: false`` and the reason.
A process that exits with the profile still running (the framework raised before its end hook) stops
it from an ``atexit`` hook, recording the uncaught exception Python saw, if any.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Mapping

from torchscope.profiler.guard import logger
from torchscope.profiler.options import ProfileOptions, checked_run_dir
from torchscope.profiler.session import profile

__all__ = ["CallbackDriver", "DrivenCallback", "MICRO_STEP_PHASE"]

#: phase name prefix of each gradient-accumulation micro-batch: micro_step_0, micro_step_1, ...
MICRO_STEP_PHASE = "micro_step"


def _count_input_ids(args: tuple, kwargs: Mapping[str, Any]) -> tuple[int, int] | None:
    """(tokens, samples) of a forward call's ``input_ids`` (keyword, or a Mapping first argument), else None."""
    ids = kwargs.get("input_ids")
    if ids is None and args and isinstance(args[0], Mapping):
        ids = args[0].get("input_ids")
    if ids is None or not hasattr(ids, "numel"):
        return None
    return int(ids.numel()), int(ids.shape[0]) if getattr(ids, "ndim", 0) > 0 else 1


class CallbackDriver:
    """One profile() per training run, stepped by a framework callback (see the module docstring)."""

    def __init__(self, out_dir: str | os.PathLike, options: Mapping[str, Any]) -> None:
        #: options validated now, before the framework starts (a wrong name or value fails here)
        self.config = ProfileOptions.from_kwargs(dict(options))
        #: the run folder, created and checked writable now (an unusable one fails here, naming why)
        self.out_dir = checked_run_dir(out_dir)
        self.prof: profile | None = None
        self._phase: contextlib.ExitStack | None = None
        self._micro = 0
        self._in_step = False
        self._tokens = 0
        self._samples = 0
        self._counted = False
        self._hook: Any = None
        self._atexit = False
        #: count tokens with a forward pre-hook on the model (False: the callback passes counts itself)
        self.count_forward = True

    @property
    def in_step(self) -> bool:
        """True between an optimizer step's first micro-batch and its end."""
        return self._in_step

    @property
    def running(self) -> bool:
        """True while this driver's profile records."""
        return self.prof is not None and self.prof._state == "running"

    def begin_run(self, model: Any = None) -> None:
        """Start the run's profile (model: the module the framework trains, for annotations and counts)."""
        if self.running:  # the previous run ended without its end hook (an exception the framework let through)
            self.finish(error=RuntimeError("the previous training run ended without reaching its end hook"))
        config = self.config
        if config.model is None and model is not None and hasattr(model, "parameters"):
            config = dataclasses.replace(config, model=model)
        self.prof = profile.with_options(self.out_dir, config)
        self.prof.start()
        if not self.running:
            return
        root = config.model if config.model is not None else model
        if self.count_forward and root is not None and hasattr(root, "register_forward_pre_hook"):
            try:
                self._hook = root.register_forward_pre_hook(self._on_forward, with_kwargs=True)
            except Exception as exc:  # noqa: BLE001 - counts are optional; the recording goes on
                logger.warning("torchscope: cannot count tokens of %s: %s", type(root).__name__, exc)
        if not self._atexit:
            atexit.register(self._at_exit)
            self._atexit = True

    def _on_forward(self, module: Any, args: tuple, kwargs: dict) -> None:
        if not self._in_step or not getattr(module, "training", True):
            return
        with contextlib.suppress(Exception):
            counts = _count_input_ids(args, kwargs)
            if counts is not None:
                self.add_counts(*counts)

    def add_counts(self, tokens: int | None, samples: int | None) -> None:
        """Add a micro-batch's tokens and samples (counts) to the open optimizer step."""
        self._tokens += int(tokens or 0)
        self._samples += int(samples or 0)
        self._counted = self._counted or bool(tokens or samples)

    def _open_phase(self) -> None:
        self._close_phase()
        if self.prof is None:
            return
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(self.prof.phase(f"{MICRO_STEP_PHASE}_{self._micro}"))
        except Exception as exc:  # noqa: BLE001 - a phase that cannot open leaves the step unnamed
            logger.warning("torchscope: cannot open phase %s: %s", self._micro, exc)
            return
        self._phase = stack

    def _close_phase(self) -> None:
        if self._phase is not None:
            stack, self._phase = self._phase, None
            with contextlib.suppress(Exception):
                stack.close()

    def begin_step(self) -> None:
        """An optimizer step begins (its first micro-batch)."""
        if not self.running:
            return
        self._in_step, self._micro = True, 0
        self._tokens = self._samples = 0
        self._counted = False
        self._open_phase()

    def next_micro_step(self) -> None:
        """A gradient-accumulation micro-batch ended and the next one of the same optimizer step begins."""
        if not self.running:
            return
        if not self._in_step:
            self.begin_step()
            return
        self._micro += 1
        self._open_phase()

    def end_micro_steps(self) -> None:
        """The last micro-batch of the step ended (the optimizer is about to step)."""
        self._close_phase()

    def end_step(self) -> None:
        """The optimizer step ended: one ``prof.step()`` with this step's counts."""
        self._close_phase()
        if not self.running:
            return
        counted = self._counted
        self._in_step = False
        self.prof.step(tokens=self._tokens if counted and self._tokens else None,
                       samples=self._samples if counted and self._samples else None)

    def finish(self, error: BaseException | None = None) -> Path | None:
        """Stop the profile (error: what ended the run, if it did not end normally); returns the run folder."""
        self._close_phase()
        self._in_step = False
        if self._hook is not None:
            with contextlib.suppress(Exception):
                self._hook.remove()
            self._hook = None
        if self._atexit:
            atexit.unregister(self._at_exit)
            self._atexit = False
        if self.prof is None:
            return None
        return self.prof.stop(error=error)

    def _at_exit(self) -> None:
        if self.running:
            err = getattr(sys, "last_value", None)
            self.finish(error=err if isinstance(err, BaseException) else
                        RuntimeError("the process exited before the training run's end hook"))


class DrivenCallback:
    """What every framework callback shows its user, over its ``CallbackDriver`` (``self._driver``)."""

    _driver: CallbackDriver

    @property
    def prof(self) -> Any:
        """The current (or last) run's ``torchscope.profile``, None before training."""
        return self._driver.prof

    @property
    def run_dir(self) -> Path:
        """The run folder this callback writes."""
        return self._driver.out_dir

    def stop(self, error: BaseException | None = None) -> Path | None:
        """Stop recording now (error: what ended training, if it failed); returns the run folder."""
        return self._driver.finish(error=error)
