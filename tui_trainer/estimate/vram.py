"""Pure memory estimator: config (+ GPU) -> VRAM bytes per category and part, VRAM and host RAM per phase, suggestions.

Fast (well under 1 ms) so the TUI can recompute on every keystroke: the config is read once into a flat
`Plan`, and every suggestion is the same arithmetic on a changed Plan. The model behind the numbers and
its calibration points are in docs/vram.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tui_trainer.config.enums import (
    AttentionBackend,
    ConceptType,
    LoraTargets,
    LoraType,
    Method,
    OptimizerName,
    TrainDtype,
    WeightDtype,
)
from tui_trainer.config.io import is_single_file
from tui_trainer.config.schema import TrainConfig, parse_resolution
from tui_trainer.estimate.gpu import GpuInfo
from tui_trainer.models.families import (
    BNB_MIN_8BIT_NUMEL, BlockStack, FamilySpec, PartRole, PartSpec, TensorShape, frees_text_encoders, spec_for_model,
)
from tui_trainer.units import GIB

BREAKDOWN_KEYS = ("weights", "trainable", "gradients", "optimizer", "activations", "caches", "overhead")

WEIGHT_BYTES: dict[WeightDtype, float] = {
    WeightDtype.FLOAT32: 4.0,
    WeightDtype.FLOAT16: 2.0,
    WeightDtype.BFLOAT16: 2.0,
    WeightDtype.FLOAT8: 1.0,
    WeightDtype.NF4: 0.5 + 4 / 64,
}
"""Bytes per stored weight; nf4 adds bitsandbytes' float32 absmax per 64-weight block."""
LINEAR_ONLY_DTYPES = {WeightDtype.NF4}
"""Dtypes bitsandbytes applies to nn.Linear weights only; the part's other weights stay 16-bit. (float8 is
diffusers' layerwise casting, which stores Linear and Conv weights alike, so it counts for the whole part.)"""
COMPUTE_BYTES: dict[TrainDtype, int] = {TrainDtype.FLOAT32: 4, TrainDtype.TF32: 4, TrainDtype.FLOAT16: 2, TrainDtype.BFLOAT16: 2}
"""Bytes per activation element."""
ADAPTER_BYTES = 4
"""Adapters and embedding vectors train in float32 (the trainer upcasts them)."""

CUDA_CONTEXT_BYTES = 512 * 1024**2
"""CUDA context, cuBLAS/cuDNN handles and workspaces (assumption, see docs/vram.md)."""
ALLOCATOR_SLACK = 0.10
"""Caching-allocator fragmentation, as a fraction of the memory allocated and freed every step."""
TE_ACTIVATION_ELEMENTS = 1.4
"""Saved elements per token per (parameter / hidden width) of a trained transformer text encoder."""
PROCESS_RAM_BYTES = 3 * GIB
"""Host RAM of the trainer process before any weights: Python, torch, diffusers, CUDA's host libraries (assumption)."""
INFERENCE_FRACTION = 0.28
"""No-grad denoiser forward peak per sample as a fraction of its checkpointed training activations (SD1.5, measured)."""
OFFLOAD_COPY_BYTES_PER_S = 20e9
"""Host-to-GPU copy rate assumed for block offload: PCIe 4.0 x16 from pinned memory (an assumption, docs/vram.md)."""


@dataclass(frozen=True)
class OptimizerState:
    """Optimizer state per trained parameter: `slots` tensors like the parameter, 8-bit or factored."""

    slots: int
    eight_bit: bool = False
    factored: bool = False
    initial_copy: bool = False
    """Also keeps a copy of each tensor's initial value, except of all-zero tensors (Prodigy's p0)."""


OPTIMIZER_STATES: dict[OptimizerName, OptimizerState] = {
    OptimizerName.ADAMW: OptimizerState(2),
    OptimizerName.ADAMW8BIT: OptimizerState(2, eight_bit=True),
    OptimizerName.LION: OptimizerState(1),
    OptimizerName.LION8BIT: OptimizerState(1, eight_bit=True),
    OptimizerName.PRODIGY: OptimizerState(3, initial_copy=True),
    OptimizerName.ADAFACTOR: OptimizerState(1, factored=True),
    OptimizerName.SGD: OptimizerState(0),
    OptimizerName.SCHEDULE_FREE_ADAMW: OptimizerState(2),
}
"""State per optimizer (SGD gains one slot with momentum). Prodigy: exp_avg, exp_avg_sq, s, and p0 of non-zero tensors."""
EIGHT_BIT_BYTES = 1 + 4 / 256
"""bitsandbytes blockwise 8-bit state: one byte plus a float32 absmax per 256 elements."""


