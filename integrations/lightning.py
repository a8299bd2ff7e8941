"""A Lightning callback that records a torchscope run bundle, for ``lightning.pytorch`` and ``pytorch_lightning``::

    from torchscope.integrations.lightning import ProfilerCallback
    trainer = lightning.pytorch.Trainer(max_steps=100, callbacks=[ProfilerCallback("runs/pl")])
    trainer.fit(model, loader)

``ProfilerCallback(out_dir, *, framework=None, **profile_options)`` takes ``torchscope.profile``'s options
(checked here, before training). The object is a ``Callback`` of the framework(s) already imported
when it is built (both, when both are; if neither, ``lightning.pytorch``, else ``pytorch_lightning``,
is imported); ``framework="pytorch_lightning"`` or ``"lightning.pytorch"`` chooses one. The class for
each set of frameworks is built once, on first use, so neither is imported before that.

It starts the profile at ``on_train_start`` (``model=`` defaults to the LightningModule), names each
batch of an optimizer step as the phase ``micro_step_<i>`` (``on_train_batch_start`` to
``on_before_optimizer_step`` / ``on_train_batch_end``, so ``accumulate_grad_batches`` shows), calls
``prof.step()`` once per optimizer step, at the ``on_train_batch_end`` of the batch whose optimizer
stepped, and stops at ``on_train_end``; ``on_exception`` (KeyboardInterrupt included) stops it with
``complete: false`` and the reason. Lightning runs the forward and backward inside
``optimizer.step(closure)``, so the optimizer annotation of the trace encloses them.

Tokens and samples per step, this rank's: tokens are the element count of ``batch["input_ids"]`` when
the batch is a mapping with that key; samples the first dimension of the batch's first tensor
(the batch itself, its first item, or its first value). Distributed runs: each rank writes its own
``rank<N>`` files into the same ``out_dir``, the rank taken from ``torch.distributed``.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Mapping

from torchscope.integrations._driver import MICRO_STEP_PHASE, CallbackDriver, DrivenCallback

__all__ = ["ProfilerCallback", "FRAMEWORKS", "MICRO_STEP_PHASE"]

#: the Lightning packages whose Trainer this callback works with, in the order tried when none is imported
FRAMEWORKS = ("lightning.pytorch", "pytorch_lightning")

_CLASSES: dict[tuple[str, ...], type] = {}


def _frameworks(framework: str | None) -> tuple[str, ...]:
    """The framework modules to be a Callback of (see the module docstring)."""
    if framework is not None:
        if framework not in FRAMEWORKS:
            raise ValueError(f"ProfilerCallback(framework={framework!r}): must be one of {', '.join(FRAMEWORKS)}")
        importlib.import_module(framework)
        return (framework,)
    loaded = tuple(m for m in FRAMEWORKS if m in sys.modules)
    if loaded:
        return loaded
    for name in FRAMEWORKS:
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        return (name,)
    raise ImportError("torchscope.integrations.lightning needs lightning or pytorch_lightning "
                      "(pip install 'torchscope[lightning]')")


def _batch_counts(batch: Any) -> tuple[int | None, int | None]:
    """(tokens, samples) of a Lightning batch (see the module docstring); None where unknown."""
    tokens = None
    first = batch
    if isinstance(batch, Mapping):
        ids = batch.get("input_ids")
        if hasattr(ids, "numel"):
            tokens = int(ids.numel())
        first = next(iter(batch.values()), None)
    elif isinstance(batch, (list, tuple)) and batch:
        first = batch[0]
    shape = getattr(first, "shape", None)
    samples = int(shape[0]) if shape is not None and len(shape) > 0 else None
    return tokens, samples


class ProfilerCallback(DrivenCallback):
    """Record a torchscope run bundle of a Lightning ``Trainer.fit`` (see the module docstring)."""

    def __new__(cls, out_dir: str | os.PathLike = "runs/run", *, framework: str | None = None,
                **profile_options: Any) -> "ProfilerCallback":
        if cls is not ProfilerCallback:  # the per-framework subclass itself
            return super().__new__(cls)
        names = _frameworks(framework)
        sub = _CLASSES.get(names)
        if sub is None:
            bases = tuple(sys.modules[name].Callback for name in names)
            sub = _CLASSES[names] = type("ProfilerCallback", (ProfilerCallback, *bases),
                                         {"__module__": __name__, "__doc__": ProfilerCallback.__doc__,
                                          "frameworks": names})
        return super().__new__(sub)

    #: the framework modules this object is a Callback of (set on each per-framework class)
    frameworks: tuple[str, ...] = ()

    def __init__(self, out_dir: str | os.PathLike = "runs/run", *, framework: str | None = None,
                 **profile_options: Any) -> None:
        self._options = dict(profile_options)
        self._driver = CallbackDriver(out_dir, profile_options)
        self._stepped = False

    def __reduce__(self) -> tuple:
        # a dynamic class pickles by its recipe (ddp_spawn sends callbacks to the workers)
        return (_rebuild, (self.frameworks, str(self._driver.out_dir), self._options))

    # ---- Callback hooks --------------------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Start the profile."""
        self._driver.count_forward = False  # counts come from the batch
        self._driver.begin_run(pl_module)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """A batch begins: the first of an optimizer step, or its next micro-batch."""
        d = self._driver
        if d.in_step:
            d.next_micro_step()
        else:
            d.begin_step()
        self._stepped = False
        if d.running:
            try:
                d.add_counts(*_batch_counts(batch))
            except Exception:  # noqa: BLE001 - counts are optional
                pass

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        """The optimizer is about to step: the last micro-batch's forward and backward are done."""
        self._stepped = True
        self._driver.end_micro_steps()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """One ``prof.step()`` when this batch's optimizer stepped."""
        self._driver.end_micro_steps()
        if self._stepped:
            self._stepped = False
            self._driver.end_step()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Stop the profile: a complete run."""
        self._driver.finish()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Stop the profile: an incomplete run, and why."""
        self._driver.finish(error=exception)


def _rebuild(frameworks: tuple[str, ...], out_dir: str, options: dict) -> ProfilerCallback:
    """A ProfilerCallback from its pickled recipe."""
    return ProfilerCallback(out_dir, framework=frameworks[0] if len(frameworks) == 1 else None, **options)
