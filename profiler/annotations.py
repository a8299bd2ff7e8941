"""Training-loop and model annotations recorded without changes to the user's code.

Phases ("torchscope.phase" events) come from:
- ``data_loading``: the DataLoader iterator's ``__next__`` (patched on the iterator base class);
- ``forward`` / ``prefill`` / ``decode``: forward pre/post hooks on the root model(s). Without
  ``model=``, global module hooks watch the first step, take the modules called at depth 0 as roots
  and are then replaced by hooks on those roots only. In no-grad mode on a model that has a
  ``generate`` method, a forward over more than one token is "prefill", one token is "decode";
- ``loss``: a root that is a ``torch.nn`` loss module, or else the gap between the end of the
  forward and the start of the backward (where the loss is computed);
- ``backward``: ``torch.autograd.backward`` (which ``Tensor.backward`` calls), wrapped;
- ``optimizer``: torch.optim's global optimizer step pre/post hooks;
- ``zero_grad``: ``Optimizer.zero_grad`` and ``Module.zero_grad``, wrapped;
- user phases: ``prof.phase(name)``.

Module ranges ("torchscope.module" events, name = qualified name from ``named_modules`` of the
root, args {"direction", "step"}) cover each top-level child of a root (containers such as
ModuleList are expanded; single-child wrappers such as DDP are looked through, and so is a shell
that directly holds a layer stack, e.g. HF's ``transformer`` → ``transformer.h.0``, ``transformer.ln_f``).
A child's backward range starts when the autograd node that produced its output is about to run
(a node pre-hook) and ends where the next child's backward starts (the gradient of its input is
the gradient of the previous child's output), the last one with the backward call.

Every hook runs under one Guard: the first exception removes all of them and restores every patch.
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import Any, Callable, Iterator

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
import torch.utils.data.dataloader

from torchscope.profiler.guard import Guard

__all__ = ["Annotator", "PHASE_CAT", "MODULE_CAT", "MAX_EVENTS", "PHASES"]

PHASE_CAT = "torchscope.phase"
MODULE_CAT = "torchscope.module"
PHASES = ("data_loading", "forward", "loss", "backward", "optimizer", "zero_grad", "prefill", "decode")
MAX_EVENTS = 500_000  # annotation events kept in memory; later ones are counted as dropped

_CONTAINERS = (torch.nn.ModuleList, torch.nn.ModuleDict)


def _tensors(obj: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    """Tensors found in a module's inputs/outputs (tensors, sequences, dicts, HF ModelOutputs)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif depth < 2 and isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item, depth + 1)
    elif depth < 2 and isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item, depth + 1)


def _seq_len(args: tuple, kwargs: dict) -> int | None:
    """The sequence length of a language model call (input_ids or the first tensor argument)."""
    x = kwargs.get("input_ids")
    if x is None:
        x = kwargs.get("inputs_embeds")
        if isinstance(x, torch.Tensor) and x.dim() >= 2:
            return int(x.shape[-2])
    if x is None:
        x = next((a for a in args if isinstance(a, torch.Tensor)), None)
    if isinstance(x, torch.Tensor) and x.dim() >= 1:
        return int(x.shape[-1])
    return None


