"""GPU truth: real peak VRAM, host RAM and step time of our trainer on full-size random models, against our estimate.

    python benchmarks/gpu_check.py --dry-run            # anywhere: meta-device builds, the plan and our estimates
    python benchmarks/gpu_check.py                      # on a CUDA machine: the default checks, planned < 8 min on an H100
    options: --only NAMES (comma-separated) --steps N --budget SECONDS --jsonl PATH --docs PATH --table-from JSONL

Each check is a shipped preset plus a few overrides (CHECKS), trained for a few steps by our own trainer
(`TrainRecipe.setup` + `train`, no final save) in its own subprocess with a timeout. The models are the published
architectures (tui_trainer/models/architectures.py) with random weights, built on the GPU in the dtype each part is
loaded in (nf4 parts through the trainer's own loading.quantize_nf4): nothing is downloaded; only the trainer's file
loading (`loading._load_pipeline`) is replaced. Every finished run (trainer or bare loop) is appended to the JSON lines
file at once, so a cut-off keeps what finished; at the end the table goes into docs/benchmarks.md between the GPU check
markers (`--table-from` rebuilds it from a JSON lines file). A failure (OOM, timeout, missing package) is a row.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tui_trainer.atomic import atomic_write_text  # noqa: E402
from tui_trainer.config import TrainConfig, config_from_dict, preset_names, preset_text  # noqa: E402
from tui_trainer.config.enums import Family, WeightDtype  # noqa: E402
from tui_trainer.estimate import estimate  # noqa: E402
from tui_trainer.estimate.vram import largest_size  # noqa: E402
from tui_trainer.models import architectures as arch  # noqa: E402
from tui_trainer.models.families import spec_for_model  # noqa: E402
from tui_trainer.units import GIB  # noqa: E402

DEFAULT_STEPS = 6
WARMUP_STEPS = 2
"""Steps left out of the step time (kernel selection, optimizer state creation)."""
DEFAULT_BUDGET_S = 480
"""Issue 23: the default set runs in one command under 8 minutes on one H100."""
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION_BEGIN, SECTION_END = "<!-- gpu-check -->", "<!-- /gpu-check -->"
"""docs/benchmarks.md's GPU check section (benchmarks/run_all.py keeps it when it rewrites the file)."""
TABLE_BEGIN, TABLE_END = "<!-- gpu-check table -->", "<!-- /gpu-check table -->"
DEVICE = "cuda"
GOAL = (0.95, 1.10)
"""Issue 23: estimate / measured should fall in this range on every config."""
BARE_STARTUP_FRACTION = 0.6
"""The bare loop's start-up against the trainer's (no dataset, no caching, no run folder)."""


@dataclass(frozen=True)
class Check:
    """One measured config: a preset plus overrides (dotted keys), and its planned seconds on one H100.

    The planned seconds are guesses until a GPU run records each check's wall_s in the JSON lines file."""

    name: str
    family: str
    """The Family value the preset trains; a check whose family is not in the Family enum yet is pending."""
    preset: str
    overrides: dict[str, Any] = field(default_factory=dict)
    startup_s: float = 20
    """Process start, imports, random build, dataset, caching, optimizer (planned)."""
    step_s: float = 0.5
    bare: bool = False
    """Also time a bare hand-written loop of the same work (SD1.5 and SDXL LoRA rows)."""
    default: bool = True
    """In the default set (the rest run with --only)."""

    def planned_s(self, steps: int) -> float:
        """Planned wall seconds of the trainer run."""
        return self.startup_s + self.step_s * steps

    def bare_planned_s(self, steps: int) -> float:
        """Planned wall seconds of the bare loop (0 without one)."""
        return BARE_STARTUP_FRACTION * self.startup_s + self.step_s * steps if self.bare else 0.0

    def total_planned_s(self, steps: int) -> float:
        """Trainer run plus bare loop."""
        return self.planned_s(steps) + self.bare_planned_s(steps)