@dataclass(frozen=True)
class Trainable:
    """Aggregate of trained tensors: what gradient and optimizer bytes depend on."""

    params: int = 0
    small_params: int = 0
    """Elements in tensors under BNB_MIN_8BIT_NUMEL (8-bit optimizers keep them at 32 bits)."""
    factored_elements: int = 0
    """Adafactor second-moment elements."""
    zero_init_params: int = 0
    """Elements of tensors that start as all zeros."""
    element_bytes: float = ADAPTER_BYTES

    @classmethod
    def from_tensors(cls, tensors: tuple[TensorShape, ...], element_bytes: float = ADAPTER_BYTES) -> Trainable:
        """Aggregate a list of 2-D tensors."""
        return cls(
            params=sum(t.numel for t in tensors),
            small_params=sum(t.numel for t in tensors if t.rows * t.cols < BNB_MIN_8BIT_NUMEL),
            factored_elements=sum((t.rows + t.cols) * t.count for t in tensors),
            zero_init_params=sum(t.numel for t in tensors if t.zero_init),
            element_bytes=element_bytes,
        )

    @classmethod
    def from_part(cls, part: PartSpec, element_bytes: float) -> Trainable:
        """A whole part trained (finetune)."""
        return cls(part.params, part.small_tensor_params, part.factored_state_elements, 0, element_bytes)

    @property
    def bytes(self) -> int:
        """Bytes of the tensors themselves (and of their gradients)."""
        return round(self.params * self.element_bytes)

    def optimizer_bytes(self, state: OptimizerState) -> int:
        """Optimizer state bytes for these tensors."""
        copies = (self.params - self.zero_init_params) * self.element_bytes if state.initial_copy else 0
        if state.factored:
            return round(self.factored_elements * self.element_bytes)
        if state.eight_bit:
            return round(state.slots * ((self.params - self.small_params) * EIGHT_BIT_BYTES + self.small_params * 4))
        return round(state.slots * self.params * self.element_bytes + copies)


@dataclass(frozen=True)
class PartEstimate:
    """One model part: parameter count, storage dtype, bytes, whether it is on the GPU while training, and whether it
    is freed once its outputs are cached (Plan.frees_text)."""

    params: int
    dtype: str
    bytes: int
    resident: bool
    freed: bool = False


@dataclass(frozen=True)
class PhaseMemory:
    """The peak GPU memory and host RAM of one phase."""

    vram_bytes: int
    ram_bytes: int


@dataclass(frozen=True)
class Suggestion:
    """A config change and the bytes it saves off the peak."""

    change: str
    saves_bytes: int


@dataclass
class Estimate:
    """The result of `estimate`: peak bytes, its breakdown, and what to change."""

    total_bytes: int
    breakdown: dict[str, int]
    parts: dict[str, PartEstimate]
    peak_phase: str
    budget_bytes: int | None
    fits: bool | None
    suggestions: list[Suggestion] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    phases: dict[str, PhaseMemory] = field(default_factory=dict)
    """VRAM and RAM peaks of every phase that happens (loading, text_caching, latent_caching, training_step, sampling,
    validation)."""
    gpu: GpuInfo | None = None
    offload: OffloadCost | None = None
    """Block offload's memory split and copy cost (flow.offload on), else None."""

    @property
    def ram_bytes(self) -> int:
        """The host RAM peak over the phases."""
        return max(phase.ram_bytes for phase in self.phases.values())

    @property
    def ram_peak_phase(self) -> str:
        """The phase that needs the most host RAM."""
        return max(self.phases, key=lambda name: self.phases[name].ram_bytes)

    def to_json(self) -> dict[str, Any]:
        """The `tui-trainer estimate --json` shape."""
        gpu = None
        if self.gpu is not None:
            gpu = {
                "name": self.gpu.name,
                "total_bytes": self.gpu.total_bytes,
                "free_bytes": self.gpu.free_bytes,
                "compute_capability": list(self.gpu.compute_capability),
            }
        return {
            "total_bytes": self.total_bytes,
            "breakdown": dict(self.breakdown),
            "parts": {
                name: {"params": part.params, "dtype": part.dtype, "bytes": part.bytes, "resident": part.resident,
                       "freed": part.freed}
                for name, part in self.parts.items()
            },
            "peak_phase": self.peak_phase,
            "phases": {name: {"vram_bytes": phase.vram_bytes, "ram_bytes": phase.ram_bytes} for name, phase in self.phases.items()},
            "ram_bytes": self.ram_bytes,
            "ram_peak_phase": self.ram_peak_phase,
            "budget_bytes": self.budget_bytes,
            "gpu": gpu,
            "fits": self.fits,
            "suggestions": [{"change": s.change, "saves_bytes": s.saves_bytes} for s in self.suggestions],
            "warnings": list(self.warnings),
            "offload": None if self.offload is None else dataclasses.asdict(self.offload),
        }


