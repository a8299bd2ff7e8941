"""Colours that mean something: one colour per step phase, per bottleneck cause and per event kind.

Every page draws a phase, a cause or a kind in the colour this module gives it, so "backward" is the
same orange on the Overview's step bars, in the Timeline's phase lane and in a legend anywhere else.
Names the tables bring that are not listed (a user phase, a new cause) get a stable colour from
``EXTRA`` chosen by the name itself, never by the order of appearance.
"""

from __future__ import annotations

import zlib

__all__ = ["PHASE_COLOURS", "CAUSE_COLOURS", "KIND_COLOURS", "CATEGORY_COLOURS", "GPU_PART_COLOURS",
           "EXTRA", "phase_colour", "cause_colour", "category_colour", "colour_for"]

#: Step phases of training_loop (its PHASES), in the order they are stacked.
PHASE_COLOURS: dict[str, str] = {
    "data_loading": "#d62728",   # red: the GPU waits for input
    "forward": "#1f77b4",
    "loss": "#17becf",
    "backward": "#ff7f0e",
    "optimizer": "#2ca02c",
    "other": "#b0b0b0",
}
#: Kernel categories of analyzers.kernels (CATEGORIES); a ``gpu_compute:<category>`` cause shares them.
CATEGORY_COLOURS: dict[str, str] = {
    "gemm/conv": "#2ca02c",
    "attention": "#98df8a",
    "elementwise": "#bcbd22",
    "reduction/norm": "#dbdb8d",
    "communication": "#9467bd",
    "memcpy/memset": "#ff7f0e",
    "other": "#7f7f7f",
}
#: Bottleneck causes (the bottleneck analyzer's documented ids, without the category suffix).
CAUSE_COLOURS: dict[str, str] = {
    "data_loading": PHASE_COLOURS["data_loading"],
    "blocking_copy": "#e377c2",
    "device_sync": "#8c564b",
    "launch_bound": "#ffbb78",
    "exposed_communication": "#9467bd",
    "gpu_compute": "#2ca02c",
    "cpu_compute": "#1f77b4",
    "optimizer_dispatch": "#aec7e8",
    "other_host": "#c7c7c7",
}
#: Event kinds on the Timeline (the loader's normalised ``kind``; "step" for ProfilerStep annotations).
KIND_COLOURS: dict[str, str] = {
    "step": "#7f7f7f", "phase": "#17becf", "module": "#bcbd22", "annotation": "#c5b0d5",
    "cpu_op": "#1f77b4", "runtime": "#aec7e8", "driver": "#c5b0d5", "cuda_sync": "#d62728",
    "kernel": "#2ca02c", "memcpy": "#ff7f0e", "memset": "#8c564b",
}
#: Parts of gpu_time's breakdown (summary key prefix -> colour).
GPU_PART_COLOURS: dict[str, str] = {
    "compute": CATEGORY_COLOURS["gemm/conv"], "communication": CATEGORY_COLOURS["communication"],
    "memcpy": CATEGORY_COLOURS["memcpy/memset"], "memset": "#8c564b",
    "idle_host_wait": "#d62728", "idle_kernel_wait": "#ff9896", "idle_other": "#c7c7c7",
}
#: Colours for names none of the maps list (picked by a hash of the name, so stable across pages).
EXTRA: tuple[str, ...] = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d",
                          "#31a354", "#756bb1", "#636363", "#9c9ede", "#cedb9c", "#e7ba52", "#e7969c")


def colour_for(name: object) -> str:
    """A stable colour for a name no palette lists (same name, same colour, on every page)."""
    return EXTRA[zlib.crc32(str(name).encode()) % len(EXTRA)]


def phase_colour(phase: object) -> str:
    """Colour of a step phase (a user phase gets a stable extra colour)."""
    return PHASE_COLOURS.get(str(phase), colour_for(phase))


def category_colour(category: object) -> str:
    """Colour of a kernel category."""
    return CATEGORY_COLOURS.get(str(category), colour_for(category))


def cause_colour(cause: object) -> str:
    """Colour of a bottleneck cause id (``gpu_compute:<category>``, ``cpu_compute:<category>``: the category's)."""
    text = str(cause)
    base, _, sub = text.partition(":")
    if base in ("gpu_compute", "cpu_compute") and sub:
        return category_colour(sub)
    return CAUSE_COLOURS.get(base, colour_for(text))