BS1 = {"training.batch_size": 1, "training.gradient_accumulation": 1}
NO_CHECKPOINTING = {"training.gradient_checkpointing": False}
CHECKS: tuple[Check, ...] = (
    Check("sd15-lora-512-bs4", "sd15", "sd15-lora", {"training.batch_size": 4}, 20, 0.35, bare=True),
    Check("sd15-finetune-512-bs1-adamw8bit", "sd15", "sd15-finetune", BS1, 20, 0.4),
    Check("sdxl-lora-1024-bs1-gc", "sdxl", "sdxl-lora", BS1, 28, 0.5, bare=True),
    Check("sdxl-lora-1024-bs1-nogc", "sdxl", "sdxl-lora", BS1 | NO_CHECKPOINTING, 28, 0.35, bare=True),
    Check("sdxl-finetune-adafactor-1024-bs1", "sdxl", "sdxl-finetune", BS1, 28, 1.0),
    Check("sd15-embedding-512-bs4", "sd15", "sd15-embedding", {}, 20, 0.3),
    Check("pixart-alpha-lora-1024-bs2", "pixart_alpha", "pixart-alpha-lora", {}, 32, 0.6),
    Check("cascade-lora-1024-bs2", "stable_cascade", "cascade-lora", {}, 32, 0.8),
    Check("flux1-dev-lora-nf4-1024", "flux1_dev", "flux1-dev-lora",
          BS1 | {"parts.denoiser.dtype": "nf4", "training.resolution": "1024"}, 45, 3.0),
    Check("flux1-dev-lora-fp8-1024", "flux1_dev", "flux1-dev-lora",
          BS1 | {"parts.denoiser.dtype": "float8", "training.resolution": "1024"}, 45, 2.5),
    Check("chroma-lora-1024", "chroma", "chroma-lora", BS1 | {"training.resolution": "1024"}, 40, 2.5),
    Check("flux1-dev-lora-nf4-512", "flux1_dev", "flux1-dev-lora",
          BS1 | {"parts.denoiser.dtype": "nf4", "training.resolution": "512"}, 45, 1.5, default=False),
    Check("z-image-lora-1024", "z_image", "z-image-lora", BS1 | {"training.resolution": "1024"}, 40, 2.0, default=False),
    Check("qwen-image-lora-nf4-1024", "qwen_image", "qwen-image-lora", BS1 | {"training.resolution": "1024"}, 60, 5.0,
          default=False),
    Check("flux1-dev-lora-offload-bf16-1024", "flux1_dev", "flux1-dev-lora",
          BS1 | {"parts.denoiser.dtype": "bfloat16", "training.resolution": "1024", "flow.offload.enabled": True,
                 "flow.offload.use_stream": True}, 75, 5.0, default=False),
    Check("flux1-dev-lora-bf16-1024", "flux1_dev", "flux1-dev-lora",
          BS1 | {"parts.denoiser.dtype": "bfloat16", "training.resolution": "1024"}, 60, 2.5, default=False),
)
"""The issue's configs, most wanted first (the budget skips from the end). A row whose family, preset or full-size
builder is not in the code yet is listed as pending and becomes a check once all three exist. The two bf16 FLUX.1 rows
(run them together with --only) give block offload's VRAM saving and its cost in step time."""
CHECKS_BY_NAME = {check.name: check for check in CHECKS}

RUN_OVERRIDES: dict[str, Any] = {
    "training.epochs": 1, "training.tensorboard": False, "training.dataloader_workers": 0,
    "sampling.every": 0, "sampling.before_training": False, "backup.every": 0, "save.every": 0,
}
"""Applied to every check: exactly `steps` steps, no samples, no backups, no periodic saves, no TensorBoard."""


# --- configs and estimates (no torch) ----------------------------------------------------------------------------


def set_dotted(document: dict[str, Any], key: str, value: Any) -> None:
    """document[a][b] = value for key 'a.b' (tables created as needed)."""
    *tables, last = key.split(".")
    for table in tables:
        document = document.setdefault(table, {})
    document[last] = value


def pending_reason(check: Check) -> str | None:
    """Why a check cannot run in this code yet (its family, preset or full-size builder is missing); None when it can."""
    if check.family not in {member.value for member in Family}:
        return f"family {check.family} is not in the Family enum yet"
    if check.preset not in preset_names():
        return f"no preset {check.preset} yet"
    missing = set(spec_for_model(Family(check.family)).parts) - set(PART_BUILDERS.get(check.family, {}))
    if missing or check.family not in PIPELINES:
        return f"no full-size builder for {check.family} {', '.join(sorted(missing)) or 'pipeline'} in gpu_check.py yet"
    return None


def check_config(check: Check, steps: int = DEFAULT_STEPS, workdir: Path = Path("gpu-check")) -> TrainConfig:
    """The check's config: its preset, its overrides, `steps` steps, workspace and dataset under `workdir`."""
    document = tomllib.loads(preset_text(check.preset))
    for key, value in {**RUN_OVERRIDES, **check.overrides}.items():
        set_dotted(document, key, value)
    set_dotted(document, "training.max_steps", steps)
    set_dotted(document, "workspace.dir", str(workdir / "workspace"))
    set_dotted(document, "workspace.run_name", check.name)
    document["concepts"] = [{"name": "synthetic", "path": str(workdir / "data")}]
    if "effnet_encoder" in document.get("model", {}):
        document["model"]["effnet_encoder"] = str(workdir / "effnet_encoder.safetensors")
    return config_from_dict(document, f"gpu check {check.name}")


def dataset_images(config: TrainConfig, steps: int) -> tuple[int, int, int]:
    """(width, height, count) of a synthetic dataset that gives exactly `steps` steps of one epoch."""
    width, height = largest_size(config.training.resolution)
    return width, height, config.training.batch_size * config.training.gradient_accumulation * steps


def phase_bytes(phase: Any) -> dict[str, int]:
    """One estimated phase (the estimator's PhaseMemory) as {"vram_bytes", "ram_bytes"}."""
    return {"vram_bytes": phase.vram_bytes, "ram_bytes": phase.ram_bytes}


def estimate_row(config: TrainConfig) -> dict[str, Any]:
    """Our estimate for a config: total VRAM, peak phase, every phase (VRAM and host RAM), the training-step breakdown."""
    result = estimate(config)
    phases = {name: phase_bytes(value) for name, value in result.phases.items()}
    return {"total_bytes": result.total_bytes, "peak_phase": result.peak_phase, "phases": phases,
            "ram_bytes": result.ram_bytes, "breakdown": dict(result.breakdown),
            "parts": {name: part.params for name, part in result.parts.items()},
            "offload": None if result.offload is None else dataclasses.asdict(result.offload)}


# --- full-size random models (meta device for the dry run, CUDA for the check) -----------------------------------


