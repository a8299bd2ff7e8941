"""The CUDA caching allocator's allocated/reserved bytes per device, as a sample series."""

from __future__ import annotations

from typing import Any

__all__ = ["CudaMemorySampler", "cuda_memory_available"]


def cuda_memory_available() -> tuple[bool, str | None]:
    """Whether CUDA memory can be sampled here, and if not, why."""
    try:
        import torch  # noqa: PLC0415
    except Exception as exc:  # noqa: BLE001
        return False, f"torch not importable ({exc})"
    if not torch.cuda.is_available():
        return False, "unavailable (no CUDA device)"
    return True, None


class CudaMemorySampler:
    """Reads torch.cuda.memory_allocated/reserved for every visible device (no synchronisation)."""

    source = "cuda_mem"

    def __init__(self) -> None:
        import torch  # noqa: PLC0415

        self._cuda = torch.cuda
        self._count = torch.cuda.device_count()

    def sample(self, t_ns: int) -> list[dict[str, Any]]:
        """One line per device."""
        return [{"t_ns": t_ns, "source": self.source, "device": d,
                 "allocated_bytes": int(self._cuda.memory_allocated(d)),
                 "reserved_bytes": int(self._cuda.memory_reserved(d))} for d in range(self._count)]

    def close(self) -> None:
        """Nothing to release."""