class Plan(NamedTuple):
    """The settings the estimate depends on, read once from a TrainConfig (a tuple: cheap `_replace` per suggestion)."""

    spec: FamilySpec
    method: Method
    dtypes: dict[str, WeightDtype]
    """Storage dtype by part name."""
    trains: dict[str, bool]
    """Whether each part's config section says train."""
    train_dtype: TrainDtype
    batch_size: int
    accumulation: int
    width: int
    height: int
    checkpointing: bool
    cache_latents: bool
    cache_text: bool
    optimizer: OptimizerName
    sgd_momentum: bool
    ema: bool
    attention: AttentionBackend
    lora_type: LoraType
    lora_rank: int
    lora_targets: LoraTargets
    embedding_vectors: int
    sample_sizes: tuple[tuple[int, int], ...]
    """Sample (width, height) when sampling happens during the run; empty = no sampling."""
    validation_batch: int = 0
    """Images per validation forward pass (no gradients) when validation loss is measured; 0 = none."""
    offload_group: int = 0
    """Denoiser blocks per group on the GPU under block offload (flow.offload); 0 = off."""
    offload_prefetch: bool = False
    """Block offload prefetches the next group (two groups on the GPU)."""
    captions_vary: bool = False
    """Some concept shuffles or drops tags or captions (then text outputs are cached as they come)."""
    denoiser_from_folder: bool = True
    """The denoiser is read from a diffusers folder or repo id, where an nf4 one is quantised as it is read (not from
    a single file or model.transformer, which are read whole first)."""

    @property
    def frees_text(self) -> bool:
        """The text encoders are freed once their outputs are cached (models.families.frees_text_encoders)."""
        return frees_text_encoders(self.spec, self.method, self.cache_text, self.captions_vary,
                                   any(self.trains[part.name] for part in self.spec.text_encoders))


def largest_size(resolution: str) -> tuple[int, int]:
    """The largest bucket a resolution string allows, as (width, height): the largest side squared, or the fixed size."""
    sides, fixed = parse_resolution(resolution)
    if fixed is not None:
        return fixed
    side = max(sides)
    return side, side


def plan_from_config(
    config: TrainConfig,
    spec: FamilySpec | None = None,
    largest_bucket: tuple[int, int] | None = None,
    batch_shape: tuple[int, int, int] | None = None,
) -> Plan:
    """Read the settings `estimate` needs from a config (batch_shape = (batch, width, height) overrides both)."""
    model, training = config.model, config.training
    spec = spec or spec_for_model(model.family, model.base_model)
    width, height = largest_bucket or largest_size(training.resolution)
    batch = training.batch_size
    if batch_shape is not None:
        batch, width, height = batch_shape
    tables = {part.name: getattr(config.parts, part.config_section) for part in spec.configured_parts}
    samples: tuple[tuple[int, int], ...] = ()
    if config.samples and (config.sampling.every > 0 or config.sampling.before_training):
        samples = tuple((s.width or width, s.height or height) for s in config.samples)
    return Plan(
        spec=spec,
        method=config.method,
        dtypes={name: tables[name].dtype if name in tables else model.vae_dtype for name in spec.parts},
        trains={name: part.trainable and name in tables and tables[name].train for name, part in spec.parts.items()},
        train_dtype=model.train_dtype,
        batch_size=batch,
        accumulation=training.gradient_accumulation,
        width=width,
        height=height,
        checkpointing=training.gradient_checkpointing,
        cache_latents=training.cache_latents,
        cache_text=training.cache_text_encoder_outputs,
        optimizer=config.optimizer.name,
        sgd_momentum=getattr(config.optimizer.settings_for(OptimizerName.SGD), "momentum", 0.0) > 0,
        ema=training.ema,
        attention=training.attention,
        lora_type=config.lora.type,
        lora_rank=config.lora.rank,
        lora_targets=config.lora.targets,
        embedding_vectors=config.embedding.num_vectors,
        sample_sizes=samples,
        validation_batch=batch if config.validation.every and any(
            concept.enabled and concept.type is ConceptType.VALIDATION for concept in config.concepts) else 0,
        captions_vary=any(c.shuffle_tags or c.tag_dropout or c.caption_dropout for c in config.concepts),
        offload_group=config.flow.offload.blocks_per_group if config.flow.offload.enabled else 0,
        offload_prefetch=config.flow.offload.use_stream,
        denoiser_from_folder=not model.transformer and not is_single_file(model.base_model),
    )