@functools.cache
def tokenizers() -> dict[str, Any]:
    """Offline tokenizers whose ids fit the real vocabularies: CLIP byte-level and T5 per-character."""
    from tui_trainer.devkit.tiny_families import QWEN_CHAT_TEMPLATE, QWEN_TEMPLATE_WORDS, tiny_qwen_tokenizer, tiny_t5_tokenizer
    from tui_trainer.devkit.tiny_models import tiny_tokenizer

    return {"clip": tiny_tokenizer(), "t5": tiny_t5_tokenizer(), "qwen": tiny_qwen_tokenizer(chat_template=QWEN_CHAT_TEMPLATE),
            "qwen_vl": tiny_qwen_tokenizer(QWEN_TEMPLATE_WORDS)}


def _clip(settings: dict[str, Any], projection: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    vocab = len(tokenizers()["clip"])
    config = CLIPTextConfig(**settings, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _diffusers(name: str, settings: dict[str, Any]) -> Any:
    import diffusers

    return getattr(diffusers, name)(**settings)


def _t5() -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(**arch.T5_V1_1_XXL))


def _qwen3() -> Any:
    from transformers import Qwen3Config, Qwen3Model

    return Qwen3Model(Qwen3Config(**arch.QWEN3_4B))


def _qwen2_5_vl() -> Any:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**arch.QWEN2_5_VL_7B))


def _effnet() -> Any:
    from tui_trainer.train.effnet import EfficientNetEncoder

    return EfficientNetEncoder()


def _scheduler(name: str, settings: Callable[[], dict[str, Any]]) -> Callable[[], Any]:
    return lambda: _diffusers(name, settings())


def _sd_betas() -> dict[str, Any]:
    from tui_trainer.devkit.tiny_models import SD_BETAS

    return {**SD_BETAS, "clip_sample": False, "steps_offset": 1}


def _pixart_betas() -> dict[str, Any]:
    from tui_trainer.devkit.tiny_families import PIXART_BETAS

    return dict(PIXART_BETAS)


SD_VAE = lambda: _diffusers("AutoencoderKL", arch.SD_VAE)  # noqa: E731
SDXL_VAE = lambda: _diffusers("AutoencoderKL", {**arch.SD_VAE, "scaling_factor": 0.13025, "sample_size": 1024})  # noqa: E731
FLUX_VAE = lambda: _diffusers("AutoencoderKL", arch.FLUX_VAE)  # noqa: E731
PART_BUILDERS: dict[str, dict[str, Callable[[], Any]]] = {
    "sd15": {"unet": lambda: _diffusers("UNet2DConditionModel", arch.SD15_UNET), "text_encoder": lambda: _clip(arch.CLIP_L),
             "vae": SD_VAE},
    "sdxl": {"unet": lambda: _diffusers("UNet2DConditionModel", arch.SDXL_UNET), "text_encoder": lambda: _clip(arch.CLIP_L),
             "text_encoder_2": lambda: _clip(arch.OPEN_CLIP_BIG_G, True), "vae": SDXL_VAE},
    "pixart_alpha": {"transformer": lambda: _diffusers("PixArtTransformer2DModel", arch.PIXART_ALPHA_1024),
                     "text_encoder": _t5, "vae": SD_VAE},
    "stable_cascade": {"prior": lambda: _diffusers("StableCascadeUNet", arch.STABLE_CASCADE_C),
                       "text_encoder": lambda: _clip(arch.OPEN_CLIP_BIG_G, True), "effnet": _effnet},
    "flux1_dev": {"transformer": lambda: _diffusers("FluxTransformer2DModel", arch.FLUX1_DEV),
                  "text_encoder": lambda: _clip(arch.CLIP_L), "text_encoder_2": _t5, "vae": FLUX_VAE},
    "chroma": {"transformer": lambda: _diffusers("ChromaTransformer2DModel", arch.CHROMA1), "text_encoder": _t5,
               "vae": FLUX_VAE},
    "z_image": {"transformer": lambda: _diffusers("ZImageTransformer2DModel", arch.Z_IMAGE_TURBO), "text_encoder": _qwen3,
                "vae": FLUX_VAE},
    "qwen_image": {"transformer": lambda: _diffusers("QwenImageTransformer2DModel", arch.QWEN_IMAGE),
                   "text_encoder": _qwen2_5_vl, "vae": lambda: _diffusers("AutoencoderKLQwenImage", arch.QWEN_IMAGE_VAE)},
}
"""Every part of each family at full size, by Family value and the family registry's part name (random weights).
The flow families' architecture constants are read when a part is built, so the table stands before they land."""


@dataclass(frozen=True)
class PipelineRecipe:
    """How a family's parts become its diffusers pipeline."""

    pipeline: str
    scheduler: Callable[[], Any]
    tokenizers: dict[str, str]
    """Pipeline tokenizer argument -> tokenizers() kind."""
    extras: dict[str, Any] = field(default_factory=dict)
    own_file_parts: frozenset[str] = frozenset()
    """Parts the trainer loads from their own file, not from the pipeline (Stable Cascade's EfficientNet encoder)."""


