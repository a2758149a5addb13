"""The run config: one pydantic model per TOML section.

Every field carries a one-line docstring; the TUI shows it as help and `tui-trainer config docs`
prints it into docs/config.md. TOML has no null, so "unset" is an absent key (None here).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from tui_trainer.config.enums import (
    SAMPLERS,
    AttentionBackend,
    CadenceUnit,
    CaptionSource,
    ConceptType,
    Family,
    LoraTargets,
    LoraType,
    LossType,
    Method,
    MixedPrecision,
    NotifyOn,
    OptimizerName,
    OutputFormat,
    PredictionType,
    RandomMaskKind,
    RemainderPolicy,
    SchedulerName,
    TrainDtype,
    TimestepSampling,
    TrainForUnit,
    WeightDtype,
)

CONFIG_VERSION = 2

LearningRate = Annotated[float, Field(gt=0, le=1)]
Probability = Annotated[float, Field(ge=0, le=1)]

_RESOLUTION_LIST = re.compile(r"^\s*\d+\s*(,\s*\d+\s*)*$")
_RESOLUTION_FIXED = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")
RESOLUTION_HELP = "a side like '512', several sides like '512,768', or a fixed size like '768x512'"


def parse_resolution(text: str) -> tuple[list[int], tuple[int, int] | None]:
    """Parse a resolution string into (target sides, fixed WxH or None); raise ValueError if malformed."""
    fixed = _RESOLUTION_FIXED.match(text)
    if fixed:
        width, height = int(fixed.group(1)), int(fixed.group(2))
        sides = [width, height]
        result: tuple[list[int], tuple[int, int] | None] = ([], (width, height))
    elif _RESOLUTION_LIST.match(text):
        sides = [int(part) for part in text.split(",")]
        result = (sides, None)
    else:
        raise ValueError(f"{text!r} is not a resolution; use {RESOLUTION_HELP}")
    for side in sides:
        if not 64 <= side <= 4096 or side % 8:
            raise ValueError(f"{text!r}: side {side} must be a multiple of 8 between 64 and 4096")
    return result


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, docstrings are field help."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class ModelConfig(Section):
    """The base model and how its weights are held."""

    family: Family = Family.SD15
    """Model family (sd15, sd2, sdxl, pixart_alpha, stable_cascade, flux1_dev, flux1_schnell, chroma, z_image, qwen_image)."""
    base_model: str = Field(min_length=1)
    """Hugging Face repo id, local diffusers folder, or single .safetensors checkpoint."""
    vae: str | None = None
    """Separate VAE (repo id, folder or file) replacing the base model's; absent = the base model's."""
    transformer: str | None = None
    """Flow families: one .safetensors file with the transformer (original BFL / ComfyUI layout or diffusers layout)
    replacing the base model's; the other parts still come from base_model. Absent = the base model's."""
    prediction_type: PredictionType | None = None
    """Force epsilon or v_prediction (DDPM families); absent = read from the model's scheduler config."""
    zero_terminal_snr: bool = False
    """Rescale the noise schedule to zero terminal SNR (for v-prediction models)."""
    vae_dtype: WeightDtype = WeightDtype.FLOAT32
    """Storage dtype of the VAE weights."""
    train_dtype: TrainDtype = TrainDtype.FLOAT16
    """Compute dtype of the training step (float32, float16, bfloat16, tf32)."""
    allow_pickle: bool = False
    """Allow loading pickle checkpoints (.ckpt/.pt/.bin); they can run code, so only for trusted files."""
    effnet_encoder: str | None = None
    """Stable Cascade: effnet_encoder.safetensors (from stabilityai/stable-cascade); absent = that file in the model folder."""
    cascade_decoder: str | None = None
    """Stable Cascade: stage B + A decoder (repo id or diffusers folder of StableCascadeDecoderPipeline) used only for samples; absent = no samples."""