def top_level_children(root: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(qualified name, module) for the children whose ranges are recorded under `root`."""
    prefix = ""
    node = root
    # look through single-child wrappers (DDP, FSDP, compiled modules, HF "transformer" shells)
    while True:
        kids = list(node.named_children())
        if len(kids) == 1 and not isinstance(kids[0][1], _CONTAINERS) and list(kids[0][1].children()):
            prefix = f"{prefix}{kids[0][0]}."
            node = kids[0][1]
            continue
        break
    out: list[tuple[str, torch.nn.Module]] = []

    def expand(name: str, mod: torch.nn.Module, in_container: bool) -> None:
        if isinstance(mod, _CONTAINERS):
            for sub_name, sub in mod.named_children():
                expand(f"{name}.{sub_name}", sub, True)
        elif not in_container and any(isinstance(c, _CONTAINERS) for c in mod.children()):
            # a shell around a stack of layers (HF "transformer"/"model"): its parts are the ranges
            for sub_name, sub in mod.named_children():
                expand(f"{name}.{sub_name}", sub, False)
        else:
            out.append((name, mod))

    for name, mod in node.named_children():
        expand(f"{prefix}{name}", mod, False)
    return out


class Annotator:
    """Installs the hooks and patches, collects phase/module events as (name, cat, t0, t1, args)."""

    def __init__(self, *, model: torch.nn.Module | None = None, modules: bool = True,
                 on_root: Callable[[torch.nn.Module], None] | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.guard = Guard("annotation", on_fail=self.remove)
        self.events: list[tuple[str, str, int, int, dict | None]] = []
        self.dropped = 0
        self.keep = True
        self.step = 0
        self.roots: list[torch.nn.Module] = []
        self._model = model
        self._modules_enabled = modules
        self._on_root = on_root
        self._clock = clock
        self._handles: list[Any] = []
        self._global_handles: list[Any] = []
        self._patches: list[tuple[Any, str, Any]] = []
        self._depth = 0
        self._discovered: list[torch.nn.Module] = []
        self._root_stack: list[tuple[str, int]] = []
        self._mod_start: dict[int, int] = {}
        self._mod_names: dict[int, str] = {}
        self._bwd_start: dict[str, int] = {}
        self._last_forward_end: int | None = None
        self._loss_seen = False
        self._backward_depth = 0
        self._opt_start: int | None = None
        self._installed = False
        # guarded once here, not per registration: node pre-hooks are registered on every forward
        self._g_bwd_start = self.guard.wrap(self._bwd_mark_start)
        #: per child module (by id), its backward-start node pre-hook, made once at adoption (not per forward)
        self._bwd_hooks: dict[int, Callable[..., None]] = {}

    # ---- events -------------------------------------------------------------------------------
    def record(self, name: str, cat: str, t0_ns: int, t1_ns: int, args: dict | None = None) -> None:
        """Keep one annotation event (wall-clock ns) while `keep` is set (the trace only has room for
        events inside Kineto's recording windows, so the session clears it outside them)."""
        if not self.keep:
            return
        if len(self.events) >= MAX_EVENTS:
            self.dropped += 1
            return
        self.events.append((name, cat, t0_ns, t1_ns, args))

    def phase_args(self) -> dict:
        return {"step": self.step}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """A user phase around the with-block."""
        t0 = self._clock()
        try:
            yield
        finally:
            if not self.guard.failed:
                self.guard.call(self.record, name, PHASE_CAT, t0, self._clock(), self.phase_args())

    # ---- install / remove ---------------------------------------------------------------------
    def install(self) -> None:
        """Install hooks and patches (idempotent)."""
        if self._installed:
            return
        self._installed = True
        g = self.guard
        if self._model is not None:
            self._adopt_root(self._model)
        else:
            self._global_handles.append(
                torch.nn.modules.module.register_module_forward_pre_hook(g.wrap(self._global_pre)))
            self._global_handles.append(
                torch.nn.modules.module.register_module_forward_hook(g.wrap(self._global_post), always_call=True))
        self._handles.append(register_optimizer_step_pre_hook(g.wrap(self._opt_pre)))
        self._handles.append(register_optimizer_step_post_hook(g.wrap(self._opt_post)))
        self._patch(torch.autograd, "backward", self._wrap_backward)
        self._patch(torch.optim.Optimizer, "zero_grad", lambda orig: self._wrap_phase(orig, "zero_grad"))
        self._patch(torch.nn.Module, "zero_grad", lambda orig: self._wrap_phase(orig, "zero_grad"))
        from torch.utils.data import dataloader  # noqa: PLC0415

        self._patch(dataloader._BaseDataLoaderIter, "__next__", lambda orig: self._wrap_phase(orig, "data_loading"))

    def _patch(self, owner: Any, attr: str, make: Callable[[Any], Any]) -> None:
        orig = owner.__dict__[attr] if attr in getattr(owner, "__dict__", {}) else getattr(owner, attr)
        setattr(owner, attr, make(orig))
        self._patches.append((owner, attr, orig))

    def remove(self) -> None:
        """Remove every hook and restore every patch (safe to call twice)."""
        for h in self._handles + self._global_handles:
            try:
                h.remove()
            except Exception:  # noqa: BLE001
                pass
        self._handles.clear()
        self._global_handles.clear()
        for owner, attr, orig in reversed(self._patches):
            try:
                setattr(owner, attr, orig)
            except Exception:  # noqa: BLE001
                pass
        self._patches.clear()

    # ---- root discovery -----------------------------------------------------------------------
    def _global_pre(self, module: torch.nn.Module, args: tuple) -> None:
        if self._depth == 0:
            if not any(module is m for m in self._discovered):
                self._discovered.append(module)
            self._root_pre(module, args, {}, "loss" if isinstance(module, torch.nn.modules.loss._Loss) else None)
        self._depth += 1

    def _global_post(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth == 0:
            self._root_post(module, args, output)

    def on_step(self, step: int) -> None:
        """Called by prof.step(): closes pending ranges, adopts roots found in the first step."""
        self._flush_backward(self._clock())
        self.step = step
        self._loss_seen = False
        self._last_forward_end = None
        if self._global_handles and self._discovered:
            for h in self._global_handles:
                h.remove()
            self._global_handles.clear()
            self._depth = 0
            for m in self._discovered:
                self._adopt_root(m)

    def _adopt_root(self, root: torch.nn.Module) -> None:
        g = self.guard
        self.roots.append(root)
        is_loss = isinstance(root, torch.nn.modules.loss._Loss)
        fixed = "loss" if is_loss else None
        self._handles.append(root.register_forward_pre_hook(
            g.wrap(lambda m, a, k: self._root_pre(m, a, k, fixed)), with_kwargs=True))
        self._handles.append(root.register_forward_hook(
            g.wrap(lambda m, a, o: self._root_post(m, a, o)), always_call=True))
        if is_loss:
            return
        if self._on_root is not None:
            self._on_root(root)
        if not self._modules_enabled:
            return
        for name, child in top_level_children(root):
            self._mod_names[id(child)] = name
            self._bwd_hooks[id(child)] = functools.partial(self._g_bwd_start, name)
            self._handles.append(child.register_forward_pre_hook(g.wrap(self._child_pre)))
            self._handles.append(child.register_forward_hook(g.wrap(self._child_post), always_call=True))

    # ---- root forward -------------------------------------------------------------------------
    def _root_pre(self, module: torch.nn.Module, args: tuple, kwargs: dict, fixed: str | None) -> None:
        name = fixed
        if name is None:
            name = "forward"
            if not torch.is_grad_enabled() and (callable(getattr(module, "generate", None))
                                                or kwargs.get("past_key_values") is not None):
                n = _seq_len(args, kwargs)
                if n is not None:
                    name = "prefill" if n > 1 else "decode"
        self._root_stack.append((name, self._clock()))

    def _root_post(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        if not self._root_stack:
            return
        name, t0 = self._root_stack.pop()
        t1 = self._clock()
        self.record(name, PHASE_CAT, t0, t1, self.phase_args())
        if name == "loss":
            self._loss_seen = True
        elif name == "forward" and torch.is_grad_enabled():
            self._last_forward_end = t1

    # ---- per-module ranges --------------------------------------------------------------------
    # Per-module ranges cost the most per step (a node pre-hook registered per child and forward, ~12 µs
    # each), so outside Kineto's windows, where their events would be dropped (keep is False, set by the
    # session at each prof.step()), the hooks return at once: with the default schedule, 17 of 20 steps.
    def _child_pre(self, module: torch.nn.Module, args: tuple) -> None:
        if self.keep:
            self._mod_start[id(module)] = self._clock()

    def _child_post(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        t0 = self._mod_start.pop(id(module), None)
        if t0 is None:
            return
        key = id(module)
        self.record(self._mod_names[key], MODULE_CAT, t0, self._clock(), {"direction": "forward", "step": self.step})
        if torch.is_grad_enabled():
            seen = None
            hook = self._bwd_hooks[key]
            for t in _tensors(output):
                fn = t.grad_fn
                if fn is not None and fn is not seen:  # a node pre-hook: cheaper than a tensor hook
                    fn.register_prehook(hook)
                    seen = fn

    def _bwd_mark_start(self, name: str, grad_outputs: Any = None) -> None:
        self._bwd_start.setdefault(name, self._clock())

    def _flush_backward(self, t_end: int) -> None:
        """Emit the backward range of every module whose backward started: each ends where the next
        one (in time) starts, since a module's input gradient is the output gradient of the module
        before it; the last one ends with the backward call."""
        if not self._bwd_start:
            return
        starts = sorted(self._bwd_start.items(), key=lambda kv: kv[1])
        for i, (name, t0) in enumerate(starts):
            t1 = starts[i + 1][1] if i + 1 < len(starts) else t_end
            self.record(name, MODULE_CAT, t0, max(t0, t1), {"direction": "backward", "step": self.step})
        self._bwd_start.clear()

    # ---- patched callables --------------------------------------------------------------------
    def _wrap_backward(self, orig: Callable[..., Any]) -> Callable[..., Any]:
        def backward(*args: Any, **kwargs: Any) -> Any:
            if self.guard.failed or self._backward_depth:
                return orig(*args, **kwargs)
            t0 = self._clock()
            self.guard.call(self._before_backward, t0)
            self._backward_depth += 1
            try:
                return orig(*args, **kwargs)
            finally:
                self._backward_depth -= 1
                self.guard.call(self._after_backward, t0)

        backward.__wrapped__ = orig  # type: ignore[attr-defined]
        return backward

    def _close_loss_gap(self, t0: int) -> None:
        """The loss is computed between a training forward's end and the next zero_grad/backward."""
        if not self._loss_seen and self._last_forward_end is not None and t0 > self._last_forward_end:
            self.record("loss", PHASE_CAT, self._last_forward_end, t0, self.phase_args())
        self._last_forward_end = None
        self._loss_seen = False

    def _before_backward(self, t0: int) -> None:
        self._close_loss_gap(t0)

    def _after_backward(self, t0: int) -> None:
        t1 = self._clock()
        self.record("backward", PHASE_CAT, t0, t1, self.phase_args())
        self._flush_backward(t1)

    def _wrap_phase(self, orig: Callable[..., Any], name: str) -> Callable[..., Any]:
        state = {"depth": 0}

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self.guard.failed or state["depth"]:
                return orig(*args, **kwargs)
            t0 = self._clock()
            if name == "zero_grad":
                self.guard.call(self._close_loss_gap, t0)
            state["depth"] += 1
            try:
                return orig(*args, **kwargs)
            finally:
                state["depth"] -= 1
                self.guard.call(self.record, name, PHASE_CAT, t0, self._clock(), self.phase_args())

        wrapper.__wrapped__ = orig  # type: ignore[attr-defined]
        wrapper.__name__ = getattr(orig, "__name__", name)
        return wrapper

    def _opt_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._opt_start = self._clock()

    def _opt_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._opt_start is not None:
            self.record("optimizer", PHASE_CAT, self._opt_start, self._clock(), self.phase_args())
            self._opt_start = None