PIPELINES: dict[str, PipelineRecipe] = {
    "sd15": PipelineRecipe("StableDiffusionPipeline", _scheduler("DDPMScheduler", _sd_betas), {"tokenizer": "clip"},
                           {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}),
    "sdxl": PipelineRecipe("StableDiffusionXLPipeline", _scheduler("DDPMScheduler", _sd_betas),
                           {"tokenizer": "clip", "tokenizer_2": "clip"}),
    "pixart_alpha": PipelineRecipe("PixArtAlphaPipeline", _scheduler("DPMSolverMultistepScheduler", _pixart_betas),
                                   {"tokenizer": "t5"}),
    "stable_cascade": PipelineRecipe("StableCascadePriorPipeline", _scheduler("DDPMWuerstchenScheduler", dict),
                                     {"tokenizer": "clip"}, own_file_parts=frozenset({"effnet"})),
    "flux1_dev": PipelineRecipe("FluxPipeline", _scheduler("FlowMatchEulerDiscreteScheduler", lambda: arch.FLUX_FLOW_SCHEDULER),
                                {"tokenizer": "clip", "tokenizer_2": "t5"}),
    "chroma": PipelineRecipe("ChromaPipeline", _scheduler("FlowMatchEulerDiscreteScheduler", lambda: arch.FLUX_FLOW_SCHEDULER),
                             {"tokenizer": "t5"}),
    "z_image": PipelineRecipe("ZImagePipeline", _scheduler("FlowMatchEulerDiscreteScheduler", lambda: arch.Z_IMAGE_TURBO_SCHEDULER),
                              {"tokenizer": "qwen"}),
    "qwen_image": PipelineRecipe("QwenImagePipeline", _scheduler("FlowMatchEulerDiscreteScheduler", lambda: arch.QWEN_IMAGE_SCHEDULER),
                                 {"tokenizer": "qwen_vl"}),
}
"""diffusers pipeline class, scheduler, tokenizers and extra arguments by Family value."""


def keep_fp32_modules(module: Any, dtype: Any) -> None:
    """Upcast the submodules a transformers model keeps in float32 when loaded in `dtype`, as its from_pretrained does
    (`_keep_in_fp32_modules` under float16, `_keep_in_fp32_modules_strict` under float16 and bfloat16)."""
    import torch

    keep = set(getattr(module, "_keep_in_fp32_modules", None) or ()) if dtype == torch.float16 else set()
    if dtype in (torch.float16, torch.bfloat16):
        keep |= set(getattr(module, "_keep_in_fp32_modules_strict", None) or ())
    for name, submodule in module.named_modules():
        if keep & set(name.split(".")):
            submodule.float()