class WorkspaceConfig(Section):
    """Where runs, caches and outputs go."""

    dir: str = "workspace"
    """Workspace folder; runs are created under <dir>/runs/. Relative paths are relative to the config file."""
    cache_dir: str | None = None
    """Cache folder for latents, text-encoder outputs and scans; absent = <dir>/cache."""
    run_name: str = Field(default="run", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    """Run name; a run folder is <run_name>-<YYYYmmdd-HHMMSS>."""
    output_path: str | None = None
    """Where the final model is written; absent = the run folder's output/."""
    output_format: OutputFormat | None = None
    """kohya, diffusers or comfyui (Z-Image) for LoRA, diffusers or single_file for finetune, a1111 for embeddings; absent = the method's default."""


class ConceptConfig(Section):
    """One dataset folder and how its images and captions are used."""

    name: str = Field(min_length=1)
    """Name shown in reports and errors."""
    path: str = Field(min_length=1)
    """Image folder; relative paths are relative to the config file."""
    enabled: bool = True
    """Include this concept."""
    type: ConceptType = ConceptType.TRAIN
    """train, or validation (only measured, never trained on)."""
    include_subdirs: bool = False
    """Also take images from sub-folders."""
    repeats: float = Field(default=1.0, gt=0, le=1000)
    """How many times each image counts per epoch (fractions take a random subset)."""
    caption_source: CaptionSource = CaptionSource.TXT
    """txt (a .txt beside each image), prompts_file (one line per caption, picked at random), filename."""
    prompts_file: str | None = None
    """File of captions, one per line, for caption_source = prompts_file."""
    caption_prefix: str = ""
    """Text put before every caption (e.g. a trigger word)."""
    caption_suffix: str = ""
    """Text put after every caption."""
    keep_tokens: int = Field(default=0, ge=0)
    """Number of leading comma-separated tags that are never shuffled or dropped."""
    shuffle_tags: bool = False
    """Shuffle comma-separated tags after the kept ones."""
    tag_dropout: Probability = 0.0
    """Probability of dropping each (not kept) tag."""
    caption_dropout: Probability = 0.0
    """Probability of training an image with an empty caption."""
    flip_probability: Probability = 0.0
    """Probability of a horizontal flip."""
    crop_jitter: Probability = 0.0
    """Random crop offset as a fraction of the spare pixels (0 = centre crop)."""
    resolution: str | None = None
    """Resolution override for this concept; absent = training.resolution."""

    @field_validator("resolution")
    @classmethod
    def _resolution_is_valid(cls, value: str | None) -> str | None:
        if value is not None:
            parse_resolution(value)
        return value

    @model_validator(mode="after")
    def _prompts_file_needed(self) -> ConceptConfig:
        if self.caption_source is CaptionSource.PROMPTS_FILE and not self.prompts_file:
            raise ValueError("caption_source = 'prompts_file' needs prompts_file")
        return self


class SampleConfig(Section):
    """One sample image generated during training."""

    prompt: str = Field(min_length=1)
    """Prompt."""
    negative_prompt: str = ""
    """Negative prompt."""
    width: int | None = Field(default=None, ge=64, le=4096, multiple_of=8)
    """Width in px; absent = the training resolution."""
    height: int | None = Field(default=None, ge=64, le=4096, multiple_of=8)
    """Height in px; absent = the training resolution."""
    seed: int = Field(default=42, ge=0)
    """Seed of the sample's noise."""
    steps: int = Field(default=20, ge=1, le=500)
    """Denoising steps."""
    cfg: float | None = Field(default=None, ge=0, le=50)
    """Classifier-free guidance scale (FLUX.1-dev: its distilled guidance); absent = the family pipeline's own default
    (SD1.5 7.5, SDXL 5, PixArt-alpha 4.5, FLUX.1-dev 3.5, Chroma and Z-Image 5, Qwen-Image 4)."""
    sampler: str = "euler_a"
    """Sampler name (see the config reference for the list)."""

    @field_validator("sampler")
    @classmethod
    def _sampler_is_known(cls, value: str) -> str:
        if value not in SAMPLERS:
            raise ValueError(f"unknown sampler {value!r}; allowed: {', '.join(SAMPLERS)}")
        return value


class SamplingConfig(Section):
    """When samples are made."""

    every: int = Field(default=0, ge=0)
    """Make samples every N units; 0 = never."""
    unit: CadenceUnit = CadenceUnit.EPOCHS
    """steps, epochs or minutes."""
    before_training: bool = False
    """Also make samples before the first step."""
    use_ema: bool = True
    """Sample with the EMA weights when EMA is on."""


class ValidationConfig(Section):
    """Validation loss on held-out images: the enabled [[concepts]] with type = "validation" (never trained on)."""

    every: int = Field(default=0, ge=0)
    """Measure every N units; 0 = never."""
    unit: CadenceUnit = CadenceUnit.STEPS
    """steps or epochs."""
    draws: int = Field(default=4, ge=1, le=64)
    """Fixed (seeded) timestep + noise draws per image: more = a smoother curve, that many times the cost."""
    seed: int = Field(default=1234, ge=0)
    """Seed of the draws; the same seed gives curves comparable between runs."""
    before_training: bool = True
    """Also measure before the first step (the curve's starting point)."""

    @field_validator("unit")
    @classmethod
    def _unit_is_steps_or_epochs(cls, value: CadenceUnit) -> CadenceUnit:
        if value is CadenceUnit.MINUTES:
            raise ValueError("'minutes' is not allowed here; allowed: steps, epochs")
        return value


class TrainingConfig(Section):
    """Resolution, batching, length, caching and loss."""

    resolution: str = "512"
    """Target side(s) or fixed size: '512', '512,768' or '768x512'."""
    batch_size: int = Field(default=1, ge=1, le=256)
    """Images per step per GPU, before accumulation."""
    gradient_accumulation: int = Field(default=1, ge=1, le=1024)
    """Steps whose gradients are summed before each optimizer update."""
    epochs: int = Field(default=10, ge=1, le=100000)
    """Passes over the dataset."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps; absent = run all epochs."""
    seed: int = Field(default=42, ge=0)
    """Seed of everything random in training."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass: much less VRAM, ~20-30% slower."""
    cache_latents: bool = True
    """Encode images with the VAE once, to disk, and unload the VAE during training."""
    cache_text_encoder_outputs: bool = False
    """Encode captions once and unload the text encoders (only when no text encoder is trained)."""
    bucket_step: int | None = Field(default=None, ge=8, le=512, multiple_of=8)
    """Bucket side granularity in px; absent = the family's default (8 for SD1/SD2, 64 for SDXL)."""
    bucket_min_side: int | None = Field(default=None, ge=64, le=4096)
    """Smallest bucket side in px; absent = half the resolution."""
    bucket_max_side: int | None = Field(default=None, ge=64, le=8192)
    """Largest bucket side in px; absent = twice the resolution."""
    bucket_max_aspect: float = Field(default=2.0, ge=1.0, le=8.0)
    """Largest long/short side ratio of a bucket."""
    bucket_remainder: RemainderPolicy = RemainderPolicy.REPEAT
    """Images left after the last full batch of a bucket: drop, repeat (fill from the bucket) or partial."""
    clip_grad_norm: float | None = Field(default=1.0, gt=0)
    """Clip the gradient norm to this value; absent = no clipping."""
    loss: LossType = LossType.MSE
    """mse or huber."""
    huber_delta: float = Field(default=0.1, gt=0)
    """Huber loss delta."""
    min_snr_gamma: float | None = Field(default=None, gt=0)
    """Min-SNR loss weighting gamma (5 is usual); absent = off."""
    offset_noise: float = Field(default=0.0, ge=0, le=1)
    """Offset noise strength (0.05-0.1 helps very dark/bright images); 0 = off."""
    variance_loss: bool = False
    """PixArt-alpha: also train the learned variance (output channels 5-8) with the variational-bound term."""
    masked_training: bool = False
    """Weight the loss by each image's -masklabel.png mask."""
    unmasked_probability: Probability = 0.1
    """Probability of a step ignoring the mask (masked training)."""
    unmasked_weight: Probability = 0.1
    """Loss weight outside the mask (masked training)."""
    normalize_masked_area: bool = True
    """Divide the masked loss by the masked area, so small masks are not under-weighted."""
    ema: bool = False
    """Keep an exponential moving average of the trained weights."""
    ema_decay: float = Field(default=0.999, gt=0, lt=1)
    """EMA decay per step."""
    attention: AttentionBackend = AttentionBackend.SDPA
    """Attention implementation: sdpa, xformers or eager."""
    dataloader_workers: int = Field(default=2, ge=0, le=64)
    """Data-loading worker processes; 0 = load in the training process."""
    tensorboard: bool = True
    """Write TensorBoard scalars in the run folder."""

    @field_validator("resolution")
    @classmethod
    def _resolution_is_valid(cls, value: str) -> str:
        parse_resolution(value)
        return value


class AdamWSettings(Section):
    """AdamW (torch)."""

    beta1: float = Field(default=0.9, ge=0, lt=1)
    """First-moment decay."""
    beta2: float = Field(default=0.999, ge=0, lt=1)
    """Second-moment decay."""
    eps: float = Field(default=1e-8, gt=0)
    """Denominator epsilon."""
    weight_decay: float = Field(default=0.01, ge=0)
    """Decoupled weight decay."""


class AdamW8bitSettings(AdamWSettings):
    """AdamW with 8-bit state (bitsandbytes)."""


class AdafactorSettings(Section):
    """Adafactor (transformers)."""

    relative_step: bool = False
    """Let Adafactor pick its own LR (then use scheduler 'adafactor')."""
    scale_parameter: bool = False
    """Scale the LR by the parameter's RMS."""
    warmup_init: bool = False
    """Adafactor's own warmup (with relative_step)."""
    weight_decay: float = Field(default=0.0, ge=0)
    """Weight decay."""


class ProdigySettings(Section):
    """Prodigy (prodigyopt): adapts its own step size; use learning_rate = 1."""

    beta1: float = Field(default=0.9, ge=0, lt=1)
    """First-moment decay."""
    beta2: float = Field(default=0.999, ge=0, lt=1)
    """Second-moment decay."""
    d_coef: float = Field(default=1.0, gt=0)
    """Multiplier of the estimated step size."""
    weight_decay: float = Field(default=0.01, ge=0)
    """Weight decay."""
    use_bias_correction: bool = True
    """Adam-style bias correction."""
    safeguard_warmup: bool = True
    """Avoid over-estimating the step size during warmup."""


class LionSettings(Section):
    """Lion (lion-pytorch): use a 3-10x lower LR than AdamW."""

    beta1: float = Field(default=0.9, ge=0, lt=1)
    """Update interpolation."""
    beta2: float = Field(default=0.99, ge=0, lt=1)
    """Momentum decay."""
    weight_decay: float = Field(default=0.01, ge=0)
    """Weight decay."""


class Lion8bitSettings(LionSettings):
    """Lion with 8-bit state (bitsandbytes)."""


class SGDSettings(Section):
    """SGD (torch)."""

    momentum: float = Field(default=0.0, ge=0, lt=1)
    """Momentum; 0 = no state."""
    nesterov: bool = False
    """Nesterov momentum."""
    weight_decay: float = Field(default=0.0, ge=0)
    """Weight decay."""


class ScheduleFreeAdamWSettings(Section):
    """Schedule-free AdamW (schedulefree): use scheduler 'constant'."""

    beta1: float = Field(default=0.9, ge=0, lt=1)
    """Interpolation."""
    beta2: float = Field(default=0.999, ge=0, lt=1)
    """Second-moment decay."""
    weight_decay: float = Field(default=0.0, ge=0)
    """Weight decay."""
    warmup_steps: int = Field(default=0, ge=0)
    """Schedule-free's own warmup steps."""


OPTIMIZER_SETTINGS: dict[OptimizerName, type[Section]] = {
    OptimizerName.ADAMW: AdamWSettings,
    OptimizerName.ADAMW8BIT: AdamW8bitSettings,
    OptimizerName.ADAFACTOR: AdafactorSettings,
    OptimizerName.PRODIGY: ProdigySettings,
    OptimizerName.LION: LionSettings,
    OptimizerName.LION8BIT: Lion8bitSettings,
    OptimizerName.SGD: SGDSettings,
    OptimizerName.SCHEDULE_FREE_ADAMW: ScheduleFreeAdamWSettings,
}
"""Each optimizer's settings model."""


class OptimizerSettingsTables(Section):
    """Each optimizer's own settings, kept when you switch optimizer so switching back restores them."""

    adamw: AdamWSettings | None = None
    """Settings of adamw."""
    adamw8bit: AdamW8bitSettings | None = None
    """Settings of adamw8bit."""
    adafactor: AdafactorSettings | None = None
    """Settings of adafactor."""
    prodigy: ProdigySettings | None = None
    """Settings of prodigy."""
    lion: LionSettings | None = None
    """Settings of lion."""
    lion8bit: Lion8bitSettings | None = None
    """Settings of lion8bit."""
    sgd: SGDSettings | None = None
    """Settings of sgd."""
    schedule_free_adamw: ScheduleFreeAdamWSettings | None = None
    """Settings of schedule_free_adamw."""


class OptimizerConfig(Section):
    """Optimizer, global learning rate and per-optimizer settings."""

    name: OptimizerName = OptimizerName.ADAMW
    """Optimizer: adamw, adamw8bit, adafactor, prodigy, lion, lion8bit, sgd, schedule_free_adamw."""
    learning_rate: LearningRate = 1e-4
    """Global learning rate; parts without their own learning_rate use it."""
    settings: OptimizerSettingsTables = Field(default_factory=OptimizerSettingsTables)
    """Per-optimizer settings tables, e.g. [optimizer.settings.adamw]."""

    def active_settings(self) -> Section:
        """The settings of the chosen optimizer (its defaults when its table is absent)."""
        return self.settings_for(self.name)

    def settings_for(self, name: OptimizerName) -> Section:
        """The stored settings of optimizer `name`, or its defaults."""
        stored = getattr(self.settings, name.value)
        return stored if stored is not None else OPTIMIZER_SETTINGS[name]()


class SchedulerConfig(Section):
    """Learning-rate schedule."""

    name: SchedulerName = SchedulerName.CONSTANT
    """constant, linear, cosine, cosine_with_restarts, polynomial or adafactor."""
    warmup: int | float = 0
    """Warmup: an integer = steps, a number between 0 and 1 = fraction of all steps."""
    cycles: int = Field(default=1, ge=1, le=1000)
    """Restarts for cosine_with_restarts / power for polynomial."""
    min_lr_factor: float = Field(default=0.0, ge=0, le=1)
    """Floor of the decayed LR as a fraction of the peak (cosine, linear, polynomial)."""

    @field_validator("warmup", mode="before")
    @classmethod
    def _warmup_is_valid(cls, value: object) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{value!r} is not a number; use an integer step count or a number between 0 and 1")
        if isinstance(value, int):
            if value < 0:
                raise ValueError(f"{value} steps is negative; use 0 or more steps")
        elif not 0 < value < 1:
            raise ValueError(f"{value} is not a fraction; use an integer step count or a number between 0 and 1")
        return value


class PartConfig(Section):
    """One model part (the denoiser or a text encoder): its weight dtype, and whether, how long and at which LR it trains."""

    train: bool = True
    """Train this part (LoRA adapters, or full weights for finetune)."""
    learning_rate: LearningRate | None = None
    """This part's learning rate; absent = optimizer.learning_rate."""
    train_for: int = Field(default=0, ge=0)
    """Train for this many units, then freeze (with train_for_unit epochs or steps)."""
    train_for_unit: TrainForUnit = TrainForUnit.ALWAYS
    """epochs, steps, never or always (the whole run)."""
    dtype: WeightDtype = WeightDtype.FLOAT16
    """Storage dtype of its weights (float32, float16, bfloat16, float8, nf4)."""

    def trains_at(self, step: int, epoch: int) -> bool:
        """Whether this part trains at a given 0-based step and epoch."""
        if not self.train or self.train_for_unit is TrainForUnit.NEVER:
            return False
        if self.train_for_unit is TrainForUnit.STEPS:
            return step < self.train_for
        if self.train_for_unit is TrainForUnit.EPOCHS:
            return epoch < self.train_for
        return True


class PartsConfig(Section):
    """Settings per model part. A family has the parts models/families.py lists for it: SD 1/2 the denoiser and one
    text encoder, SDXL two text encoders; PixArt's T5 never trains (only its dtype counts)."""

    denoiser: PartConfig = Field(default_factory=PartConfig)
    """The UNet (Stable Diffusion), transformer (PixArt, FLUX.1, Chroma) or prior (Stable Cascade stage C)."""
    text_encoder: PartConfig = Field(default_factory=lambda: PartConfig(train=False))
    """The first text encoder (FLUX.1: CLIP-L; Chroma: T5-XXL)."""
    text_encoder_2: PartConfig = Field(default_factory=lambda: PartConfig(train=False))
    """The second text encoder (SDXL: OpenCLIP-bigG; FLUX.1: T5-XXL)."""

    @model_validator(mode="before")
    @classmethod
    def _text_encoders_train_only_when_asked(cls, data: Any) -> Any:
        """A text encoder's table that does not set `train` leaves it frozen (the denoiser's trains)."""
        if not isinstance(data, dict):
            return data
        frozen = {name: {"train": False, **table} for name, table in data.items()
                  if name != "denoiser" and isinstance(table, dict) and "train" not in table}
        return {**data, **frozen}


class OffloadConfig(Section):
    """Flow families, LoRA: the transformer's blocks wait in pinned CPU RAM and go to the GPU for their forward and backward."""

    enabled: bool = False
    """Offload when VRAM is short (costs copy time per step: see the estimate); needs training.gradient_checkpointing."""
    blocks_per_group: int = Field(default=1, ge=1, le=64)
    """Blocks copied to the GPU together: more = fewer, larger copies and more VRAM."""
    use_stream: bool = False
    """Prefetch: copy the next group while the current one computes (faster; two groups on the GPU at once)."""


class FlowConfig(Section):
    """Flow-matching training (FLUX.1, Chroma): how noise levels are drawn and what the transformer is told."""

    timestep_sampling: TimestepSampling = TimestepSampling.LOGIT_NORMAL
    """uniform, logit_normal (mean and std below) or sigmoid (sigmoid of scale x a normal draw)."""
    logit_mean: float = Field(default=0.0, ge=-5, le=5)
    """logit_normal: mean of the normal before the sigmoid (> 0 favours noisier levels)."""
    logit_std: float = Field(default=1.0, gt=0, le=10)
    """logit_normal: its standard deviation."""
    sigmoid_scale: float = Field(default=1.0, gt=0, le=10)
    """sigmoid: the scale of the normal draw."""
    shift: float | None = Field(default=None, gt=0, le=100)
    """Fixed shift of the noise levels (1 = none, 3 = FLUX.1's fixed one); absent = the base model's scheduler decides:
    FLUX.1-dev's and Chroma's resolution-dependent shift, schnell's none."""
    guidance: float = Field(default=1.0, ge=0, le=20)
    """FLUX.1-dev: the guidance value given to its guidance embedding while training."""
    max_sequence_length: int | None = Field(default=None, ge=16, le=512)
    """Text tokens per caption (T5 for FLUX.1 and Chroma, Qwen for Z-Image and Qwen-Image); absent = the family's (512; 256 for schnell)."""
    offload: OffloadConfig = Field(default_factory=OffloadConfig)
    """Block offload of the transformer to CPU RAM ([flow.offload])."""


class LoraConfig(Section):
    """LoRA / LoHa / LoKr adapter settings (peft)."""

    type: LoraType = LoraType.LORA
    """lora, loha or lokr."""
    rank: int = Field(default=16, ge=1, le=1024)
    """Adapter rank (network dim)."""
    alpha: float = Field(default=16.0, gt=0, le=4096)
    """Scale: the update is multiplied by alpha / rank."""
    dropout: Probability = 0.0
    """Dropout on the adapter input."""
    targets: LoraTargets = LoraTargets.ATTENTION_MLP
    """attention, attention+mlp, or full (kohya-style all linear and 1x1 conv in transformer blocks)."""


class EmbeddingConfig(Section):
    """Textual inversion settings."""

    placeholder_token: str = Field(default="<sks>", min_length=1, pattern=r"^\S+$")
    """The new token you write in prompts."""
    num_vectors: int = Field(default=1, ge=1, le=75)
    """Vectors per token (more = more capacity, uses more of the prompt)."""
    init_text: str = Field(default="*", min_length=1)
    """Text whose embedding the vectors start from."""


class InpaintConfig(Section):
    """Inpainting masks."""

    use_mask_files: bool = True
    """Use an image's -masklabel.png as its inpainting mask when present."""
    random_mask_kind: RandomMaskKind = RandomMaskKind.BOTH
    """Random masks for images without a mask file: rectangles, strokes or both."""


class BackupConfig(Section):
    """Backups: everything needed to resume exactly."""

    every: int = Field(default=0, ge=0)
    """Back up every N units; 0 = only at stop and end."""
    unit: CadenceUnit = CadenceUnit.EPOCHS
    """steps, epochs or minutes."""
    rolling_count: int = Field(default=3, ge=1, le=1000)
    """Keep this many newest backups."""
    before_save: bool = True
    """Also back up right before each periodic save."""


class SaveConfig(Section):
    """Intermediate model saves."""

    every: int = Field(default=0, ge=0)
    """Save the model every N units; 0 = only at the end."""
    unit: CadenceUnit = CadenceUnit.EPOCHS
    """steps, epochs or minutes."""
    filename_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    """File name prefix of saved models; empty = the run name."""


class DistributedConfig(Section):
    """Multi-GPU training (accelerate)."""

    num_processes: int = Field(default=1, ge=1, le=64)
    """Processes (one per GPU); above 1 launches through `accelerate launch`."""
    mixed_precision: MixedPrecision | None = None
    """accelerate mixed precision (no, fp16, bf16); absent = from model.train_dtype."""
    timeout_minutes: float = Field(default=30.0, gt=0, le=1440)
    """How long a process waits for the others at a collective before the run fails naming the phase (raise it
    when the main process samples or backs up for longer)."""


class WandbConfig(Section):
    """Weights & Biases, a second logger beside TensorBoard (pip install 'tui-trainer[wandb]')."""

    enabled: bool = False
    """Log scalars, samples and the config to wandb; offline (into the run folder's wandb/) when no API key is set."""
    project: str = Field(default="tui-trainer", min_length=1)
    """wandb project."""
    entity: str | None = None
    """wandb team or user; absent = your default entity."""


class NotifyConfig(Section):
    """Notifications the trainer sends (apprise URLs), and the TUI's terminal alert."""

    urls: list[str] = Field(default_factory=list)
    """apprise URLs (ntfy://, discord://, tgram://, mailto://, json:// ...); write tokens as ${ENV_VAR}: they are read
    when sending and never stored."""
    on: list[NotifyOn] = Field(default_factory=lambda: [NotifyOn.FINISHED, NotifyOn.FAILED])
    """When to notify: finished, failed, stopped, sample (with the image where the service allows), backup."""
    terminal: bool = True
    """A TUI watching the run rings the terminal bell and sends a desktop notification (OSC 9 / 777) when it ends."""


METHOD_OUTPUT_FORMATS: dict[Method, tuple[OutputFormat, ...]] = {
    Method.LORA: (OutputFormat.KOHYA, OutputFormat.DIFFUSERS, OutputFormat.COMFYUI),
    Method.EMBEDDING: (OutputFormat.A1111,),
    Method.FINETUNE: (OutputFormat.DIFFUSERS, OutputFormat.SINGLE_FILE),
    Method.INPAINT: (OutputFormat.KOHYA, OutputFormat.DIFFUSERS, OutputFormat.SINGLE_FILE),
}
"""Output formats each method can write; the first is the default."""


class TrainConfig(Section):
    """A whole run: everything needed to reproduce it."""

    version: int = CONFIG_VERSION
    """Config file format version."""
    method: Method = Method.LORA
    """lora, embedding, finetune or inpaint."""
    model: ModelConfig
    """Base model."""
    workspace: WorkspaceConfig = Field(default_factory=WorkspaceConfig)
    """Folders and outputs."""
    concepts: list[ConceptConfig] = Field(default_factory=list)
    """Datasets ([[concepts]] tables)."""
    samples: list[SampleConfig] = Field(default_factory=list)
    """Sample prompts ([[samples]] tables)."""
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    """Sampling cadence."""
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    """Validation loss cadence (on the type = "validation" concepts)."""
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    """Training loop."""
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    """Optimizer."""
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    """LR schedule."""
    parts: PartsConfig = Field(default_factory=PartsConfig)
    """Per model part: dtype and training ([parts.denoiser], [parts.text_encoder], ...)."""
    lora: LoraConfig = Field(default_factory=LoraConfig)
    """LoRA settings (method lora, inpaint)."""
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    """Embedding settings (method embedding)."""
    inpaint: InpaintConfig = Field(default_factory=InpaintConfig)
    """Inpainting settings (method inpaint)."""
    backup: BackupConfig = Field(default_factory=BackupConfig)
    """Backup cadence."""
    save: SaveConfig = Field(default_factory=SaveConfig)
    """Save cadence."""
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    """Multi-GPU."""
    flow: FlowConfig = Field(default_factory=FlowConfig)
    """Flow-matching settings (FLUX.1, Chroma)."""
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    """Notifications."""
    wandb: WandbConfig = Field(default_factory=WandbConfig)
    """Weights & Biases logging."""

    @field_validator("version")
    @classmethod
    def _version_is_current(cls, value: int) -> int:
        if value != CONFIG_VERSION:
            raise ValueError(f"version {value} is not supported; this tui-trainer reads version {CONFIG_VERSION}")
        return value

    @field_validator("workspace")
    @classmethod
    def _output_format_fits_method(cls, workspace: WorkspaceConfig, info: ValidationInfo) -> WorkspaceConfig:
        method = info.data.get("method")
        fmt = workspace.output_format
        if method is None or fmt is None or fmt in METHOD_OUTPUT_FORMATS[method]:
            return workspace
        names = ", ".join(f.value for f in METHOD_OUTPUT_FORMATS[method])
        raise PydanticCustomError(
            "output_format", "'{fmt}' does not fit method '{method}'; allowed: {names}",
            {"fmt": fmt.value, "method": method.value, "names": names},
        )

    @property
    def output_format(self) -> OutputFormat:
        """The configured output format, or the method's default."""
        return self.workspace.output_format or METHOD_OUTPUT_FORMATS[self.method][0]

    def learning_rate_for(self, part: PartConfig) -> float:
        """A part's learning rate (its own, else the global one)."""
        return part.learning_rate if part.learning_rate is not None else self.optimizer.learning_rate
