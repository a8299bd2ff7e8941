"""Peak throughput of accelerators: dense FLOP/s per dtype, memory and interconnect bandwidth, TDP.

The numbers live in ``analyzers/hardware/data/device_specs.csv``, one row per product variant, each with
the vendor datasheet it comes from in the ``source`` column. All FLOP figures are *dense*: where a
datasheet quotes structured-sparsity figures (the starred numbers of A100/H100/H200/L4 sheets),
the table holds half of them. Units in the CSV are TFLOP/s, TOP/s, GB/s (10^9 bytes/s) and W;
``DeviceSpec`` holds SI units (FLOP/s, bytes/s, W).

Matching a trace's device name (``match_device``) normalises the name, finds the product family
(``v100``, ``a100``, ``h100``, ...), then picks the variant: the form factor named in the string
("PCIe", "NVL"; none → the family's default row, SXM for data-centre parts) and the memory size
named in the string ("80GB") or, failing that, the one closest to the device's total memory.
Generic ROCm names ("AMD Radeon Graphics") are matched by compute-unit count (``numSms`` in
Kineto's deviceProperties). AMD MI250/MI250X packages hold two GCDs, each a separate device to
PyTorch: a matched spec is per device, i.e. half of the package's figures.

For a CPU-only run the profiler measures an empirical roofline on the host and writes it into the
manifest as ``host_roofline`` (``profiler/host_roofline.py``: ``{"peak_flops": {"fp32": ...},
"mem_bandwidth_bytes_per_s": ..., "cpu_model": ...}``); ``spec_from_mapping`` reads it. Accepted
keys (SI units): ``peak_flops``/``peak_flops_per_s`` (a number: FP32, or a mapping dtype → FLOP/s),
``<dtype>_flops_per_s`` (``fp32_flops_per_s``, ...), ``mem_bandwidth_bytes_per_s`` (aliases
``mem_bw_bytes_per_s``, ``bandwidth_bytes_per_s``, ``triad_bytes_per_s``), optional ``name`` or
``cpu_model``. The same form is accepted
for a manifest device's ``peak`` mapping.
"""

from __future__ import annotations

import csv
import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from torchscope.analyzers.core.trace import GPU_WORK_KINDS

__all__ = [
    "DeviceSpec", "DTYPES", "SPECS_CSV", "all_specs", "spec_by_key", "match_device",
    "spec_from_mapping", "spec_for_trace", "torch_dtype_to_peak_dtype",
]

SPECS_CSV = Path(__file__).with_name("data") / "device_specs.csv"

#: Peak-throughput dtypes a spec may carry. ``fp32_matrix``: full-precision FP32 on matrix units
#: (AMD MFMA); ``tf32``: NVIDIA TF32 tensor cores (FP32 inputs rounded to 10-bit mantissa).
DTYPES = ("fp64", "fp32", "fp32_matrix", "tf32", "bf16", "fp16", "fp8", "int8")

#: When a device has no peak for a dtype, the next dtype whose peak is used instead.
_DTYPE_FALLBACK = {"fp8": "bf16", "bf16": "fp32", "fp16": "fp32", "tf32": "fp32",
                   "fp32_matrix": "fp32", "int8": "fp32", "fp64": "fp32"}

#: Family id → pattern searched in the normalised device name. Order matters: more specific first.
_FAMILY_PATTERNS: tuple[tuple[str, str], ...] = (
    ("mi300x", r"\bmi300x\b"),
    ("mi250x", r"\bmi250x\b"),
    ("mi250", r"\bmi250\b"),
    ("h200", r"\bh200\b"),
    ("h100", r"\bh100\b"),
    ("a100", r"\ba100\b"),
    ("a10g", r"\ba10g\b"),
    ("a10", r"\ba10\b"),
    ("v100", r"\bv100s?\b"),
    ("l4", r"\bl4\b"),
    ("rtx4090", r"\brtx 4090\b|\b4090\b"),
)