def build_parts(family: str, device: str, dtypes: dict[str, Any] | None = None, *, park: str | None = None,
                quantize: frozenset[str] = frozenset(), compute: Any = None, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Each part of `family` built on `device` (random init is fast there) in dtypes[name], one at a time; parts in
    `quantize` become nf4 and stay on `device`, the others move to `park` if given."""
    import torch

    from tui_trainer.train.loading import quantize_nf4

    parts = {}
    for index, (name, build) in enumerate(PART_BUILDERS[family].items()):
        if name in skip:
            continue
        torch.manual_seed(index)
        dtype = (dtypes or {}).get(name) or torch.float32
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                module = build()
        finally:
            torch.set_default_dtype(previous)
        keep_fp32_modules(module, dtype)
        if name in quantize:
            quantize_nf4(module, compute)
        elif park is not None:
            module.to(park)
        parts[name] = module.requires_grad_(False).eval()
    return parts


def build_pipeline(config: TrainConfig, compute: Any, park: str | None = "cpu") -> Any:
    """The config's pipeline at full size with random weights, each part in the dtype the loader would give it: built
    on the GPU and parked on the CPU, where diffusers' loader leaves a model (the trainer moves the parts itself);
    nf4 parts stay on the GPU, as bitsandbytes loading leaves them."""
    import diffusers

    from tui_trainer.train import loading

    family = config.model.family.value
    recipe = PIPELINES[family]
    weights = loading._part_dtypes(config)
    dtypes = {name: loading._load_dtype(weight, compute) for name, weight in weights.items()}
    nf4 = frozenset(name for name, weight in weights.items() if weight is WeightDtype.NF4)
    parts = build_parts(family, DEVICE, dtypes, park=park, quantize=nf4, compute=compute, skip=recipe.own_file_parts)
    components = parts | {name: tokenizers()[kind] for name, kind in recipe.tokenizers.items()}
    return getattr(diffusers, recipe.pipeline)(**components, scheduler=recipe.scheduler(), **recipe.extras)


def meta_params(config: TrainConfig) -> dict[str, dict[str, Any]]:
    """Parameters of each part built on the meta device, beside the family registry's count."""
    from tui_trainer.train.counting import parameter_count

    spec = spec_for_model(config.model.family, config.model.base_model)
    parts = build_parts(config.model.family.value, "meta")
    return {name: {"built": parameter_count(module), "registry": spec.parts[name].params, "verified": spec.parts[name].verified}
            for name, module in parts.items()}


# --- measuring (worker processes) ------------------------------------------------------------------------------


class Meter:
    """Peak CUDA allocated / reserved (torch), device memory used (pynvml, polled every 10 ms) per named phase, and
    the process's peak RSS. Create it before CUDA starts in this process: the device's use then is the baseline."""

    def __init__(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        self.nvml = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.baseline = self._used()
        self.used_peak = self.baseline
        self.phases: dict[str, dict[str, int]] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._poll, daemon=True).start()

    def _used(self) -> int:
        return int(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used)

    def _poll(self) -> None:
        while not self._stop.wait(0.01):
            self.used_peak = max(self.used_peak, self._used())

    def reset(self) -> None:
        """Forget the peaks so far (after the random build, which a real load does not have)."""
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        self.used_peak = self._used()

    def close_phase(self, phase: str) -> None:
        """Record the peaks since the last reset under `phase` (the larger if seen before), then reset the peaks."""
        import torch

        torch.cuda.synchronize()
        self.used_peak = max(self.used_peak, self._used())
        peaks = {"allocated": torch.cuda.max_memory_allocated(), "reserved": torch.cuda.max_memory_reserved(),
                 "device_used": self.used_peak - self.baseline}
        previous = self.phases.get(phase, {})
        self.phases[phase] = {key: max(value, previous.get(key, 0)) for key, value in peaks.items()}
        torch.cuda.reset_peak_memory_stats()
        self.used_peak = self._used()

    def summary(self) -> dict[str, Any]:
        """Whole-run peaks (device used above the baseline), per-phase peaks and the host's peak RSS."""
        self._stop.set()
        totals = {key: max((phase[key] for phase in self.phases.values()), default=0)
                  for key in ("allocated", "reserved", "device_used")}
        return {"peak_allocated": totals["allocated"], "peak_reserved": totals["reserved"],
                "device_used_peak": totals["device_used"], "device_used_baseline": self.baseline, "phases": self.phases,
                "host_rss_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def environment() -> dict[str, Any]:
    """GPU name, torch and CUDA versions of this process."""
    import torch

    return {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version()}


def step_seconds(times: list[float]) -> float | None:
    """Median seconds per step after the warm-up steps (None with too few steps)."""
    intervals = [later - earlier for earlier, later in zip(times, times[1:])][WARMUP_STEPS - 1:]
    return statistics.median(intervals) if intervals else None


def prepare_workdir(config: TrainConfig, steps: int, workdir: Path) -> None:
    """The synthetic dataset, and the random full-size EfficientNet encoder file Stable Cascade's loader reads."""
    from tui_trainer.devkit.datasets import make_dataset

    make_dataset(workdir / "data", (dataset_images(config, steps),))
    if config.model.effnet_encoder:
        from tui_trainer.train.effnet import save_encoder

        save_encoder(_effnet(), config.model.effnet_encoder)


TRAINER_PHASES = {"loading": "loading", "caching": "caching", "training": "training_step"}
"""Run state -> the name the row gives its peaks (training_step as the estimator calls it)."""


def run_trainer(check: Check, steps: int, workdir: Path) -> dict[str, Any]:
    """Our trainer on the check's config: setup + `steps` steps; peaks per run state, seconds per step."""
    from unittest import mock

    from tui_trainer.config import dump_config
    from tui_trainer.runs.events import StepEvent, read_events
    from tui_trainer.runs.layout import create_run_dir
    from tui_trainer.train import loading
    from tui_trainer.train.entry import TrainRecipe
    from tui_trainer.train.monitor import RunMonitor

    config = check_config(check, steps, workdir)
    prepare_workdir(config, steps, workdir)
    meter = Meter()

    def random_pipeline(config: TrainConfig, config_path: Any, compute: Any) -> tuple[Any, str]:
        pipeline = build_pipeline(config, compute)
        meter.reset()
        return pipeline, "random weights (published architecture)"

    class PhaseMonitor(RunMonitor):
        """Closes a meter phase whenever the run state changes (loading, caching, training)."""

        state = "starting"

        def status(self, state: Any, **fields: Any) -> None:
            if str(state) != self.state:
                meter.close_phase(TRAINER_PHASES.get(self.state, self.state))
                self.state = str(state)
            super().status(state, **fields)

    run = create_run_dir(workdir / "workspace", check.name, dump_config(config))
    monitor = PhaseMonitor(run)
    recipe = TrainRecipe(config, None, run, monitor)
    started = time.perf_counter()
    try:
        with mock.patch.object(loading, "_load_pipeline", random_pipeline):
            recipe.setup()
            recipe.train()
        meter.close_phase(TRAINER_PHASES.get(monitor.state, monitor.state))
    finally:
        recipe.cleanup()
        monitor.close()
    times = [event.time for event in read_events(run.events_file) if isinstance(event, StepEvent)]
    offload = getattr(recipe, "offload", None)
    return {"steps_done": len(times), "s_per_step": step_seconds(times),
            "setup_train_s": round(time.perf_counter() - started, 1), **meter.summary(),
            "offloaded_groups": len(offload.groups) if offload is not None else 0}


def run_bare(check: Check, steps: int, workdir: Path) -> dict[str, Any]:
    """A hand-written LoRA loop of the same work: same model, adapters, optimizer, dtypes, batch and latent size;
    random latents stand for the cached ones, fixed random text states where the config caches them."""
    import peft
    import torch

    from tui_trainer.train.loading import compute_dtype, input_dtype

    config = check_config(check, steps, workdir)
    family, training, lora, parts = config.model.family.value, config.training, config.lora, config.parts
    compute = compute_dtype(config)
    meter = Meter()
    pipe = build_pipeline(config, compute, park=None)
    meter.reset()
    unet, device = pipe.unet, torch.device(DEVICE)
    targets = spec_for_model(config.model.family).lora_target_modules[lora.targets]
    unet.add_adapter(peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=list(targets["unet"])))
    trained = [unet]
    if parts.text_encoder.train:
        adapter = peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=list(targets["text_encoder"]))
        peft.inject_adapter_in_model(adapter, pipe.text_encoder)
        trained.append(pipe.text_encoder)
    params = [param for module in trained for param in module.parameters() if param.requires_grad]
    for param in params:
        param.data = param.data.float()
    for module in trained:
        module.train()
    if training.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if parts.text_encoder.train:
            pipe.text_encoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = BARE_OPTIMIZERS[config.optimizer.name.value](params, config.optimizer.learning_rate)
    scaler = torch.amp.GradScaler(DEVICE, enabled=compute == torch.float16)
    batch, (width, height) = training.batch_size, largest_size(training.resolution)
    latents = torch.randn(batch, 4, height // 8, width // 8, device=device)
    dtype = input_dtype(parts.denoiser.dtype, compute)
    text = BARE_TEXT[family](pipe, batch, (width, height), dtype)
    times = []
    for _ in range(steps):
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, 1000, (batch,), device=device)
        noisy = pipe.scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast(device.type, dtype=compute):
            prediction = unet(noisy.to(dtype), timesteps, **text(), return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(prediction.float(), noise)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, training.clip_grad_norm or float("inf"))
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        times.append(time.time())
    meter.close_phase("training_step")
    return {"steps_done": len(times), "s_per_step": step_seconds(times), **meter.summary()}