def _weight_bytes(part: PartSpec, dtype: WeightDtype) -> int:
    """Stored bytes of a part; nf4 applies to its Linear weights, the rest stays 16-bit."""
    if dtype in LINEAR_ONLY_DTYPES:
        return round(part.linear_weight_params * WEIGHT_BYTES[dtype] + (part.params - part.linear_weight_params) * 2)
    return round(part.params * WEIGHT_BYTES[dtype])


_ADAPTER_TRAINABLES: dict[tuple[int, LoraType, LoraTargets, int], tuple[PartSpec, Trainable]] = {}
"""Memo of adapter aggregates by (id(part), type, targets, rank); the part is kept so its id stays unique."""


def adapter_trainable(part: PartSpec, lora_type: LoraType, targets: LoraTargets, rank: int) -> Trainable:
    """Aggregate of the adapter tensors a part gets (memoised: the TUI asks again on every keystroke)."""
    key = (id(part), lora_type, targets, rank)
    if key not in _ADAPTER_TRAINABLES:
        _ADAPTER_TRAINABLES[key] = (part, Trainable.from_tensors(part.adapter_tensors(lora_type, targets, rank)))
    return _ADAPTER_TRAINABLES[key][1]


def _trainables(plan: Plan) -> dict[str, Trainable]:
    """What trains in each part under the plan's method."""
    trained: dict[str, Trainable] = {}
    for name, part in plan.spec.parts.items():
        if plan.method is Method.EMBEDDING:
            if part.role is PartRole.TEXT_ENCODER and part.embedding_dim:
                trained[name] = Trainable.from_tensors((TensorShape(plan.embedding_vectors, part.embedding_dim, 1),))
        elif not plan.trains[name]:
            continue
        elif plan.method is Method.FINETUNE:
            trained[name] = Trainable.from_part(part, WEIGHT_BYTES[plan.dtypes[name]])
        elif part.lora_layers:
            trained[name] = adapter_trainable(part, plan.lora_type, plan.lora_targets, plan.lora_rank)
    return trained


def _resident(plan: Plan, name: str, part: PartSpec, trained: dict[str, Trainable]) -> bool:
    """Whether a part stays on the GPU during training steps."""
    if part.role is PartRole.AUTOENCODER:
        return not plan.cache_latents
    if part.role is PartRole.TEXT_ENCODER:
        return name in trained or not plan.cache_text
    return True


def _eager_attention_bytes(plan: Plan, latent_pixels: int, compute: int) -> int:
    """Attention matrices eager attention materialises (SDPA / xformers never do)."""
    if plan.attention is not AttentionBackend.EAGER:
        return 0
    matrices = [
        (level.count, level.heads * (latent_pixels / level.downscale**2) ** 2 * compute * plan.batch_size)
        for level in plan.spec.activations.self_attention
    ]
    largest = max(size for _, size in matrices)
    if plan.checkpointing:
        return round(2 * largest)
    return round(sum(count * size for count, size in matrices) + largest)


