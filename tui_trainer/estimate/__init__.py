"""VRAM budget: the pure estimator and the GPU probe. Imports neither torch nor textual."""

from tui_trainer.estimate.gpu import NO_GPU_MESSAGE, GpuInfo, GpuProbe, probe_gpus
from tui_trainer.estimate.vram import Estimate, PartEstimate, Suggestion, estimate

__all__ = ["NO_GPU_MESSAGE", "Estimate", "GpuInfo", "GpuProbe", "PartEstimate", "Suggestion", "estimate", "probe_gpus"]