def _trained_clip_text(pipe: Any, batch: int, size: tuple[int, int], dtype: Any) -> Callable[[], dict[str, Any]]:
    """SD1.5 with its text encoder training: a text-encoder forward each step."""
    ids = pipe.tokenizer(["a photo of a synthetic shape"] * batch, padding="max_length", max_length=77, return_tensors="pt").input_ids
    ids = ids.to(pipe.unet.device)
    return lambda: {"encoder_hidden_states": pipe.text_encoder(ids)[0]}


def _cached_sdxl_text(pipe: Any, batch: int, size: tuple[int, int], dtype: Any) -> Callable[[], dict[str, Any]]:
    """SDXL with cached text-encoder outputs: fixed tensors of the UNet's conditioning shapes."""
    import torch

    config, (width, height) = pipe.unet.config, size
    pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
    make = functools.partial(torch.randn, device=pipe.unet.device, dtype=dtype)
    time_ids = torch.tensor([[height, width, 0, 0, height, width]] * batch, device=pipe.unet.device, dtype=dtype)
    text = {"encoder_hidden_states": make(batch, 77, config.cross_attention_dim),
            "added_cond_kwargs": {"text_embeds": make(batch, pooled), "time_ids": time_ids}}
    return lambda: text


BARE_TEXT = {"sd15": _trained_clip_text, "sdxl": _cached_sdxl_text}
"""The bare loop's per-step conditioning by family, as the LoRA checks' presets have it."""


def _adamw8bit(params: list, lr: float) -> Any:
    import bitsandbytes

    return bitsandbytes.optim.AdamW8bit(params, lr=lr)


def _adamw(params: list, lr: float) -> Any:
    import torch

    return torch.optim.AdamW(params, lr=lr)


BARE_OPTIMIZERS = {"adamw": _adamw, "adamw8bit": _adamw8bit}
"""The bare loop's optimizers by config name (the LoRA presets use these)."""
MODES: dict[str, Callable[[Check, int, Path], dict[str, Any]]] = {"train": run_trainer, "bare": run_bare}


def worker(name: str, mode: str, steps: int, result: Path) -> int:
    """Run one check in this process and write its result (or its error) as JSON."""
    check = CHECKS_BY_NAME[name]
    row: dict[str, Any] = {"name": name, "mode": mode}
    try:
        row |= environment()
        with tempfile.TemporaryDirectory(prefix=f"gpu-check-{name}-") as tmp:
            row |= MODES[mode](check, steps, Path(tmp))
        row["ok"] = True
    except BaseException as error:  # the row says what went wrong; the parent goes on with the next check
        import traceback

        traceback.print_exc()
        row |= {"ok": False, "error": f"{type(error).__name__}: {error}".splitlines()[0][:300]}
    atomic_write_text(result, json.dumps(row))
    return 0 if row["ok"] else 1


# --- the plan, the parent process, the report --------------------------------------------------------------------


def gib(value: float | None) -> str:
    """Bytes as GiB with two decimals ('-' for none)."""
    return "-" if value is None else f"{value / GIB:.2f}"


def append_row(path: Path | None, row: dict[str, Any]) -> None:
    """Append one JSON line and make it durable (a cut-off run keeps every finished row)."""
    if path is None:
        return
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def plan_lines(checks: list[Check], steps: int, budget: float) -> tuple[list[str], float]:
    """One line per check with its planned seconds and whether it fits the budget in order; the planned total."""
    lines, planned = [], 0.0
    for check in checks:
        why = pending_reason(check)
        if why:
            lines.append(f"  {check.name}: pending ({why})")
            continue
        seconds = check.total_planned_s(steps)
        fits = planned + seconds <= budget
        planned += seconds if fits else 0
        lines.append(f"  {check.name}: {seconds:.0f} s" + ("" if fits else " (would be skipped: over the budget)"))
    return lines, planned


def dry_run(checks: list[Check], steps: int, budget: float, jsonl: Path | None) -> int:
    """Print each check's config, our estimate and its meta-device parameter counts, then the plan; 1 when a
    verified registry count differs from the built architecture."""
    bad = 0
    for check in checks:
        why = pending_reason(check)
        if why:
            print(f"{check.name}: pending: {why}")
            append_row(jsonl, {"name": check.name, "mode": "dry-run", "pending": why})
            continue
        config = check_config(check, steps)
        row = estimate_row(config)
        width, height, images = dataset_images(config, steps)
        print(f"{check.name}: preset {check.preset} {json.dumps(check.overrides)}, {config.method.value}, "
              f"{width}x{height} batch {config.training.batch_size}, {steps} steps on {images} images, "
              f"planned {check.total_planned_s(steps):.0f} s" + (" (with bare loop)" if check.bare else ""))
        phases = ", ".join(f"{name} {gib(phase['vram_bytes'])}" + (f" (RAM {gib(phase['ram_bytes'])})" if phase["ram_bytes"] else "")
                           for name, phase in row["phases"].items())
        print(f"  estimate {gib(row['total_bytes'])} GiB ({row['total_bytes']} bytes, peak {row['peak_phase']}); phases {phases}")
        print("  training step: " + ", ".join(f"{key} {gib(value)}" for key, value in row["breakdown"].items()))
        params = meta_params(config)
        for name, count in params.items():
            same = count["built"] == count["registry"]
            bad += not same and count["verified"]
            verdict = "= registry" if same else f"!= registry {count['registry']:,}" + ("" if count["verified"] else " (unverified)")
            print(f"  params {name} {count['built']:,} {verdict}")
        append_row(jsonl, {"name": check.name, "mode": "dry-run", "preset": check.preset, "overrides": check.overrides,
                           "planned_s": check.total_planned_s(steps), "estimate": row, "params": params})
    lines, planned = plan_lines(checks, steps, budget)
    print(f"plan ({steps} steps per check, {budget:.0f} s budget, planned seconds are guesses until a GPU run):")
    print("\n".join(lines))
    print(f"planned {planned:.0f} s of {budget:.0f} s; the default set once every family lands: "
          f"{default_set_planned_s(steps):.0f} s")
    return 1 if bad else 0