#: Generic ROCm device names carry no product: (computeMajor, numSms per device) → family.
_AMD_CU_COUNT = {(9, 104): "mi250", (9, 110): "mi250x", (9, 304): "mi300x"}

_GB = 1e9
_TERA = 1e12


@dataclass(frozen=True)
class DeviceSpec:
    """Peak throughput of one device (per device as PyTorch sees it), in SI units."""

    key: str
    name: str
    vendor: str
    peak_flops_per_s: Mapping[str, float]
    mem_bw_bytes_per_s: float
    memory_bytes: int = 0
    form_factor: str = ""
    interconnect: str = ""
    interconnect_bw_bytes_per_s: float = math.nan
    tdp_w: float = math.nan
    source: str = ""
    #: True when the numbers were measured on the host (CPU roofline), not read from a datasheet.
    measured: bool = False
    notes: str = ""
    extra: Mapping[str, object] = field(default_factory=dict)

    def resolve_dtype(self, dtype: str) -> str:
        """The dtype whose peak bounds ``dtype`` on this device (itself, or the slower fallback it has)."""
        seen = set()
        while dtype not in seen:
            seen.add(dtype)
            value = self.peak_flops_per_s.get(dtype)
            if value is not None and value > 0:
                return dtype
            dtype = _DTYPE_FALLBACK.get(dtype, "fp32")
        return "fp32"

    def peak(self, dtype: str) -> float:
        """Peak dense FLOP/s for ``dtype`` (one of ``DTYPES``), falling back to a slower dtype."""
        return float(self.peak_flops_per_s.get(self.resolve_dtype(dtype)) or math.nan)

    def ridge(self, dtype: str) -> float:
        """Arithmetic intensity (FLOP/byte) where the memory roof meets the ``dtype`` compute roof."""
        return self.peak(dtype) / self.mem_bw_bytes_per_s if self.mem_bw_bytes_per_s > 0 else math.nan

    def to_dict(self) -> dict:
        """Plain-JSON form (FLOP/s, bytes/s, W)."""
        return {
            "key": self.key, "name": self.name, "vendor": self.vendor,
            "peak_flops_per_s": dict(self.peak_flops_per_s),
            "mem_bw_bytes_per_s": self.mem_bw_bytes_per_s, "memory_bytes": self.memory_bytes,
            "form_factor": self.form_factor, "interconnect": self.interconnect,
            "interconnect_bw_bytes_per_s": self.interconnect_bw_bytes_per_s, "tdp_w": self.tdp_w,
            "source": self.source, "measured": self.measured, "notes": self.notes,
        }


def _num(text: str) -> float | None:
    text = (text or "").strip()
    return float(text) if text else None


def _row_to_spec(row: Mapping[str, str]) -> tuple[DeviceSpec, str, bool]:
    per_pkg = int(row.get("devices_per_package") or 1)
    peaks = {}
    for dtype in DTYPES:
        col = f"{dtype}_tops" if dtype == "int8" else f"{dtype}_tflops"
        value = _num(row.get(col, ""))
        if value is not None:
            peaks[dtype] = value * _TERA / per_pkg
    bw = (_num(row["mem_bw_gbs"]) or math.nan) * _GB / per_pkg
    link = _num(row.get("interconnect_bw_gbs", ""))
    tdp = _num(row.get("tdp_w", ""))
    name = row["name"] + (f" (one of {per_pkg} GCDs)" if per_pkg > 1 else "")
    spec = DeviceSpec(
        key=row["key"], name=name, vendor=row["vendor"], peak_flops_per_s=peaks,
        mem_bw_bytes_per_s=bw, memory_bytes=int(float(row["memory_gb"]) * _GB / per_pkg),
        form_factor=row["form_factor"], interconnect=row["interconnect"],
        interconnect_bw_bytes_per_s=(link * _GB / per_pkg) if link is not None else math.nan,
        tdp_w=(tdp / per_pkg) if tdp is not None else math.nan,
        source=row["source"], notes=row.get("notes", ""),
    )
    return spec, row["family"], row.get("default_variant", "0").strip() == "1"


