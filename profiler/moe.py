"""Mixture-of-experts routing: which experts each router picks, per step × layer × expert.

``RouterRecorder`` finds the routers of a model (Hugging Face MoE routers of transformers 5.x such
as ``MixtralTopKRouter`` / ``Qwen2MoeTopKRouter`` / ``DeepseekV3TopkRouter`` / ``GptOssTopKRouter``,
which return ``(logits, top-k weights, top-k indices)``, and the older layout where a
``...SparseMoeBlock`` owns a ``gate`` ``nn.Linear`` that returns router logits and the block takes
the top-k itself), puts a forward hook on each, and writes ``rank<N>.moe.jsonl`` lines::

    {"type": "router", "layer", "layer_index", "num_experts", "top_k", "expert_params"?, "expert_bytes"?}
                                                                                 once per router
    {"type": "counts", "step", "phase", "layer", "tokens", "calls", "counts": [E], "weights": [E], "dropped"?}
                                                      per step × phase × router that saw tokens
    {"type": "tokens", "step", "phase", "layer", "experts": [[k ids], ...]}     when sample_tokens > 0

``counts[e]`` is the number of top-k assignments to expert ``e`` (so ``sum(counts) == tokens ×
top_k`` unless a router drops tokens: indices outside 0..E-1 are counted in ``dropped``, written
only when non-zero); ``calls`` is how many router calls (dispatches) the line sums; the size of one
expert (``expert_params`` / ``expert_bytes``) is written when the MoE block's experts can be told
apart (see ``expert_size``); ``weights[e]`` is the summed routing weight those
assignments carried (the router's own top-k weights; for a router that returns only logits, the
softmax probability of each chosen expert).

The hot path never waits for the device: a hook reads shapes (host metadata) and keeps a reference
to the router's top-k indices and weights; every FOLD_CALLS calls (or FOLD_ROWS rows, or at
``step()``) they are concatenated, clamped and ``index_add_``-ed into a per-router count vector that
stays on the router's device (so a decode loop of one-token calls costs a few kernels per 32 calls).
The router's output tensors are read when they are added up, so a model that overwrote them in
place after the router returned would be counted with the overwritten values (no known model does).
(``torch.bincount`` is avoided on purpose: on CUDA it reads the input's min and max back to the
host, one sync per call.) ``step()`` moves everything of that step to the host in one transfer.

Phases: ``set_phase(name)`` labels what follows; with no explicit phase the recorder labels a
router call from the model's top-level call (seen by a hook ``attach()`` puts on the root):
"train" in training mode with grad; "prefill" for the first call with a new KV cache and "decode"
for later calls with the same cache (how ``generate`` calls a model); without a cache, under
no_grad on a model with ``generate``, "prefill" for more than one token and "decode" for one (the
rule of profiler/annotations.py, so both streams agree); else "forward". Routers called outside a
root call are labelled "train" or "forward" from their module's training flag.

An exception inside a hook is logged once and only that router stops recording; the job goes on.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import torch
from torch import nn

from torchscope.profiler.guard import Guard, logger

__all__ = [
    "RouterRecorder",
    "SAMPLE_CALLS_PER_STEP",
    "SAMPLE_SEED",
    "expert_size",
    "find_routers",
    "routing_from_output",
    "routing_layout",
]

SAMPLE_SEED = 0  # seed of the recorder's private generators: token sampling never touches the user's RNG
SAMPLE_CALLS_PER_STEP = 256  # folds whose sampled rows are kept per step and phase (a reservoir)
FOLD_CALLS = 32  # router calls whose outputs are kept (by reference) before they are added up on device
FOLD_ROWS = 1 << 16  # ... or this many token rows, whichever comes first (bounds the memory held)
_WEIGHT_DIGITS = 6  # decimals kept for summed routing weights in the JSONL

# Class names that say "this module routes tokens to experts"; and names that contain those words
# but are something else (gated norms, gated MLPs, forget gates of linear-attention layers, ...).
_ROUTER_CLASS = re.compile(r"router|topk|top\d|gating|gate$", re.IGNORECASE)
_NOT_ROUTER_CLASS = re.compile(
    r"gated|norm|deltanet|attention|forget|projection|residual|message|embed|mlp$|act$", re.IGNORECASE
)
# Class names of the blocks that hold experts (the parent of a legacy `gate` linear).
_MOE_BLOCK_CLASS = re.compile(r"moe|sparse|expert|mixture", re.IGNORECASE)
_LEGACY_GATE_ATTRS = ("gate", "router", "wg")
_NUM_EXPERTS_ATTRS = ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts", "num_experts_total")
_TOP_K_ATTRS = ("top_k", "num_experts_per_tok", "moe_topk", "moe_top_k", "topk", "num_selected_experts", "k")


def _in_backward() -> bool:
    """True while the autograd engine runs a backward pass on this thread (checkpoint recomputation)."""
    task_id = getattr(torch._C, "_current_graph_task_id", None)
    return task_id is not None and task_id() != -1


def _seq_len(args: tuple, kwargs: dict) -> int | None:
    """Sequence length of a model call (dim 1 of input_ids / inputs_embeds / the first tensor arg)."""
    for key in ("input_ids", "inputs_embeds"):
        value = kwargs.get(key)
        if isinstance(value, torch.Tensor) and value.dim() >= 2:
            return int(value.shape[1])
    for value in args:
        if isinstance(value, torch.Tensor) and value.dim() >= 2:
            return int(value.shape[1])
    return None


def _call_phase(module: nn.Module, args: tuple, kwargs: dict, recorder: "RouterRecorder") -> str:
    """Phase of a top-level model call: train, prefill/decode (generation), or forward.

    With a KV cache argument, the first call with a cache object is "prefill" and later calls with
    the same object are "decode" (a one-token prompt is still prefill). Without one, the rule of the
    phase annotations applies: under no_grad on a model with a ``generate`` method, a call over more
    than one token is "prefill" and over one token "decode".
    """
    if module.training and torch.is_grad_enabled():
        return "train"
    cache = kwargs.get("past_key_values", kwargs.get("cache"))
    if cache is not None:
        try:
            seen = recorder._last_cache is not None and recorder._last_cache() is cache
            recorder._last_cache = weakref.ref(cache)
        except TypeError:  # legacy tuple caches cannot be weak-referenced: an empty one means prefill
            seen = len(cache) > 0 and cache[0] is not None
        return "decode" if seen else "prefill"
    if not torch.is_grad_enabled() and callable(getattr(module, "generate", None)):
        n = _seq_len(args, kwargs)
        if n is not None:
            return "prefill" if n > 1 else "decode"
    return "train" if module.training else "forward"


class _Writer(Protocol):
    def write(self, obj: dict) -> None: ...


Extract = Callable[[nn.Module, tuple, Any], Any]


def _int_attr(obj: Any, names: tuple[str, ...]) -> int | None:
    """The first attribute of `obj` among `names` that holds a positive int."""
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _text_config(root: nn.Module) -> Any:
    """The (text) config of a Hugging Face model, or None."""
    config = getattr(root, "config", None)
    if config is None:
        return None
    getter = getattr(config, "get_text_config", None)
    if callable(getter):
        try:
            return getter()
        except Exception:  # noqa: BLE001 - a config we cannot read is just no config
            return config
    return config


def _first_linear_out(module: nn.Module) -> int | None:
    """out_features of the first nn.Linear directly inside `module` (a router's projection)."""
    for child in module.children():
        if isinstance(child, nn.Linear):
            return child.out_features
    return None


def _router_shape(module: nn.Module, parent: nn.Module | None, config: Any) -> tuple[int | None, int | None]:
    """(num_experts, top_k) of a router module from its attributes, its block's and the model config."""
    num_experts = _int_attr(module, _NUM_EXPERTS_ATTRS)
    if num_experts is None and isinstance(module, nn.Linear):
        num_experts = module.out_features
    if num_experts is None:
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.dim() == 2:
            num_experts = int(weight.shape[0])
    if num_experts is None:
        num_experts = _first_linear_out(module)
    for source in (parent, config):
        if num_experts is None and source is not None:
            num_experts = _int_attr(source, _NUM_EXPERTS_ATTRS)
    top_k = _int_attr(module, _TOP_K_ATTRS) if not isinstance(module, nn.Linear) else None
    for source in (parent, config):
        if top_k is None and source is not None:
            top_k = _int_attr(source, _TOP_K_ATTRS[:-1])  # a bare "k" only counts on the router itself
    return num_experts, top_k


def _has_expert_count_attr(module: nn.Module, parent: nn.Module | None, config: Any) -> bool:
    """True when the router, its block or the config names a number of experts explicitly."""
    return any(
        source is not None and _int_attr(source, _NUM_EXPERTS_ATTRS) is not None
        for source in (module, parent, config)
    )


def expert_size(block: nn.Module, num_experts: int, router: nn.Module | None = None) -> tuple[int, int] | None:
    """(parameters, bytes) of one expert of the MoE `block`, or None when the experts cannot be told apart.

    Experts are the block's parameters stacked along a leading dimension of `num_experts` (the
    transformers 5.x layout; nn.Linear weights and router modules are not experts) plus every
    ModuleList/ModuleDict of exactly `num_experts` modules (the older one-module-per-expert layout);
    the router's own and shared experts' parameters are left out.
    """
    routers = {id(p) for p in router.parameters()} if router is not None else set()
    linears: set[int] = set()
    for child in block.modules():
        cls = type(child).__name__
        if child is not block and _ROUTER_CLASS.search(cls) and not _NOT_ROUTER_CLASS.search(cls):
            routers.update(id(p) for p in child.parameters())
        if isinstance(child, nn.Linear):  # a stacked expert tensor is never a Linear's weight
            linears.update(id(p) for p in child.parameters(recurse=False))
    seen: set[int] = set(routers)
    params = nbytes = 0

    def add(p: torch.Tensor) -> None:
        nonlocal params, nbytes
        seen.add(id(p))
        params += p.numel()
        nbytes += p.numel() * p.element_size()

    for name, child in block.named_modules():
        if "shared" not in name and isinstance(child, (nn.ModuleList, nn.ModuleDict)) and len(child) == num_experts:
            for p in child.parameters():
                if id(p) not in seen:
                    add(p)
    for name, p in block.named_parameters():
        if "shared" not in name and id(p) not in seen and id(p) not in linears and p.dim() >= 2 \
                and p.shape[0] == num_experts:
            add(p)
    if not params:
        return None
    return params // num_experts, nbytes // num_experts


@dataclass(frozen=True)
class RouterInfo:
    """A router found in a model: its qualified name, module, shape (top_k None = from outputs), MoE block."""

    name: str
    module: nn.Module
    num_experts: int
    top_k: int | None
    block: nn.Module | None = None


def find_routers(root: nn.Module) -> list[RouterInfo]:
    """The MoE routers inside `root`, in named_modules order (outermost match wins)."""
    config = _text_config(root)
    modules = dict(root.named_modules())
    found: list[RouterInfo] = []
    taken: list[str] = []
    for name, module in modules.items():
        if any(name.startswith(prefix + ".") for prefix in taken):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = modules.get(parent_name) if name else None
        cls = type(module).__name__
        if isinstance(module, nn.Linear):
            # Legacy layout: `gate` linear (logits only) directly inside an experts block.
            if attr not in _LEGACY_GATE_ATTRS or parent is None:
                continue
            if not _MOE_BLOCK_CLASS.search(type(parent).__name__):
                continue
            num_experts, top_k = _router_shape(module, parent, config)
            expected = _int_attr(parent, _NUM_EXPERTS_ATTRS) or (
                _int_attr(config, _NUM_EXPERTS_ATTRS) if config is not None else None
            )
            if expected is not None and module.out_features != expected:
                continue
            if top_k is None:  # logits alone do not say how many experts a token goes to
                logger.info("torchscope: MoE gate %s skipped: its top-k is unknown (use watch(top_k=...))", name)
                continue
        else:
            if not _ROUTER_CLASS.search(cls) or _NOT_ROUTER_CLASS.search(cls):
                continue
            num_experts, top_k = _router_shape(module, parent, config)
            in_moe_block = parent is not None and (
                _MOE_BLOCK_CLASS.search(type(parent).__name__) is not None or hasattr(parent, "experts"))
            if not (_has_expert_count_attr(module, parent, config) or in_moe_block):
                continue
        if num_experts is None or num_experts < 2:
            continue
        found.append(RouterInfo(name=name or cls, module=module, num_experts=num_experts, top_k=top_k, block=parent))
        taken.append(name)
    return found


Layout = tuple[str, int, int]  # (kind, position of the routing tensor, position of the weights or -1)


def _items(output: Any) -> tuple:
    return tuple(output) if isinstance(output, (tuple, list)) else (output,)


def routing_layout(output: Any, num_experts: int, top_k: int | None) -> Layout:
    """Where a router's output keeps its routing: ("indices" | "mask" | "scores", position, weights position).

    Looked for in this order: an integer tensor [..., k] of top-k indices (weights: a float tensor
    of the same shape, if any); an integer/bool one-hot dispatch mask [..., E]; a float tensor
    [..., E] of logits, probabilities or scores (needs top_k). Raises ValueError when none is there.
    """
    items = _items(output)
    tensors = [(i, t) for i, t in enumerate(items) if isinstance(t, torch.Tensor)]
    ints = [(i, t) for i, t in tensors if not t.is_floating_point() and not t.is_complex() and t.dim() >= 2]
    floats = [(i, t) for i, t in tensors if t.is_floating_point() and t.dim() >= 1]
    for i, t in ints:
        k = t.shape[-1]
        if (top_k is not None and k == top_k) or (top_k is None and k < num_experts):
            j = next((j for j, f in floats if f.shape == t.shape), -1)
            return ("indices", i, j)
    for i, t in ints:
        if t.shape[-1] == num_experts:  # one-hot dispatch mask (switch-style routers)
            return ("mask", i, -1)
    for i, f in floats:
        if f.shape[-1] == num_experts and top_k is not None:
            return ("scores", i, -1)
    shapes = [tuple(t.shape) for _, t in tensors]
    raise ValueError(f"cannot read top-{top_k} routing over {num_experts} experts from output shapes {shapes}")


def _read_routing(output: Any, layout: Layout, num_experts: int,
                  top_k: int | None) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(indices, weights) at `layout` in `output`, or None when the output no longer fits the layout."""
    kind, i, j = layout
    items = _items(output)
    if i >= len(items) or not isinstance(items[i], torch.Tensor):
        return None
    t = items[i]
    if kind == "indices":
        if t.dim() < 2 or t.is_floating_point() or (top_k is not None and t.shape[-1] != top_k):
            return None
        w = items[j] if 0 <= j < len(items) else None
        return t, (w if isinstance(w, torch.Tensor) and w.shape == t.shape else None)
    if t.shape[-1] != num_experts:
        return None
    if kind == "mask":
        mask = t.reshape(-1, num_experts).to(torch.int8)
        values, indices = mask.topk(top_k or 1, dim=-1)
        return torch.where(values > 0, indices, torch.full_like(indices, -1)), None
    probs = torch.softmax(t.detach().reshape(-1, num_experts).float(), dim=-1)
    weights, indices = probs.topk(top_k, dim=-1)  # type: ignore[arg-type]
    return indices, weights


def routing_from_output(output: Any, num_experts: int, top_k: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(top-k expert indices [..., k], their weights or None) read from a router's output (see routing_layout).

    From a one-hot mask the indices are the experts of the set entries (-1 pads a dropped token);
    from logits/scores they are the top-k, with softmax probabilities as weights.
    """
    got = _read_routing(output, routing_layout(output, num_experts, top_k), num_experts, top_k)
    assert got is not None  # the layout was just read off this output
    return got


@dataclass
class _PhaseBuffers:
    """One router's accumulators for one phase of the current step (all on the router's device)."""

    counts: torch.Tensor  # [E + 1] int64; the last bin collects out-of-range indices (dropped tokens)
    weights: torch.Tensor  # [E + 1] float32
    one: torch.Tensor  # [1] int64, expanded as the source of index_add_ (no per-call allocation)
    tokens: int = 0  # from shapes, no device read
    calls: int = 0  # router calls summed into this line
    has_weights: bool = False
    pending: list[tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=list)  # (indices, weights)
    pending_rows: int = 0
    samples: list[tuple[torch.Tensor, int]] = field(default_factory=list)  # (rows [n, k], tokens they stand for)
    sample_calls: int = 0


@dataclass
class _Router:
    name: str
    index: int
    module: nn.Module
    num_experts: int
    top_k: int | None
    extract: Extract | None
    expert: tuple[int, int] | None = None  # (parameters, bytes) of one expert
    guard: Guard = field(default_factory=lambda: Guard("MoE router"))
    layout: Layout | None = None  # where its output keeps the routing (found on the first call)
    handle: Any = None
    announced: bool = False
    phases: dict[str, _PhaseBuffers] = field(default_factory=dict)


class RouterRecorder:
    """Counts, per step × phase × router, how many tokens each expert got; writes them as JSONL lines."""

    def __init__(self, writer: _Writer, *, sample_tokens: int = 0) -> None:
        self._writer = writer
        self.sample_tokens = max(0, int(sample_tokens))
        self._routers: list[_Router] = []
        self._phase: str | None = None
        self._auto_phase: str | None = None
        self._root_depth = 0  # nesting of attached roots' forward calls
        self._last_cache: Any = None  # weakref to the KV cache of the last top-level call
        self._root_handles: list[Any] = []
        self._roots: list[weakref.ReferenceType] = []
        self._generators: dict[torch.device, torch.Generator] = {}
        self._pick = random.Random(SAMPLE_SEED)
        self._step_guard = Guard("MoE step")
        self._closed = False
        self._last_step = -1
        self._next_index = 0  # layer_index of the next router registered

    # ------------------------------------------------------------------ registration
    @property
    def routers(self) -> list[str]:
        """Qualified names of the routers being recorded (failed ones excluded)."""
        return [r.name for r in self._routers if not r.guard.failed]

    def attach(self, root: nn.Module) -> int:
        """Find the MoE routers inside `root`, hook them, and return how many were found."""
        found = 0
        known = {id(r.module) for r in self._routers}
        for info in find_routers(root):
            if id(info.module) in known:
                continue
            size = expert_size(info.block, info.num_experts, info.module) if info.block is not None else None
            self._add(info.module, info.name, info.num_experts, info.top_k, None, size)
            found += 1
        if found and not any(ref() is root for ref in self._roots):
            self._roots.append(weakref.ref(root))
            self._root_handles.append(root.register_forward_pre_hook(self._on_root_call, with_kwargs=True))
            self._root_handles.append(root.register_forward_hook(self._on_root_return, always_call=True))
        return found

    def watch(
        self,
        module: nn.Module,
        *,
        name: str | None = None,
        num_experts: int | None = None,
        top_k: int | None = None,
        extract: Extract | None = None,
    ) -> None:
        """Record a custom MoE router/layer; `extract(module, inputs, output)` returns its top-k indices [tokens, k]."""
        inferred_e, inferred_k = _router_shape(module, None, None)
        num_experts = num_experts or inferred_e
        if num_experts is None or num_experts < 1:
            raise ValueError(f"watch({type(module).__name__}): pass num_experts=, it cannot be read from the module")
        if name is None:
            name = self._qualified_name(module) or f"{type(module).__name__}.{self._next_index}"
        for router in [r for r in self._routers if r.module is module]:
            self._remove(router)
        size = expert_size(module, int(num_experts))  # a whole MoE layer watched: its experts are inside
        self._add(module, name, int(num_experts), top_k or (inferred_k if extract is None else None), extract, size)

    def _qualified_name(self, module: nn.Module) -> str | None:
        for ref in self._roots:
            root = ref()
            if root is None:
                continue
            for qualified, candidate in root.named_modules():
                if candidate is module:
                    return qualified
        return None

    def _add(self, module: nn.Module, name: str, num_experts: int, top_k: int | None, extract: Extract | None,
             expert: tuple[int, int] | None = None) -> None:
        router = _Router(
            name=name, index=self._next_index, module=module, num_experts=num_experts,
            top_k=top_k, extract=extract, expert=expert,
        )
        router.guard = Guard(f"MoE router {name}", on_fail=lambda: self._unhook(router))  # its first error unhooks it
        self._next_index += 1
        hook = router.guard.wrap(lambda mod, inputs, output, r=router: self._on_forward(r, mod, inputs, output))
        router.handle = module.register_forward_hook(hook)
        self._routers.append(router)
        if top_k is not None:
            self._announce(router)

    def _announce(self, router: _Router) -> None:
        line = {
            "type": "router", "layer": router.name, "layer_index": router.index,
            "num_experts": router.num_experts, "top_k": router.top_k,
        }
        if router.expert is not None:
            line["expert_params"], line["expert_bytes"] = router.expert
        self._writer.write(line)
        router.announced = True

    @staticmethod
    def _unhook(router: _Router) -> None:
        if router.handle is not None:
            router.handle.remove()
            router.handle = None

    def _remove(self, router: _Router) -> None:
        self._unhook(router)
        self._routers.remove(router)

    # ------------------------------------------------------------------ phases
    def set_phase(self, phase: str | None) -> None:
        """Label the router calls that follow with `phase` ("train", "prefill", "decode", ...); None: automatic."""
        self._phase = phase

    @contextlib.contextmanager
    def phase(self, phase: str) -> Iterator[None]:
        """Label the router calls inside the with-block `phase`, then restore the previous label."""
        previous = self._phase
        self._phase = phase
        try:
            yield
        finally:
            self._phase = previous

    def _on_root_call(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._root_depth += 1
        if self._root_depth > 1:  # an attached root called inside another: the outer call decides
            return
        try:
            self._auto_phase = _call_phase(module, args, kwargs, self)
        except Exception:  # noqa: BLE001 - phase detection is a nicety, never a failure
            self._auto_phase = None

    def _on_root_return(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._root_depth = max(0, self._root_depth - 1)
        if self._root_depth == 0:
            self._auto_phase = None

    def _phase_of(self, module: nn.Module) -> str:
        if self._phase is not None:
            return self._phase
        if self._auto_phase is not None:
            return self._auto_phase
        return "train" if module.training else "forward"

    # ------------------------------------------------------------------ hot path
    def _generator(self, device: torch.device) -> torch.Generator:
        gen = self._generators.get(device)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(SAMPLE_SEED)
            self._generators[device] = gen
        return gen

    def _on_forward(self, router: _Router, module: nn.Module, inputs: tuple, output: Any) -> None:
        if self._closed or _in_backward():
            return  # activation checkpointing re-runs forwards inside backward: count each token once
        with torch.no_grad():
            if router.extract is not None:
                got = router.extract(module, inputs, output)
                indices, weights = got if isinstance(got, (tuple, list)) else (got, None)
            else:
                got = None
                if router.layout is not None:
                    got = _read_routing(output, router.layout, router.num_experts, router.top_k)
                if got is None:  # first call, or the output changed shape: find the routing again
                    router.layout = routing_layout(output, router.num_experts, router.top_k)
                    got = _read_routing(output, router.layout, router.num_experts, router.top_k)
                indices, weights = got  # type: ignore[misc]
            if indices.dim() != 2:
                indices = indices.reshape(-1, indices.shape[-1] if indices.dim() else 1)
            tokens, k = int(indices.shape[0]), int(indices.shape[1])
            if router.top_k is None:
                router.top_k = int(k)
            elif k != router.top_k:
                raise ValueError(f"router {router.name} returned top-{k}, announced top-{router.top_k}")
            phase = self._phase_of(module)
            buffers = router.phases.get(phase)
            if buffers is None:
                with torch.inference_mode(False):
                    e1 = router.num_experts + 1
                    buffers = _PhaseBuffers(
                        counts=torch.zeros(e1, dtype=torch.int64, device=indices.device),
                        weights=torch.zeros(e1, dtype=torch.float32, device=indices.device),
                        one=torch.ones(1, dtype=torch.int64, device=indices.device),
                    )
                router.phases[phase] = buffers
            # Keep references only; the arithmetic runs once per FOLD_CALLS calls / FOLD_ROWS rows
            # (decode makes many tiny calls: one set of kernels for many of them, not per call).
            buffers.pending.append((indices, weights.detach() if weights is not None else None))
            buffers.pending_rows += tokens
            buffers.tokens += tokens
            buffers.calls += 1
            if buffers.pending_rows >= FOLD_ROWS or len(buffers.pending) >= FOLD_CALLS:
                self._fold(router, buffers)

    def _fold(self, router: _Router, buffers: _PhaseBuffers) -> None:
        """Add the pending router outputs of `buffers` into its device counts (and token samples)."""
        if not buffers.pending:
            return
        e, device = router.num_experts, buffers.counts.device
        parts = [i for i, _ in buffers.pending]
        indices = parts[0] if len(parts) == 1 else torch.cat(parts)
        flat = indices.reshape(-1)
        if flat.dtype != torch.int64 or flat.device != device:
            flat = flat.to(device=device, dtype=torch.int64)
        # out-of-range ids (dropped tokens: -1, E, ...) land in bin E: clamp to [-1, E], then -1 -> E
        flat = flat.clamp(-1, e).remainder_(e + 1)
        buffers.counts.index_add_(0, flat, buffers.one.expand(flat.shape[0]))
        weights = [w for _, w in buffers.pending]
        if all(w is not None for w in weights):
            w = (weights[0] if len(weights) == 1 else torch.cat(weights)).reshape(-1)  # type: ignore[arg-type]
            if w.dtype != torch.float32 or w.device != device:
                w = w.to(device=device, dtype=torch.float32)
            buffers.weights.index_add_(0, flat, w)
            buffers.has_weights = True
        rows = buffers.pending_rows
        buffers.pending = []
        buffers.pending_rows = 0
        if self.sample_tokens and rows:
            self._sample(buffers, indices, rows)

    def _sample(self, buffers: _PhaseBuffers, indices: torch.Tensor, tokens: int) -> None:
        """Keep a random subset of one fold's rows on device (a reservoir over folds beyond the cap)."""
        n = min(self.sample_tokens, tokens)
        buffers.sample_calls += 1
        if len(buffers.samples) >= SAMPLE_CALLS_PER_STEP:
            slot = self._pick.randrange(buffers.sample_calls)
            if slot >= SAMPLE_CALLS_PER_STEP:
                return
        else:
            slot = -1
        if n < tokens:
            pick = torch.randperm(tokens, generator=self._generator(indices.device), device=indices.device)[:n]
            rows = indices.index_select(0, pick)
        else:
            rows = indices.clone()
        if slot < 0:
            buffers.samples.append((rows, tokens))
        else:
            buffers.samples[slot] = (rows, tokens)

    # ------------------------------------------------------------------ step boundary
    def step(self, step: int) -> None:
        """Write this step's counts (and sampled tokens) lines and reset the accumulators; one device sync."""
        self._step_guard.call(self._write_step, int(step))

    def _write_step(self, step: int) -> None:
        if self._closed:
            return
        self._last_step = step
        for router in self._routers:
            for b in router.phases.values():
                router.guard.call(self._fold, router, b)  # a router that fails here stops alone
        pending = [(r, phase, b) for r in self._routers if not r.guard.failed
                   for phase, b in r.phases.items() if b.tokens > 0]
        for router in self._routers:
            router.phases = {}
            if not router.announced and router.top_k is not None and not router.guard.failed:
                self._announce(router)
        if not pending:
            return
        # Pack everything into one float64 vector per device: a single transfer (and wait) each.
        by_device: dict[torch.device, list[torch.Tensor]] = {}
        for _, _, b in pending:
            parts = by_device.setdefault(b.counts.device, [])
            parts.append(b.counts.to(torch.float64))
            parts.append(b.weights.to(torch.float64))
            for rows, _ in b.samples:
                parts.append(rows.reshape(-1).to(device=b.counts.device, dtype=torch.float64))
        host = {dev: torch.cat(parts).cpu().tolist() for dev, parts in by_device.items()}
        offsets = dict.fromkeys(host, 0)
        for router, phase, b in pending:
            values = host[b.counts.device]
            at = offsets[b.counts.device]
            e1 = router.num_experts + 1
            counts = [int(v) for v in values[at:at + router.num_experts]]
            dropped = int(values[at + router.num_experts])
            weights = values[at + e1:at + e1 + router.num_experts]
            at += 2 * e1
            sampled: list[tuple[list[list[int]], int]] = []
            for rows, stood_for in b.samples:
                n, k = rows.shape
                flat = values[at:at + n * k]
                at += n * k
                sampled.append(([[int(x) for x in flat[i * k:(i + 1) * k]] for i in range(n)], stood_for))
            offsets[b.counts.device] = at
            line = {
                "type": "counts", "step": step, "phase": phase, "layer": router.name,
                "tokens": b.tokens, "calls": b.calls, "counts": counts,
            }
            if b.has_weights:
                line["weights"] = [round(w, _WEIGHT_DIGITS) for w in weights]
            if dropped:
                line["dropped"] = dropped
            self._writer.write(line)
            if sampled:
                self._writer.write({
                    "type": "tokens", "step": step, "phase": phase, "layer": router.name,
                    "experts": self._subsample(sampled),
                })

    def _subsample(self, sampled: list[tuple[list[list[int]], int]]) -> list[list[int]]:
        """At most sample_tokens rows, each call's rows weighted by how many tokens they stand for."""
        rows: list[list[int]] = []
        weights: list[float] = []
        for call_rows, stood_for in sampled:
            for row in call_rows:
                rows.append(row)
                weights.append(stood_for / len(call_rows))
        if len(rows) <= self.sample_tokens:
            return rows
        # Weighted sampling without replacement (Efraimidis–Spirakis keys), deterministic by seed.
        keys = [math.log(self._pick.random() or 1e-300) / w for w in weights]
        chosen = sorted(range(len(rows)), key=keys.__getitem__, reverse=True)[: self.sample_tokens]
        return [rows[i] for i in sorted(chosen)]

    def close(self) -> None:
        """Write what ran since the last step() as the next step, then remove every hook."""
        if not self._closed and any(b.tokens for r in self._routers for b in r.phases.values()):
            self.step(self._last_step + 1)
        self._closed = True
        for router in self._routers:
            self._unhook(router)
        for handle in self._root_handles:
            handle.remove()
        self._root_handles.clear()