def default_set_planned_s(steps: int = DEFAULT_STEPS) -> float:
    """Planned seconds of the whole default set, pending checks included (issue 23: under the 480 s budget)."""
    return sum(check.total_planned_s(steps) for check in CHECKS if check.default)


def run_worker(check: Check, mode: str, steps: int, timeout: float, logs: Path) -> dict[str, Any]:
    """One check in a subprocess (its own process group, killed at `timeout`); its result row, or why there is none."""
    result, log = logs / f"{check.name}-{mode}.json", logs / f"{check.name}-{mode}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", check.name, "--mode", mode, "--steps", str(steps),
               "--result", str(result)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    wall = round(time.perf_counter() - started, 1)
    tail = log.read_text(errors="replace").strip().splitlines()[-15:]
    if result.is_file():
        row = json.loads(result.read_text())
        return {**row, "wall_s": wall, **({} if row.get("ok") else {"log_tail": tail})}
    why = f"timed out after {timeout:.0f} s" if process.returncode == -signal.SIGKILL else f"exit {process.returncode}"
    return {"name": check.name, "mode": mode, "ok": False, "error": f"{why}: {(tail or [''])[-1][:300]}", "wall_s": wall,
            "log_tail": tail}


def measure(checks: list[Check], steps: int, budget: float, jsonl: Path, docs: Path | None) -> int:
    """Run every check that fits the budget, one subprocess per run; append each row to `jsonl`; write the table."""
    started, rows = time.perf_counter(), []
    logs = Path(tempfile.mkdtemp(prefix="gpu-check-logs-"))
    for check in checks:
        why = pending_reason(check)
        if why:
            rows.append({"name": check.name, "mode": "train", "ok": False, "skipped": f"pending: {why}"})
            continue
        estimated = estimate_row(check_config(check, steps))
        for mode, planned in (("train", check.planned_s(steps)), ("bare", check.bare_planned_s(steps))):
            if not planned:
                continue
            left = budget - (time.perf_counter() - started)
            if planned > left:
                row = {"name": check.name, "mode": mode, "ok": False, "skipped": f"planned {planned:.0f} s, {left:.0f} s left"}
            else:
                row = run_worker(check, mode, steps, min(left, max(60.0, 2.5 * planned)), logs)
                row |= {"preset": check.preset, "overrides": check.overrides, "steps": steps, "planned_s": planned}
                if mode == "train":
                    row["estimate"] = estimated
            print(f"{check.name} {mode}: {_summary(row)}", flush=True)
            rows.append(row)
            append_row(jsonl, row)
    if docs is not None:
        write_table(docs, rows, steps)
    print(f"rows in {jsonl}; worker logs in {logs}; {time.perf_counter() - started:.0f} s")
    return 0


def _summary(row: dict[str, Any]) -> str:
    if not row.get("ok"):
        return row.get("error") or row.get("skipped", "failed")
    return (f"peak allocated {gib(row['peak_allocated'])} GiB, reserved {gib(row['peak_reserved'])}, device used "
            f"{gib(row['device_used_peak'])}, host RSS {gib(row['host_rss_peak'])}, {row['s_per_step'] or 0:.3f} s/step, "
            f"{row['wall_s']} s")


def _ratio(top: float | None, bottom: float | None) -> str:
    return f"{top / bottom:.2f}" if top and bottom else "-"


def _in_goal(top: float | None, bottom: float | None) -> str:
    if not (top and bottom):
        return ""
    return "" if GOAL[0] <= top / bottom <= GOAL[1] else f"est / used outside {GOAL[0]}-{GOAL[1]}"


def _offload_note(est: dict[str, Any], train: dict[str, Any]) -> str:
    """Block offload rows: groups the trainer offloaded, and the estimate's copy time per step beside the step time."""
    offload = est.get("offload")
    if not offload:
        return ""
    return (f"offload: {train.get('offloaded_groups', 0)} groups, est {gib(offload['gpu_bytes'])} GiB of blocks on the GPU, "
            f"copies {gib(offload['bytes_per_step'])} GiB = {offload['seconds_per_step']:.2f} s/step at the assumed rate")