def _activation_bytes(plan: Plan, trained: dict[str, Trainable]) -> int:
    """Training-step activations of the denoiser (and of trained text encoders)."""
    profile = plan.spec.activations
    compute = COMPUTE_BYTES[plan.train_dtype]
    latent_pixels = plan.spec.latent_pixels(plan.width, plan.height)
    per_pixel = profile.checkpointed_bytes_per_latent_pixel if plan.checkpointing else profile.bytes_per_latent_pixel
    denoiser_trains_fully = plan.method is Method.FINETUNE and plan.spec.denoiser.name in trained
    factor = (compute / 2) * (profile.trained_factor if denoiser_trains_fully else 1.0)
    denoiser = plan.batch_size * latent_pixels * per_pixel * factor + _eager_attention_bytes(plan, latent_pixels, compute)
    text = sum(
        plan.batch_size * plan.spec.text_tokens * TE_ACTIVATION_ELEMENTS * part.params / part.embedding_dim * compute
        for name, part in plan.spec.parts.items()
        if name in trained and part.role is PartRole.TEXT_ENCODER
    )
    return round(denoiser + text)


def _autocast_copies(plan: Plan, trained: dict[str, Trainable]) -> int:
    """16-bit copies autocast caches of float32 trained weights during a step."""
    if COMPUTE_BYTES[plan.train_dtype] == 4:
        return 0
    return sum(round(t.params * 2) for t in trained.values() if t.element_bytes == 4)


def _autoencoder_pass_bytes(plan: Plan, width: int, height: int, bytes_per_pixel: float) -> int:
    """Peak of one no-grad autoencoder pass over a width x height image, scaled from 16-bit to the VAE's dtype."""
    dtype_factor = max(2.0, WEIGHT_BYTES[plan.dtypes[plan.spec.autoencoder.name]]) / 2
    return round(bytes_per_pixel * width * height * dtype_factor)


SGD_WITH_MOMENTUM = OptimizerState(1)


def _load_bytes(plan: Plan, part: PartSpec, dtype: WeightDtype) -> int:
    """Host bytes of a part as it is read: fp8 and nf4 parts load in the compute dtype and are converted after, but for
    an nf4 denoiser from a folder each layer is quantised as it is read (train.loading.load_nf4_model)."""
    if dtype is WeightDtype.NF4 and part.name == plan.spec.denoiser.name and plan.denoiser_from_folder:
        return _weight_bytes(part, dtype)
    if dtype in (WeightDtype.FLOAT8, WeightDtype.NF4):
        return part.params * COMPUTE_BYTES[plan.train_dtype]
    return _weight_bytes(part, dtype)


@dataclass(frozen=True)
class OffloadCost:
    """Block offload of the denoiser (flow.offload): where its blocks are and what moving them costs."""

    block_bytes: int
    """The blocks' frozen weights."""
    ram_bytes: int
    """The host RAM they take in pinned memory (more than block_bytes: see _pinned_block_bytes)."""
    gpu_bytes: int
    """Of those, the most on the GPU at once: one group (two with prefetch)."""
    bytes_per_step: int
    """Host-to-GPU copies per optimizer step: every block for each forward and again for its backward rerun."""
    seconds_per_step: float
    """Those copies at OFFLOAD_COPY_BYTES_PER_S (prefetch hides part of it behind compute)."""


OFFLOAD_CHANGE = "flow.offload.enabled = true (and training.gradient_checkpointing)"
"""Suggested only when the peak is over the budget (or there is none): it costs time every step."""


def _block_bytes(stack: BlockStack, dtype: WeightDtype) -> int:
    """Stored bytes of one block (nf4 applies to its Linear weights)."""
    if dtype in LINEAR_ONLY_DTYPES:
        return round(stack.linear_weight_params * WEIGHT_BYTES[dtype] + (stack.params - stack.linear_weight_params) * 2)
    return round(stack.params * WEIGHT_BYTES[dtype])


def _pinned_block_bytes(stack: BlockStack, dtype: WeightDtype) -> int:
    """Pinned host bytes of one offloaded block: every tensor rounded up to a power of two of bytes, as torch's
    pinned-memory allocator does (nf4: Linear weights packed at 4 bits, their absmax kept apart, unpinned)."""
    if dtype in LINEAR_ONLY_DTYPES:
        return round(stack.rounded_linear_params * 0.5 + stack.rounded_other_params * 2)
    return round((stack.rounded_linear_params + stack.rounded_other_params) * WEIGHT_BYTES[dtype])