@functools.lru_cache(maxsize=4)
def _table(path: str = str(SPECS_CSV)) -> tuple[tuple[DeviceSpec, str, bool], ...]:
    with open(path, newline="", encoding="utf-8") as fh:
        return tuple(_row_to_spec(row) for row in csv.DictReader(fh))


def all_specs() -> tuple[DeviceSpec, ...]:
    """Every device in the datasheet table (per-device figures)."""
    return tuple(spec for spec, _, _ in _table())


def spec_by_key(key: str) -> DeviceSpec:
    """The spec with table key ``key`` (e.g. "a100-sxm4-40gb"); KeyError otherwise."""
    for spec in all_specs():
        if spec.key == key:
            return spec
    raise KeyError(f"no device spec {key!r}; known: {[s.key for s in all_specs()]}")


def _normalise(name: str) -> str:
    text = name.lower().replace("-", " ").replace("_", " ").replace("/", " ")
    text = re.sub(r"(\d)\s*gb\b", r"\1gb", text)
    return re.sub(r"\s+", " ", text).strip()


def _family_of(norm: str) -> str | None:
    for family, pattern in _FAMILY_PATTERNS:
        if re.search(pattern, norm):
            return family
    return None


def _form_factor_of(norm: str) -> str | None:
    if re.search(r"\bpcie\b", norm):
        return "pcie"
    if re.search(r"\bnvl\b", norm):
        return "nvl"
    if re.search(r"\bsxm\d?\b", norm) or re.search(r"\bhgx\b", norm):
        return "sxm"
    return None


def match_device(
    name: str | None,
    *,
    total_memory_bytes: int | None = None,
    num_sms: int | None = None,
    compute_major: int | None = None,
) -> DeviceSpec | None:
    """The datasheet spec for a device name as traces spell it ("NVIDIA A100-PG509-200"), or None."""
    norm = _normalise(name or "")
    family = _family_of(norm)
    if family is None and num_sms is not None:
        family = _AMD_CU_COUNT.get((compute_major if compute_major is not None else 9, int(num_sms)))
    if family is None:
        return None
    candidates = [(spec, default) for spec, fam, default in _table() if fam == family]
    form = _form_factor_of(norm)
    if form is not None and any(spec.form_factor == form for spec, _ in candidates):
        candidates = [(s, d) for s, d in candidates if s.form_factor == form]
    elif form is None:
        defaults_form = {s.form_factor for s, d in candidates if d}
        candidates = [(s, d) for s, d in candidates if s.form_factor in defaults_form] or candidates
    mem = re.search(r"\b(\d+)gb\b", norm)
    if mem is not None:
        wanted = float(mem.group(1)) * _GB
        # Names state the package memory (MI250X 128GB) or the device's; compare with both.
        def distance(spec: DeviceSpec) -> float:
            per_pkg = _package_devices(spec)
            return min(abs(spec.memory_bytes - wanted), abs(spec.memory_bytes * per_pkg - wanted))
    elif total_memory_bytes:
        wanted = float(total_memory_bytes)
        # The usable memory a driver reports is a little below the marketing size: closest wins.
        def distance(spec: DeviceSpec) -> float:
            return abs(spec.memory_bytes - wanted)
    else:
        return next((s for s, d in candidates if d), candidates[0][0])
    return min(candidates, key=lambda sd: (distance(sd[0]), not sd[1]))[0]


def _package_devices(spec: DeviceSpec) -> int:
    return 2 if "GCDs)" in spec.name else 1