def table(rows: list[dict[str, Any]], steps: int) -> str:
    """The Markdown table of a GPU run: estimate / measured per check, with the machine it ran on."""
    ran = [row for row in rows if row.get("gpu")]
    machine = f"{ran[0]['gpu']}, torch {ran[0]['torch']}, CUDA {ran[0]['cuda']}" if ran else "no check ran"
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {machine}; {steps} steps per check, step time = median after "
        f"{WARMUP_STEPS}. Device used = nvidia-smi's used memory above the baseline before CUDA started, whole run "
        f"after the random build (CUDA context included, as in the estimate). Goal: estimate / device used in "
        f"{GOAL[0]}-{GOAL[1]}.", "",
        "| check | estimate GiB (peak phase) | allocated GiB | reserved GiB | device used GiB | est / used "
        "| step est / allocated | host RAM GiB (est) | s/step ours | s/step bare | ours / bare | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_name: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_name.setdefault(row["name"], {})[row.get("mode", "train")] = row
    for name, modes in by_name.items():
        train, bare = modes.get("train", {}), modes.get("bare", {})
        est = train.get("estimate")
        if not train.get("ok"):
            head = f"| {name} | {gib(est['total_bytes'])} ({est['peak_phase']}) |" if est else f"| {name} | - |"
            lines.append(head + " - |" * 10 + f" {train.get('error') or train.get('skipped', 'not run')} |")
            continue
        used = train["device_used_peak"]
        step_allocated = train["phases"].get("training_step", {}).get("allocated")
        bare_s = bare.get("s_per_step") if bare.get("ok") else None
        note = "; ".join(filter(None, [_in_goal(est["total_bytes"], used), bare.get("error") or bare.get("skipped"),
                                       _offload_note(est, train)]))
        lines.append(
            f"| {name} | {gib(est['total_bytes'])} ({est['peak_phase']}) | {gib(train['peak_allocated'])} "
            f"| {gib(train['peak_reserved'])} | {gib(used)} | {_ratio(est['total_bytes'], used)} "
            f"| {_ratio(est['phases']['training_step']['vram_bytes'], step_allocated)} "
            f"| {gib(train['host_rss_peak'])} ({gib(est.get('ram_bytes'))}) | {train['s_per_step'] or 0:.3f} "
            f"| {'-' if bare_s is None else f'{bare_s:.3f}'} | {_ratio(train['s_per_step'], bare_s)} | {note} |"
        )
    return "\n".join(lines)


def replace_table(text: str, body: str) -> str:
    """`text` with the GPU check table markers' content replaced by `body` (the section is added when missing)."""
    if TABLE_BEGIN not in text or TABLE_END not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION_BEGIN}\n## GPU check\n\n{TABLE_BEGIN}\n{TABLE_END}\n{SECTION_END}\n"
    head, rest = text.split(TABLE_BEGIN, 1)
    return f"{head}{TABLE_BEGIN}\n{body}\n{TABLE_END}{rest.split(TABLE_END, 1)[1]}"


def write_table(docs: Path, rows: list[dict[str, Any]], steps: int) -> None:
    """Replace the GPU check table of `docs` (the rest of the file is left as it is), atomically."""
    atomic_write_text(docs, replace_table(docs.read_text(encoding="utf-8"), table(rows, steps)))
    print(f"table written to {docs}")


def gpu_section(text: str) -> str:
    """The GPU check section of a docs/benchmarks.md text, markers included ('' when it has none)."""
    if SECTION_BEGIN not in text or SECTION_END not in text:
        return ""
    return SECTION_BEGIN + text.split(SECTION_BEGIN, 1)[1].split(SECTION_END, 1)[0] + SECTION_END + "\n"


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The measured rows of a JSON lines file (dry-run rows left out)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [row for row in rows if row.get("mode") != "dry-run"]


def gpu_present() -> bool:
    """Whether NVML sees a GPU (asked without starting CUDA in this process, which would hold memory on it)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:  # no driver, no library: no GPU
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated check names (default: the default set); all: {', '.join(CHECKS_BY_NAME)}")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"training steps per check (>= {WARMUP_STEPS + 2})")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for the whole run; checks that would not fit are skipped")
    parser.add_argument("--dry-run", action="store_true", help="no GPU: meta-device builds, the plan and our estimates")
    parser.add_argument("--jsonl", type=Path, help="append one JSON row per run here (default benchmarks/gpu_check.jsonl on a GPU)")
    parser.add_argument("--docs", type=Path, help=f"Markdown file whose GPU check table is replaced (default {DOCS.relative_to(ROOT)} on a GPU)")
    parser.add_argument("--table-from", type=Path, help="write the table of this JSON lines file's rows to --docs and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, default="train", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.mode, args.steps, args.result)
    if args.table_from:
        rows = read_rows(args.table_from)
        write_table(args.docs or DOCS, rows, max((row.get("steps", 0) for row in rows), default=args.steps))
        return 0
    names = args.only.split(",") if args.only else [check.name for check in CHECKS if check.default]
    unknown = [name for name in names if name not in CHECKS_BY_NAME]
    if unknown:
        parser.error(f"--only: unknown check {', '.join(unknown)}; allowed: {', '.join(CHECKS_BY_NAME)}")
    if args.steps < WARMUP_STEPS + 2:
        parser.error(f"--steps must be at least {WARMUP_STEPS + 2} (the first {WARMUP_STEPS} are not timed)")
    checks = [CHECKS_BY_NAME[name] for name in names]
    if args.dry_run:
        return dry_run(checks, args.steps, args.budget, args.jsonl)
    if not gpu_present():
        print("no CUDA GPU here; use --dry-run", file=sys.stderr)
        return 2
    return measure(checks, args.steps, args.budget, args.jsonl or ROOT / "benchmarks" / "gpu_check.jsonl", args.docs or DOCS)


if __name__ == "__main__":
    sys.exit(main())