def offload_split(plan: Plan) -> OffloadCost:
    """Block offload under the plan (all zeros when off): LoRA only, on a denoiser with block lists."""
    part = plan.spec.denoiser
    if not plan.offload_group or not part.blocks or plan.method is not Method.LORA:
        return OffloadCost(0, 0, 0, 0, 0.0)
    dtype = plan.dtypes[part.name]
    total = sum(stack.count * _block_bytes(stack, dtype) for stack in part.blocks)
    pinned = sum(stack.count * _pinned_block_bytes(stack, dtype) for stack in part.blocks)
    group = max(min(plan.offload_group, stack.count) * _block_bytes(stack, dtype) for stack in part.blocks)
    copied = 2 * total * plan.accumulation
    return OffloadCost(total, pinned, group * (2 if plan.offload_prefetch else 1), copied, copied / OFFLOAD_COPY_BYTES_PER_S)


def offload_cost(plan: Plan) -> OffloadCost | None:
    """The plan's block offload, or None when it does not apply."""
    cost = offload_split(plan)
    return cost if cost.block_bytes else None


def _phases(plan: Plan) -> tuple[dict[str, PhaseMemory], dict[str, int], dict[str, tuple[int, bool]]]:
    """(VRAM and RAM per phase, training-step breakdown, (bytes, resident) per part).

    The trainer's order: every part is read into RAM (loading); the parts that do not train go to the GPU while
    the trained ones wait in RAM; text outputs are cached and the text encoders go back to RAM (or are freed: see
    Plan.frees_text), then latents are cached and the autoencoder goes back too; then the steps."""
    trained = _trainables(plan)
    state = SGD_WITH_MOMENTUM if plan.optimizer is OptimizerName.SGD and plan.sgd_momentum else OPTIMIZER_STATES[plan.optimizer]
    parts: dict[str, tuple[int, bool]] = {}
    frozen_weights = 0
    finetune = plan.method is Method.FINETUNE
    for name, part in plan.spec.parts.items():
        size = _weight_bytes(part, plan.dtypes[name])
        resident = _resident(plan, name, part, trained)
        parts[name] = (size, resident)
        if resident and not (finetune and name in trained):
            frozen_weights += size
    offloaded = offload_split(plan)
    frozen_weights -= offloaded.block_bytes - offloaded.gpu_bytes
    trainable = sum(t.bytes for t in trained.values())
    optimizer = sum(t.optimizer_bytes(state) for t in trained.values()) + (trainable if plan.ema else 0)
    activations = _activation_bytes(plan, trained)
    caches = _autocast_copies(plan, trained)
    breakdown = {
        "weights": frozen_weights,
        "trainable": trainable,
        "gradients": trainable,
        "optimizer": optimizer,
        "activations": activations,
        "caches": caches,
    }
    if not plan.cache_latents:
        encode = _autoencoder_pass_bytes(plan, plan.width, plan.height, plan.spec.encode_bytes_per_pixel)
        breakdown["activations"] = max(activations, encode * plan.batch_size)
    breakdown["overhead"] = round(CUDA_CONTEXT_BYTES + ALLOCATOR_SLACK * (breakdown["activations"] + trainable))
    freed = {part.name for part in plan.spec.text_encoders} if plan.frees_text else set()
    # After text caching: parts off the GPU wait in RAM (and come to the GPU for samples), freed text encoders are gone.
    off_gpu = sum(size for name, (size, resident) in parts.items() if not resident and name not in freed)
    # Parts that train wait in RAM until the optimizer is set up; the others are on the GPU for the caches.
    waiting = sum(parts[name][0] for name in trained if name in parts)
    caching_gpu = sum(size for name, (size, _) in parts.items() if name not in trained)
    phases = {
        "loading": PhaseMemory(CUDA_CONTEXT_BYTES, PROCESS_RAM_BYTES + sum(
            _load_bytes(plan, part, plan.dtypes[name]) for name, part in plan.spec.parts.items())),
        "training_step": PhaseMemory(sum(breakdown.values()), PROCESS_RAM_BYTES + off_gpu + offloaded.ram_bytes),
    }
    parked = 0
    if plan.cache_text:
        phases["text_caching"] = PhaseMemory(round(caching_gpu + CUDA_CONTEXT_BYTES), PROCESS_RAM_BYTES + waiting)
        parked = sum(parts[part.name][0] for part in plan.spec.text_encoders if part.name not in trained)
    if plan.cache_latents:
        encode = _autoencoder_pass_bytes(plan, plan.width, plan.height, plan.spec.encode_bytes_per_pixel)
        phases["latent_caching"] = PhaseMemory(round(caching_gpu - parked + encode + CUDA_CONTEXT_BYTES),
                                               PROCESS_RAM_BYTES + waiting + (0 if freed else parked))
    if plan.sample_sizes:
        held = frozen_weights + trainable + optimizer + CUDA_CONTEXT_BYTES
        profile = plan.spec.activations
        sampling = max(
            max(2 * plan.spec.latent_pixels(w, h) * profile.checkpointed_bytes_per_latent_pixel * INFERENCE_FRACTION,
                _autoencoder_pass_bytes(plan, w, h, plan.spec.decode_bytes_per_pixel))
            for w, h in plan.sample_sizes
        )
        phases["sampling"] = PhaseMemory(round(held + off_gpu + sampling), PROCESS_RAM_BYTES + offloaded.ram_bytes)
    if plan.validation_batch:
        forward = (plan.validation_batch * plan.spec.latent_pixels(plan.width, plan.height)
                   * plan.spec.activations.checkpointed_bytes_per_latent_pixel * INFERENCE_FRACTION)
        phases["validation"] = PhaseMemory(round(frozen_weights + trainable + optimizer + CUDA_CONTEXT_BYTES + forward),
                                           PROCESS_RAM_BYTES + off_gpu + offloaded.ram_bytes)
    return phases, breakdown, parts


