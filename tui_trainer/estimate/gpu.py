"""GPU probe: every NVIDIA GPU's memory and compute capability through pynvml, and system RAM; never raises."""

from __future__ import annotations

from dataclasses import dataclass, field

NO_GPU_MESSAGE = "no NVIDIA GPU detected"


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as NVML reports it."""

    index: int
    name: str
    total_bytes: int
    free_bytes: int
    used_bytes: int
    compute_capability: tuple[int, int]
    driver: str


@dataclass(frozen=True)
class GpuProbe:
    """What the probe found: GPUs (maybe none), system RAM, and a one-line summary."""

    gpus: list[GpuInfo] = field(default_factory=list)
    ram_total_bytes: int = 0
    ram_available_bytes: int = 0
    message: str = NO_GPU_MESSAGE


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _nvml_gpus() -> tuple[list[GpuInfo], str]:
    """GPUs through NVML, or ([], why not)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as error:  # no library, no driver, or no device: all mean "no GPU here"
        return [], f"{NO_GPU_MESSAGE} ({type(error).__name__}: {error})".replace(" ()", "")
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(GpuInfo(
                index=index,
                name=_text(pynvml.nvmlDeviceGetName(handle)),
                total_bytes=int(memory.total),
                free_bytes=int(memory.free),
                used_bytes=int(memory.used),
                compute_capability=tuple(int(v) for v in pynvml.nvmlDeviceGetCudaComputeCapability(handle)),
                driver=driver,
            ))
    except Exception as error:
        return [], f"{NO_GPU_MESSAGE} (NVML failed: {error})"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    if not gpus:
        return [], NO_GPU_MESSAGE
    summary = ", ".join(f"GPU {g.index}: {g.name} {g.total_bytes / 1024**3:.1f} GiB ({g.free_bytes / 1024**3:.1f} free)"
                        for g in gpus)
    return gpus, summary


def probe_gpus() -> GpuProbe:
    """Probe NVIDIA GPUs and system RAM; with no NVIDIA library or driver, an empty GPU list and a clear message."""
    gpus, message = _nvml_gpus()
    try:
        import psutil

        memory = psutil.virtual_memory()
        ram_total, ram_available = int(memory.total), int(memory.available)
    except Exception:
        ram_total = ram_available = 0
    return GpuProbe(gpus=gpus, ram_total_bytes=ram_total, ram_available_bytes=ram_available, message=message)