def _flops_mapping(data: Mapping) -> dict[str, float]:
    peaks: dict[str, float] = {}
    raw = data.get("peak_flops_per_s", data.get("peak_flops"))
    if isinstance(raw, Mapping):
        for k, v in raw.items():
            if isinstance(v, (int, float)) and v > 0:
                peaks[str(k).lower()] = float(v)
    elif isinstance(raw, (int, float)) and raw > 0:
        peaks["fp32"] = float(raw)
    for dtype in DTYPES:
        v = data.get(f"{dtype}_flops_per_s")
        if isinstance(v, (int, float)) and v > 0:
            peaks[dtype] = float(v)
    for alias in ("matmul_flops_per_s", "flops_per_s"):
        v = data.get(alias)
        if "fp32" not in peaks and isinstance(v, (int, float)) and v > 0:
            peaks["fp32"] = float(v)
    return peaks


def spec_from_mapping(data: Mapping | None, *, default_name: str = "host CPU",
                      measured: bool = True) -> DeviceSpec | None:
    """A spec from a manifest mapping (``host_roofline`` or a device's ``peak``); None if unusable."""
    if not isinstance(data, Mapping):
        return None
    peaks = _flops_mapping(data)
    bw = None
    for key in ("mem_bw_bytes_per_s", "mem_bandwidth_bytes_per_s", "bandwidth_bytes_per_s", "triad_bytes_per_s",
                "memory_bandwidth_bytes_per_s"):
        v = data.get(key)
        if isinstance(v, (int, float)) and v > 0:
            bw = float(v)
            break
    if not peaks or bw is None:
        return None
    return DeviceSpec(
        key="host" if measured else "manifest",
        name=str(data.get("name") or data.get("cpu_model") or default_name),
        vendor=str(data.get("vendor") or ""), peak_flops_per_s=peaks, mem_bw_bytes_per_s=bw,
        source="measured on the host by the torchscope profiler (manifest host_roofline)" if measured
        else "manifest device peak", measured=measured,
        extra={k: v for k, v in data.items() if isinstance(v, (int, float, str))},
    )


def spec_for_trace(trace) -> DeviceSpec | None:
    """The roofline of the device a trace ran on: its GPU's datasheet spec, or the host's measured one."""
    meta = trace.meta
    # Whether the trace holds GPU work, without selecting it (this is asked twice per analysis).
    has_gpu = bool(meta.device_properties) or bool(trace.events["kind"].isin(GPU_WORK_KINDS).any())
    manifest = meta.manifest or {}
    if has_gpu:
        props = next((p for p in meta.device_properties if p.get("name")), None)
        if props is not None:
            spec = match_device(
                str(props.get("name")), total_memory_bytes=props.get("totalGlobalMem"),
                num_sms=props.get("numSms"), compute_major=props.get("computeMajor"),
            )
            if spec is not None:
                return spec
        for dev in manifest.get("devices") or ():
            if not isinstance(dev, Mapping):
                continue
            spec = match_device(dev.get("name"), total_memory_bytes=dev.get("total_memory_bytes"))
            if spec is None:
                spec = spec_from_mapping(dev.get("peak"), default_name=str(dev.get("name") or "GPU"),
                                         measured=False)
            if spec is not None:
                return spec
        return None
    return spec_from_mapping(manifest.get("host_roofline"))


#: PyTorch's recorded "Input type" strings → peak dtype.
_TORCH_DTYPES = {
    "float": "fp32", "double": "fp64", "c10::half": "fp16", "c10::bfloat16": "bf16",
    "c10::float8_e4m3fn": "fp8", "c10::float8_e5m2": "fp8", "c10::float8_e4m3fnuz": "fp8",
    "c10::float8_e5m2fnuz": "fp8", "signed char": "int8", "unsigned char": "int8",
    "c10::complex<float>": "fp32", "c10::complex<double>": "fp64",
}


def torch_dtype_to_peak_dtype(type_name: str | None) -> str | None:
    """Peak dtype ("fp32", "bf16", ...) for a recorded PyTorch type string ("c10::BFloat16"), or None."""
    if not type_name:
        return None
    return _TORCH_DTYPES.get(str(type_name).strip().lower())