def _totals(plan: Plan) -> int:
    return max(phase.vram_bytes for phase in _phases(plan)[0].values())


def _lower_resolution(plan: Plan) -> Plan | None:
    step = plan.spec.bucket_step
    width, height = (max(step, (side * 3 // 4) // step * step) for side in (plan.width, plan.height))
    if (width, height) == (plan.width, plan.height) or min(width, height) < 256:
        return None
    return plan._replace(width=width, height=height)


def _candidate_changes(plan: Plan) -> list[tuple[str, Plan | None]]:
    """Config changes worth suggesting, each with the plan it leads to (None = not applicable)."""
    denoiser = plan.spec.denoiser.name
    frozen_base = plan.method is not Method.FINETUNE
    eight_bit = {OptimizerName.LION: OptimizerName.LION8BIT}.get(plan.optimizer, OptimizerName.ADAMW8BIT)
    text_trains = any(plan.trains[part.name] for part in plan.spec.text_encoders)
    lower = _lower_resolution(plan)
    return [
        ("training.gradient_checkpointing = true", None if plan.checkpointing else plan._replace(checkpointing=True)),
        (f"optimizer.name = '{eight_bit.value}'",
         None if OPTIMIZER_STATES[plan.optimizer].eight_bit or plan.optimizer in (OptimizerName.SGD, OptimizerName.ADAFACTOR)
         else plan._replace(optimizer=eight_bit)),
        ("training.cache_latents = true", None if plan.cache_latents else plan._replace(cache_latents=True)),
        ("training.cache_text_encoder_outputs = true and text encoders frozen",
         None if plan.method is Method.EMBEDDING or (plan.cache_text and not text_trains)
         else plan._replace(cache_text=True, trains={n: t and n == denoiser for n, t in plan.trains.items()})),
        ("model.vae_dtype = 'bfloat16'",
         plan._replace(dtypes={**plan.dtypes, plan.spec.autoencoder.name: WeightDtype.BFLOAT16})
         if plan.dtypes[plan.spec.autoencoder.name] is WeightDtype.FLOAT32 else None),
        ("parts.denoiser.dtype = 'float8'",
         plan._replace(dtypes={**plan.dtypes, denoiser: WeightDtype.FLOAT8})
         if frozen_base and plan.dtypes[denoiser] not in (WeightDtype.FLOAT8, WeightDtype.NF4) else None),
        ("parts.denoiser.dtype = 'nf4'",
         plan._replace(dtypes={**plan.dtypes, denoiser: WeightDtype.NF4})
         if frozen_base and plan.dtypes[denoiser] is not WeightDtype.NF4 else None),
        *((f"parts.{part.config_section}.dtype = 'nf4'",
           plan._replace(dtypes={**plan.dtypes, part.name: WeightDtype.NF4})
           if not plan.trains[part.name] and plan.dtypes[part.name] not in (WeightDtype.FLOAT8, WeightDtype.NF4) else None)
          for part in plan.spec.text_encoders if part.config_section),
        (f"lora.rank = {plan.lora_rank // 2}",
         plan._replace(lora_rank=plan.lora_rank // 2) if plan.method in (Method.LORA, Method.INPAINT) and plan.lora_rank >= 8 else None),
        (f"training.batch_size = 1, gradient_accumulation = {plan.batch_size * plan.accumulation}",
         plan._replace(batch_size=1, accumulation=plan.batch_size * plan.accumulation) if plan.batch_size > 1 else None),
        (f"training.resolution = '{lower.width}x{lower.height}'" if lower else "", lower),
        _offload_change(plan),
    ]


def _offload_change(plan: Plan) -> tuple[str, Plan | None]:
    """Block offload as a suggestion, with its copy cost in the words."""
    if plan.method is not Method.LORA or not plan.spec.denoiser.blocks or plan.offload_group:
        return OFFLOAD_CHANGE, None
    changed = plan._replace(offload_group=1, checkpointing=True)
    cost = offload_split(changed)
    return f"{OFFLOAD_CHANGE}: about {cost.seconds_per_step:.1f} s of copies per step", changed


def _suggestions(plan: Plan, total: int) -> list[Suggestion]:
    """Applicable changes that lower the peak, largest saving first."""
    found = [
        Suggestion(change, total - _totals(changed))
        for change, changed in _candidate_changes(plan)
        if changed is not None
    ]
    return sorted((s for s in found if s.saves_bytes > 0), key=lambda s: -s.saves_bytes)


def _warnings(plan: Plan, gpu: GpuInfo | None) -> list[str]:
    """Settings the GPU cannot run natively, and known numerical traps."""
    warnings = []
    if gpu is not None:
        capability = tuple(gpu.compute_capability)
        if plan.train_dtype in (TrainDtype.BFLOAT16, TrainDtype.TF32) and capability < (8, 0):
            warnings.append(f"{plan.train_dtype.value} needs compute capability 8.0 or newer; "
                            f"{gpu.name} has {capability[0]}.{capability[1]}: use float16")
        if WeightDtype.FLOAT8 in plan.dtypes.values() and capability < (8, 9):
            warnings.append(f"float8 compute needs compute capability 8.9 or newer; {gpu.name} has "
                            f"{capability[0]}.{capability[1]}: weights are stored in float8 and upcast (slower)")
    if not plan.spec.activations.measured:
        warnings.append(f"{plan.spec.label}: the training step's activations are derived from the architecture, not yet "
                        "measured on a GPU; allow a margin")
    if plan.spec.vae_scaling_factor == 0.13025 and plan.dtypes.get("vae") is WeightDtype.FLOAT16:
        warnings.append("the SDXL VAE overflows in float16 (NaN latents): use vae_dtype float32 or bfloat16, "
                        "or a float16-fixed VAE")
    return warnings


def estimate(
    config: TrainConfig,
    gpu: GpuInfo | None = None,
    *,
    target_bytes: int | None = None,
    largest_bucket: tuple[int, int] | None = None,
    batch_shape: tuple[int, int, int] | None = None,
    spec: FamilySpec | None = None,
) -> Estimate:
    """Estimate the peak VRAM of training `config`.

    gpu: budget against its free memory and check its dtype support; target_bytes: budget against this size
    instead (e.g. no GPU here); largest_bucket: (width, height) of the largest bucket, default from
    training.resolution; batch_shape: (batch, width, height) overriding batch size and bucket; spec: a family
    spec to use instead of the registry's (e.g. one measured from a tiny devkit model).
    """
    plan = plan_from_config(config, spec, largest_bucket, batch_shape)
    phases, breakdown, sizes = _phases(plan)
    parts = {
        name: PartEstimate(part.params, plan.dtypes[name].value, *sizes[name], plan.frees_text and part.role is PartRole.TEXT_ENCODER)
        for name, part in plan.spec.parts.items()
    }
    peak_phase = max(phases, key=lambda name: phases[name].vram_bytes)
    total = phases[peak_phase].vram_bytes
    budget = target_bytes if target_bytes is not None else (gpu.free_bytes if gpu is not None else None)
    return Estimate(
        total_bytes=total,
        breakdown=breakdown,
        parts=parts,
        peak_phase=peak_phase,
        budget_bytes=budget,
        fits=None if budget is None else total <= budget,
        suggestions=[s for s in _suggestions(plan, total)
                     if not s.change.startswith(OFFLOAD_CHANGE) or budget is None or total > budget],
        warnings=_warnings(plan, gpu),
        phases=phases,
        gpu=gpu,
        offload=offload_cost(plan) if plan.offload_group else None,
    )
