"""Model family registry: one table keyed by Family, the single source of truth for every family's facts.

Parameter counts, Adafactor state sizes, small-tensor counts and adapter layer shapes were taken from the
published architectures built on torch's meta device (tests/test_families.py rebuilds them and checks
every number). Pure data: no torch import.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from tui_trainer.config.enums import Family, LoraTargets, LoraType, Method, PredictionType
from tui_trainer.config.schema import TrainConfig

BNB_MIN_8BIT_NUMEL = 4096
"""bitsandbytes keeps 32-bit optimizer state for tensors with fewer elements than this."""


class PartRole(StrEnum):
    """What a model part does."""

    DENOISER = "denoiser"
    TEXT_ENCODER = "text_encoder"
    AUTOENCODER = "autoencoder"


@dataclass(frozen=True)
class LayerShape:
    """`count` layers peft can adapt, each mapping fan_in (in features x kernel area) to fan_out."""

    fan_in: int
    fan_out: int
    count: int


@dataclass(frozen=True)
class TensorShape:
    """`count` trainable 2-D tensors of rows x cols."""

    rows: int
    cols: int
    count: int
    zero_init: bool = False
    """peft initialises it to zeros (so the adapter starts as a no-op)."""

    @property
    def numel(self) -> int:
        """Elements of all `count` tensors."""
        return self.rows * self.cols * self.count


def factorization(dimension: int) -> tuple[int, int]:
    """Two factors of `dimension` closest to its square root, smaller first (peft LoKr, decompose_factor=-1)."""
    small, large = 1, dimension
    while small < large:
        candidate = small + 1
        while dimension % candidate:
            candidate += 1
        partner = dimension // candidate
        if candidate + partner > small + large:
            break
        small, large = candidate, partner
    return min(small, large), max(small, large)


def _lora_tensors(layer: LayerShape, rank: int) -> tuple[TensorShape, ...]:
    return TensorShape(rank, layer.fan_in, layer.count), TensorShape(layer.fan_out, rank, layer.count, zero_init=True)


def _loha_tensors(layer: LayerShape, rank: int) -> tuple[TensorShape, ...]:
    first = (TensorShape(layer.fan_out, rank, layer.count), TensorShape(rank, layer.fan_in, layer.count))
    return *first, first[0], replace(first[1], zero_init=True)


def _lokr_tensors(layer: LayerShape, rank: int) -> tuple[TensorShape, ...]:
    out_small, out_large = factorization(layer.fan_out)
    in_small, in_large = factorization(layer.fan_in)
    kron_left = TensorShape(out_small, in_small, layer.count, zero_init=True)
    if rank >= max(out_large, in_large) / 2:
        return kron_left, TensorShape(out_large, in_large, layer.count)
    return kron_left, TensorShape(out_large, rank, layer.count), TensorShape(rank, in_large, layer.count)


ADAPTER_TENSORS = {
    LoraType.LORA: _lora_tensors,
    LoraType.LOHA: _loha_tensors,
    LoraType.LOKR: _lokr_tensors,
}
"""Trainable tensors peft (default config) creates for one adapted layer shape, by adapter type."""


@dataclass(frozen=True)
class BlockStack:
    """`count` alike blocks of one of a denoiser's block lists (what flow.offload moves between RAM and GPU)."""

    name: str
    """The block list's attribute name (transformer_blocks, single_transformer_blocks, layers, ...)."""
    count: int
    params: int
    """Parameters of one block."""
    linear_weight_params: int
    """Of those, nn.Linear weights (what nf4 quantises)."""
    rounded_linear_params: int = 0
    """The Linear weights' element counts, each tensor's rounded up to a power of two: torch's pinned-memory allocator
    rounds every allocation so, and the offloaded blocks wait in pinned memory."""
    rounded_other_params: int = 0
    """The same for the block's other tensors (norms, biases)."""


@dataclass(frozen=True)
class PartSpec:
    """One model part (denoiser, text encoder or autoencoder) of a family."""

    name: str
    """Pipeline component name (unet, transformer, prior, text_encoder, text_encoder_2, vae)."""
    role: PartRole
    architecture: str
    """Constructor that builds it (diffusers / transformers class)."""
    params: int
    small_tensor_params: int
    """Parameters in tensors under BNB_MIN_8BIT_NUMEL elements (8-bit optimizers keep 32-bit state for them)."""
    factored_state_elements: int
    """Adafactor's second-moment elements over all tensors (row + column factors of every >= 2-D tensor)."""
    config_section: str = ""
    """Its [parts.*] table in the config (denoiser, text_encoder, text_encoder_2: dtype and training); empty = none
    (the autoencoder: model.vae_dtype)."""
    embedding_dim: int = 0
    """Token embedding width (one textual-inversion vector), text encoders only."""
    lora_target_modules: dict[LoraTargets, tuple[str, ...]] = field(default_factory=dict)
    """peft target_modules per targets preset."""
    lora_layers: dict[LoraTargets, tuple[LayerShape, ...]] = field(default_factory=dict)
    """Shapes of the layers those target names select."""
    linear_weight_params: int = 0
    """Parameters in nn.Linear weights: the ones nf4 storage quantises (convs, norms, embeddings stay 16-bit)."""
    verified: bool = True
    """The counts are checked against a meta-device build in the tests."""
    title: str = ""
    """What the TUI calls it; empty = its name in words."""
    trainable: bool = True
    """Its [parts.*] table can train it (False: only its dtype counts, e.g. PixArt's frozen T5)."""
    blocks: tuple[BlockStack, ...] = ()
    """The denoiser's block lists, for block offload (flow families); empty = it has none to offload."""

    @property
    def label(self) -> str:
        """The TUI's name of the part: UNet, Transformer, Text encoder 2, ..."""
        return self.title or self.name.replace("_", " ").capitalize()

    def lora_params_per_rank(self, targets: LoraTargets) -> int:
        """LoRA parameters per unit of rank for a targets preset (0 when the part takes no adapters)."""
        return sum((layer.fan_in + layer.fan_out) * layer.count for layer in self.lora_layers.get(targets, ()))

    def adapter_tensors(self, lora_type: LoraType, targets: LoraTargets, rank: int) -> tuple[TensorShape, ...]:
        """Every trainable tensor an adapter of this type, targets preset and rank adds to the part."""
        make = ADAPTER_TENSORS[lora_type]
        return tuple(tensor for layer in self.lora_layers.get(targets, ()) for tensor in make(layer, rank))


@dataclass(frozen=True)
class SelfAttentionLevel:
    """`count` self-attention layers with `heads` heads on a grid `downscale` times smaller than the latent."""

    downscale: int
    heads: int
    count: int


@dataclass(frozen=True)
class ActivationProfile:
    """Training-step memory beyond the weights, per sample and latent pixel, at 16-bit compute with SDPA.

    Measured on the CPU with benchmarks/activation_profile.py (see docs/vram.md): the peak bytes created
    during a forward+backward with frozen weights and LoRA on attention+mlp, minus the gradients.
    """

    bytes_per_latent_pixel: int
    """No gradient checkpointing."""
    checkpointed_bytes_per_latent_pixel: int
    """With gradient checkpointing."""
    self_attention: tuple[SelfAttentionLevel, ...]
    """Self-attention layers (for the attention matrices eager attention materialises)."""
    trained_factor: float = 1.15
    """Multiplier when the denoiser's own weights train (conv inputs are saved too); an assumption, unmeasured."""
    measured: bool = True
    """False: derived from the architecture (block count x tokens x width), not yet measured (the estimate says so)."""


@dataclass(frozen=True)
class FamilySpec:
    """Everything the estimator, the bucketer and the trainer need to know about a family."""

    family: Family
    label: str
    parts: dict[str, PartSpec]
    """By pipeline component name; the denoiser first."""
    default_resolution: int
    latent_downscale: float
    """Image pixels per latent pixel along a side."""
    latent_channels: int
    bucket_step: int
    """Default bucket side granularity in px."""
    prediction_type: PredictionType
    vae_scaling_factor: float | None
    """Latent scaling factor; None = latents are used as the encoder gives them."""
    text_tokens: int
    """Text-encoder sequence length."""
    activations: ActivationProfile
    encode_bytes_per_pixel: float
    """Peak bytes per image pixel of one 16-bit no-grad autoencoder encode (measured, docs/vram.md)."""
    decode_bytes_per_pixel: float
    """Peak bytes per image pixel of one 16-bit no-grad decode to pixels."""
    variant: str = ""
    added_conditions: tuple[str, ...] = ()
    """The denoiser's extra conditioning inputs (diffusers' added_cond_kwargs): text_embeds = pooled text,
    time_ids = original size, crop top-left and target size of each image (SDXL micro-conditioning)."""
    single_file_layout: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Original (A1111 / ComfyUI) single-file checkpoint: part name -> (key layout, key prefix). Flow families: the
    transformer ("unet") alone, without prefix (BFL's and ComfyUI's diffusion-model files)."""
    embedding_keys: dict[str, str] = field(default_factory=dict)
    """A1111 / ComfyUI textual-inversion file: text encoder part -> tensor key."""
    own_fields: tuple[str, ...] = ()
    """Config keys that mean something only for this family; the TUI leaves them out for other families."""
    methods: tuple[Method, ...] = tuple(Method)
    """The training methods it has (validation refuses the others)."""
    pipeline: str = ""
    """The diffusers pipeline class of its base models (for messages and docs)."""
    frees_cached_text_encoders: bool = False
    """Once text outputs are cached, the text encoders are freed: the samples' prompts are encoded with the captions
    (flow families, whose T5 / Qwen encoders are many GB); otherwise they wait in RAM for the samples."""
    comfyui_lora_layout: str = ""
    """Key layout of its LoRA in ComfyUI's own names (output_format 'comfyui'; train/original_layout.py
    ORIGINAL_KEY_LAYOUTS); empty = it has none."""

    @property
    def denoiser(self) -> PartSpec:
        """The UNet / transformer / prior."""
        return next(part for part in self.parts.values() if part.role is PartRole.DENOISER)

    @property
    def text_encoders(self) -> tuple[PartSpec, ...]:
        """The text encoders, in pipeline order."""
        return tuple(part for part in self.parts.values() if part.role is PartRole.TEXT_ENCODER)

    @property
    def trainable_parts(self) -> tuple[PartSpec, ...]:
        """The parts a [parts.*] table can train, in pipeline order."""
        return tuple(part for part in self.parts.values() if part.config_section and part.trainable)

    @property
    def configured_parts(self) -> tuple[PartSpec, ...]:
        """The parts with a [parts.*] table (their dtype), in pipeline order."""
        return tuple(part for part in self.parts.values() if part.config_section)

    @property
    def autoencoder(self) -> PartSpec:
        """The VAE (or Stable Cascade's EfficientNet encoder)."""
        return next(part for part in self.parts.values() if part.role is PartRole.AUTOENCODER)

    @property
    def lora_target_modules(self) -> dict[LoraTargets, dict[str, tuple[str, ...]]]:
        """peft target_modules per targets preset and part name, for every part that takes adapters."""
        return {
            targets: {name: part.lora_target_modules[targets] for name, part in self.parts.items() if part.lora_target_modules}
            for targets in LoraTargets
        }

    def latent_pixels(self, width: int, height: int) -> int:
        """Latent pixels of an image of width x height px."""
        return max(1, round(width / self.latent_downscale)) * max(1, round(height / self.latent_downscale))


def _presets(attention: tuple[str, ...], mlp: tuple[str, ...], full_extra: tuple[str, ...]) -> dict[LoraTargets, tuple[str, ...]]:
    return {
        LoraTargets.ATTENTION: attention,
        LoraTargets.ATTENTION_MLP: attention + mlp,
        LoraTargets.FULL: attention + mlp + full_extra,
    }


UNET_TARGETS = _presets(("to_q", "to_k", "to_v", "to_out.0"), ("ff.net.0.proj", "ff.net.2"), ("proj_in", "proj_out"))
"""UNet2DConditionModel: attention, + feed-forward, + the 1x1 projections around each transformer (kohya 'full')."""
CLIP_TARGETS = _presets(("q_proj", "k_proj", "v_proj", "out_proj"), ("fc1", "fc2"), ())
"""CLIPTextModel: attention, + MLP; 'full' is kohya's text-encoder set, which equals attention+mlp."""
PIXART_TARGETS = _presets(
    ("to_q", "to_k", "to_v", "to_out.0"),
    ("ff.net.0.proj", "ff.net.2"),
    ("caption_projection.linear_1", "caption_projection.linear_2", "adaln_single.linear", "proj_out"),
)
"""PixArtTransformer2DModel: 'full' adds the caption projection, the shared adaLN projection and the output layer."""
CASCADE_TARGETS = _presets(
    ("to_q", "to_k", "to_v", "to_out.0"),
    ("channelwise.0", "channelwise.4"),
    ("kv_mapper.1", "mapper", "mapper_sca", "mapper_crp"),
)
"""StableCascadeUNet: attention, + the ResBlocks' channel MLPs, + the conditioning mappers."""


FLUX_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
FLUX_MLP = ("ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2", "proj_mlp", "proj_out")
FLUX_TARGETS = _presets(FLUX_ATTENTION, FLUX_MLP, ("norm1.linear", "norm1_context.linear", "norm.linear", "norm_out.linear",
                                                   "x_embedder", "context_embedder"))
"""FluxTransformer2DModel: both streams' attention, + feed-forwards and the single blocks' MLP / output projections
(proj_out also selects the final projection), + the adaLN modulation and input embedders."""
CHROMA_TARGETS = _presets(FLUX_ATTENTION, FLUX_MLP, ("x_embedder", "context_embedder"))
"""ChromaTransformer2DModel: FLUX.1's blocks without per-block modulation layers (its distilled guidance layer makes them)."""


def _by_preset(attention, attention_mlp, full) -> dict[LoraTargets, tuple[LayerShape, ...]]:
    """Layer shapes per targets preset, from (fan_in, fan_out, count) triples."""
    return {
        preset: tuple(LayerShape(*triple) for triple in triples)
        for preset, triples in zip(LoraTargets, (attention, attention_mlp, full), strict=True)
    }


def _clip_layers(hidden: int, intermediate: int, layers: int) -> dict[LoraTargets, tuple[LayerShape, ...]]:
    attention = ((hidden, hidden, 4 * layers),)
    with_mlp = (*attention, (hidden, intermediate, layers), (intermediate, hidden, layers))
    return _by_preset(attention, with_mlp, with_mlp)


def _clip_part(name: str, params: int, small: int, factored: int, linear: int, hidden: int, intermediate: int,
               layers: int, architecture: str = "transformers.CLIPTextModel") -> PartSpec:
    return PartSpec(name, PartRole.TEXT_ENCODER, architecture, params, small, factored, name, hidden, CLIP_TARGETS,
                    _clip_layers(hidden, intermediate, layers), linear_weight_params=linear)


def _unet(params: int, small: int, factored: int, linear: int, layers: dict[LoraTargets, tuple[LayerShape, ...]]) -> PartSpec:
    return PartSpec("unet", PartRole.DENOISER, "diffusers.UNet2DConditionModel", params, small, factored, "denoiser", 0,
                    UNET_TARGETS, layers, linear_weight_params=linear, title="UNet")


def _cascade_prior(params: int, small: int, factored: int, linear: int,
                   layers: dict[LoraTargets, tuple[LayerShape, ...]]) -> PartSpec:
    return PartSpec("prior", PartRole.DENOISER, "diffusers.StableCascadeUNet", params, small, factored, "denoiser", 0,
                    CASCADE_TARGETS, layers, linear_weight_params=linear, title="Prior (stage C)")


SD_VAE = PartSpec("vae", PartRole.AUTOENCODER, "diffusers.AutoencoderKL", 83_653_863, 72_935, 54_838_327,
                  linear_weight_params=2_097_152)
CLIP_L = _clip_part("text_encoder", 123_060_480, 121_344, 338_253, 84_934_656, 768, 3072, 12)
OPEN_CLIP_H = _clip_part("text_encoder", 340_387_840, 214_016, 783_693, 289_406_976, 1024, 4096, 23)
OPEN_CLIP_BIG_G = _clip_part("text_encoder_2", 694_659_840, 371_200, 1_326_925, 630_784_000, 1280, 5120, 32,
                             "transformers.CLIPTextModelWithProjection")
T5_XXL = PartSpec("text_encoder", PartRole.TEXT_ENCODER, "transformers.T5EncoderModel", 4_762_310_656, 2_048, 2_055_648,
                  "text_encoder", 4096, linear_weight_params=4_630_511_616, trainable=False)
"""Frozen: PixArt trains only its transformer."""
EFFICIENTNET_V2_S = PartSpec("effnet", PartRole.AUTOENCODER, "EfficientNetV2-S features + 1x1 mapper", 20_197_968, 0, 0,
                             verified=False)
"""torchvision's published efficientnet_v2_s count (21,458,488) minus its classifier, plus the 1280->16 mapper."""

SD15_UNET = _unet(859_520_964, 356_804, 457_589_700, 270_049_280, _by_preset(
    ((320, 320, 30), (640, 640, 30), (768, 320, 10), (768, 640, 10), (768, 1280, 12), (1280, 1280, 36)),
    ((320, 320, 30), (320, 2560, 5), (640, 640, 30), (640, 5120, 5), (768, 320, 10), (768, 640, 10), (768, 1280, 12),
     (1280, 320, 5), (1280, 1280, 36), (1280, 10240, 6), (2560, 640, 5), (5120, 1280, 6)),
    ((320, 320, 40), (320, 2560, 5), (640, 640, 40), (640, 5120, 5), (768, 320, 10), (768, 640, 10), (768, 1280, 12),
     (1280, 320, 5), (1280, 1280, 48), (1280, 10240, 6), (2560, 640, 5), (5120, 1280, 6)),
))
SD21_UNET = _unet(865_910_724, 356_804, 408_086_212, 301_219_840, _by_preset(
    ((320, 320, 30), (640, 640, 30), (1024, 320, 10), (1024, 640, 10), (1024, 1280, 12), (1280, 1280, 36)),
    ((320, 320, 30), (320, 2560, 5), (640, 640, 30), (640, 5120, 5), (1024, 320, 10), (1024, 640, 10),
     (1024, 1280, 12), (1280, 320, 5), (1280, 1280, 36), (1280, 10240, 6), (2560, 640, 5), (5120, 1280, 6)),
    ((320, 320, 40), (320, 2560, 5), (640, 640, 40), (640, 5120, 5), (1024, 320, 10), (1024, 640, 10),
     (1024, 1280, 12), (1280, 320, 5), (1280, 1280, 48), (1280, 10240, 6), (2560, 640, 5), (5120, 1280, 6)),
))
SDXL_UNET = _unet(2_567_463_684, 917_764, 244_330_500, 2_232_647_680, _by_preset(
    ((640, 640, 60), (1280, 1280, 360), (2048, 640, 20), (2048, 1280, 120)),
    ((640, 640, 60), (640, 5120, 10), (1280, 1280, 360), (1280, 10240, 60), (2048, 640, 20), (2048, 1280, 120),
     (2560, 640, 10), (5120, 1280, 60)),
    ((640, 640, 70), (640, 5120, 10), (1280, 1280, 372), (1280, 10240, 60), (2048, 640, 20), (2048, 1280, 120),
     (2560, 640, 10), (5120, 1280, 60)),
))
PIXART_TRANSFORMER = PartSpec(
    "transformer", PartRole.DENOISER, "diffusers.PixArtTransformer2DModel", 611_349_152, 299_936, 1_347_562, "denoiser", 0,
    PIXART_TARGETS, _by_preset(
        ((1152, 1152, 224),),
        ((1152, 1152, 224), (1152, 4608, 28), (4608, 1152, 28)),
        ((1152, 32, 1), (1152, 1152, 225), (1152, 4608, 28), (1152, 6912, 1), (4096, 1152, 1), (4608, 1152, 28)),
    ),
    linear_weight_params=610_701_312,
)
CASCADE_PRIOR = _cascade_prior(3_589_103_632, 925_712, 24_440_208, 3_576_168_448, _by_preset(
    ((2048, 2048, 256),),
    ((2048, 2048, 256), (2048, 8192, 63), (4096, 8192, 1), (8192, 2048, 64)),
    ((64, 4096, 192), (2048, 2048, 320), (2048, 8192, 63), (4096, 8192, 1), (8192, 2048, 64)),
))
CASCADE_PRIOR_LITE = _cascade_prior(1_030_785_040, 645_136, 12_380_496, 1_024_327_680, _by_preset(
    ((1536, 1536, 128),),
    ((1536, 1536, 128), (1536, 6144, 31), (3072, 6144, 1), (6144, 1536, 32)),
    ((64, 3072, 96), (1536, 1536, 160), (1536, 6144, 31), (3072, 6144, 1), (6144, 1536, 32)),
))

_FLUX_ATTENTION_MLP = ((3072, 64, 1), (3072, 3072, 266), (3072, 12288, 76), (12288, 3072, 38), (15360, 3072, 38))


def _flux_transformer(architecture: str, params: int, small: int, factored: int, linear: int, full_extra: tuple) -> PartSpec:
    targets = FLUX_TARGETS if architecture.endswith("FluxTransformer2DModel") else CHROMA_TARGETS
    layers = _by_preset(((3072, 3072, 266),), _FLUX_ATTENTION_MLP, tuple(sorted(_FLUX_ATTENTION_MLP + full_extra)))
    return PartSpec("transformer", PartRole.DENOISER, architecture, params, small, factored, "denoiser", 0, targets, layers,
                    linear_weight_params=linear, title="Transformer")


_FLUX_FULL_EXTRA = ((64, 3072, 1), (3072, 6144, 1), (3072, 9216, 38), (3072, 18432, 38), (4096, 3072, 1))
FLUX1_DEV_TRANSFORMER = _flux_transformer("diffusers.FluxTransformer2DModel", 11_901_408_320, 1_094_720, 8_506_816,
                                          11_898_322_944, _FLUX_FULL_EXTRA)
FLUX1_SCHNELL_TRANSFORMER = _flux_transformer("diffusers.FluxTransformer2DModel", 11_891_178_560, 1_088_576, 8_491_200,
                                              11_888_099_328, _FLUX_FULL_EXTRA)
"""FLUX.1-dev without the guidance embedder."""
CHROMA_TRANSFORMER = _flux_transformer("diffusers.ChromaTransformer2DModel", 8_899_983_424, 1_079_360, 6_310_144,
                                       8_897_888_256, ((64, 3072, 1), (4096, 3072, 1)))
FLUX_VAE = PartSpec("vae", PartRole.AUTOENCODER, "diffusers.AutoencoderKL", 83_819_683, 72_867, 54_948_771,
                    linear_weight_params=2_097_152)
"""SD's VAE layout with 16 latent channels and no quant convs."""
FLUX_CLIP_L = replace(CLIP_L, trainable=False)
FLUX_T5_XXL = replace(T5_XXL, name="text_encoder_2", config_section="text_encoder_2")
"""FluxPipeline's second text encoder. Its file holds 4,893,906,944 values (the token embedding twice); tied in memory."""
FLUX_ACTIVATIONS = ActivationProfile(3_000_000, 190_000, (SelfAttentionLevel(2, 24, 57),), measured=False)
"""57 blocks x (image tokens + text tokens) x 3072 x 16-bit: about 30 saved tensors a block without checkpointing; with it,
each block's input plus one block recomputed. Derived at 1024 px with 512 text tokens; the GPU check is to measure it."""
FLOW_FIELDS = ("flow.timestep_sampling", "flow.logit_mean", "flow.logit_std", "flow.sigmoid_scale", "flow.shift",
               "flow.max_sequence_length", "model.transformer")
"""Config keys of every flow-matching family (their transformers also load from one file: model.transformer)."""
OFFLOAD_FIELDS = ("flow.offload.enabled", "flow.offload.blocks_per_group", "flow.offload.use_stream")
"""Block offload of the transformer to CPU RAM: every flow family's transformer is a stack of blocks."""
FLOW_FIELDS += OFFLOAD_FIELDS
DDPM_FIELDS = ("model.prediction_type", "model.zero_terminal_snr", "training.min_snr_gamma")
"""Config keys of the DDPM (noise / v-prediction) families only."""

SD_UNET_ATTENTION_LEVELS = (SelfAttentionLevel(1, 8, 5), SelfAttentionLevel(2, 8, 5), SelfAttentionLevel(4, 8, 5),
                            SelfAttentionLevel(8, 8, 1))
SD21_ATTENTION_LEVELS = (SelfAttentionLevel(1, 5, 5), SelfAttentionLevel(2, 10, 5), SelfAttentionLevel(4, 20, 5),
                         SelfAttentionLevel(8, 20, 1))
SDXL_ATTENTION_LEVELS = (SelfAttentionLevel(2, 10, 10), SelfAttentionLevel(4, 20, 60))
PIXART_ATTENTION_LEVELS = (SelfAttentionLevel(2, 16, 28),)

CASCADE_TEXT_ENCODER = replace(OPEN_CLIP_BIG_G, name="text_encoder", config_section="text_encoder")
"""Stable Cascade's CLIP bigG with projection: SDXL's second text encoder, first in this pipeline."""

CASCADE_LITE_ACTIVATIONS = ActivationProfile(2_685_200, 384_100, (SelfAttentionLevel(1, 24, 8), SelfAttentionLevel(2, 24, 24)))
CASCADE_SCALE = (2048 / 1536) * (64 / 32)
"""Stage C vs lite: width x blocks. Stage C's activations are scaled from lite's measurement, not measured."""

_SD_VAE_PASSES = {"encode_bytes_per_pixel": 1280.0, "decode_bytes_per_pixel": 1536.0}
_SD_COMMON = {"latent_downscale": 8, "latent_channels": 4, "text_tokens": 77}
_LDM = {"unet": ("ldm_unet", "model.diffusion_model."), "vae": ("ldm_vae", "first_stage_model.")}
"""Key layouts and prefixes of the UNet and VAE in the original Stable Diffusion checkpoints."""

LORA_AND_FINETUNE = (Method.LORA, Method.FINETUNE)
_FLUX_COMMON = {
    "default_resolution": 1024, "latent_downscale": 8, "latent_channels": 16, "bucket_step": 16,
    "prediction_type": PredictionType.FLOW, "vae_scaling_factor": 0.3611, "text_tokens": 512,
    "activations": FLUX_ACTIVATIONS, "methods": LORA_AND_FINETUNE, "frees_cached_text_encoders": True, **_SD_VAE_PASSES,
}
"""FLUX.1 and Chroma: 16-channel latents packed 2 x 2 into tokens (buckets step 16 px), T5 512 tokens."""

QWEN_IMAGE_TARGETS = _presets(
    FLUX_ATTENTION, ("img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2"),
    ("img_mod.1", "txt_mod.1", "img_in", "txt_in", "norm_out.linear", "proj_out"),
)
"""QwenImageTransformer2DModel: both streams' attention (FLUX.1's names), + both streams' feed-forwards, + each block's
image and text modulation, the input projections and the output layer."""
_QWEN_ATTENTION_MLP = ((3072, 3072, 480), (3072, 12288, 120), (12288, 3072, 120))
QWEN_IMAGE_TRANSFORMER = PartSpec(
    "transformer", PartRole.DENOISER, "diffusers.QwenImageTransformer2DModel", 20_430_401_088, 1_889_856, 14_830_016,
    "denoiser", 0, QWEN_IMAGE_TARGETS, _by_preset(
        ((3072, 3072, 480),), _QWEN_ATTENTION_MLP,
        ((64, 3072, 1), (3072, 64, 1), (3072, 3072, 480), (3072, 6144, 1), (3072, 12288, 120), (3072, 18432, 120),
         (3584, 3072, 1), (12288, 3072, 120)),
    ),
    linear_weight_params=20_424_818_688, title="Transformer",
)
QWEN2_5_VL = PartSpec("text_encoder", PartRole.TEXT_ENCODER, "transformers.Qwen2_5_VLForConditionalGeneration",
                      8_292_166_656, 843_776, 4_614_272, "text_encoder", 3584, linear_weight_params=7_744_815_104,
                      trainable=False, title="Text encoder (Qwen2.5-VL-7B)")
"""Frozen: the language model, its LM head and its 677M-parameter vision tower, all loaded by QwenImagePipeline."""
QWEN_IMAGE_VAE = PartSpec("vae", PartRole.AUTOENCODER, "diffusers.AutoencoderKLQwenImage", 126_892_531, 37_171, 89_513_715)
"""Wan 2.1's causal 3-D VAE (one frame per image), 16 channels normalised by latents_mean / latents_std."""
QWEN_IMAGE_ACTIVATIONS = ActivationProfile(3_160_000, 200_000, (SelfAttentionLevel(2, 24, 60),), measured=False)
"""FLUX.1's derivation scaled to 60 double-stream blocks (x 60/57): unmeasured, like FLUX.1's."""
QWEN_IMAGE_VAE_PASSES = {"encode_bytes_per_pixel": 1940.0, "decode_bytes_per_pixel": 3470.0}
"""AutoencoderKLQwenImage, bfloat16, no grad, one frame: measured at 128 and 256 px (docs/vram.md)."""

Z_IMAGE_TARGETS = _presets(("to_q", "to_k", "to_v", "to_out.0"), ("w1", "w2", "w3"),
                           (*(f"{block}.adaLN_modulation.0" for block in range(30)), "all_final_layer.2-1.adaLN_modulation.1",
                            "all_final_layer.2-1.linear", "all_x_embedder.2-1", "cap_embedder.1"))
"""ZImageTransformer2DModel: attention, + the SwiGLU feed-forwards, + the adaLN modulations (blocks' and the final
layer's), the output projection and the image / caption embedders. The blocks' modulation is named with the block number
(30 main blocks; the refiners' numbers are among them): a bare 'adaLN_modulation.0' would also select the final layer's
SiLU, which peft refuses."""
_Z_IMAGE_ATTENTION_MLP = ((3840, 3840, 136), (3840, 10240, 68), (10240, 3840, 34))
Z_IMAGE_TRANSFORMER = PartSpec(
    "transformer", PartRole.DENOISER, "diffusers.ZImageTransformer2DModel", 6_154_908_736, 554_048, 4_046_786, "denoiser", 0,
    Z_IMAGE_TARGETS, _by_preset(((3840, 3840, 136),), _Z_IMAGE_ATTENTION_MLP, tuple(sorted(
        _Z_IMAGE_ATTENTION_MLP + ((64, 3840, 1), (256, 3840, 1), (256, 15360, 32), (2560, 3840, 1), (3840, 64, 1))))),
    linear_weight_params=6_153_863_168, title="Transformer",
)
"""30 single-stream blocks over image + caption tokens, 2 noise-refiner blocks (image) and 2 context-refiner blocks (text)."""
QWEN3_4B = PartSpec("text_encoder", PartRole.TEXT_ENCODER, "transformers.Qwen3Model", 4_022_468_096, 196_096, 2_414_976,
                    "text_encoder", 2560, linear_weight_params=3_633_315_840, trainable=False, title="Text encoder (Qwen3-4B)")
"""Frozen: ZImagePipeline's LoRA loader reads transformer LoRAs only."""
Z_IMAGE_ACTIVATIONS = ActivationProfile(2_070_000, 170_000, (SelfAttentionLevel(2, 30, 32),), measured=False)
"""Derived like FLUX_ACTIVATIONS: about 30 saved 16-bit tensors of width 3840 per token and block, over 30 blocks of image +
text tokens (512 text tokens at 1024 px) and 2 + 2 refiner blocks; with checkpointing each block's input plus one block
recomputed, with FLUX's margin. Unmeasured: the GPU check is to measure it."""
_FLUX_BLOCKS = (BlockStack("transformer_blocks", 19, 339_831_296, 339_738_624, 536_870_912, 139_776),
                BlockStack("single_transformer_blocks", 38, 141_591_808, 141_557_760, 218_103_808, 49_408))
FLUX1_DEV_TRANSFORMER = replace(FLUX1_DEV_TRANSFORMER, blocks=_FLUX_BLOCKS)
FLUX1_SCHNELL_TRANSFORMER = replace(FLUX1_SCHNELL_TRANSFORMER, blocks=_FLUX_BLOCKS)
CHROMA_TRANSFORMER = replace(CHROMA_TRANSFORMER, blocks=(
    BlockStack("transformer_blocks", 19, 226_548_224, 226_492_416, 402_653_184, 74_240),
    BlockStack("single_transformer_blocks", 38, 113_271_040, 113_246_208, 184_549_376, 33_024)))
Z_IMAGE_TRANSFORMER = replace(Z_IMAGE_TRANSFORMER, blocks=(
    BlockStack("noise_refiner", 2, 180_910_336, 180_879_360, 272_629_760, 33_024),
    BlockStack("context_refiner", 2, 176_962_816, 176_947_200, 268_435_456, 16_640),
    BlockStack("layers", 30, 180_910_336, 180_879_360, 272_629_760, 33_024)))
QWEN_IMAGE_TRANSFORMER = replace(QWEN_IMAGE_TRANSFORMER, blocks=(
    BlockStack("transformer_blocks", 60, 339_831_296, 339_738_624, 536_870_912, 139_776),))
"""The flow transformers' block lists (meta-device builds, checked in tests/test_estimate_offload.py)."""

FAMILIES: dict[Family, FamilySpec] = {
    Family.SD15: FamilySpec(
        Family.SD15, "Stable Diffusion 1.5",
        {
            "unet": SD15_UNET,
            "text_encoder": CLIP_L,
            "vae": SD_VAE,
        },
        default_resolution=512, bucket_step=8, prediction_type=PredictionType.EPSILON, vae_scaling_factor=0.18215,
        activations=ActivationProfile(228_600, 58_500, SD_UNET_ATTENTION_LEVELS),
        single_file_layout={**_LDM, "text_encoder": ("clip", "cond_stage_model.transformer.")},
        embedding_keys={"text_encoder": "emb_params"},
        own_fields=DDPM_FIELDS, pipeline="StableDiffusionPipeline",
        **_SD_VAE_PASSES, **_SD_COMMON,
    ),
    Family.SD2: FamilySpec(
        Family.SD2, "Stable Diffusion 2.x (768, v-prediction)",
        {
            "unet": SD21_UNET,
            "text_encoder": OPEN_CLIP_H,
            "vae": SD_VAE,
        },
        default_resolution=768, bucket_step=8, prediction_type=PredictionType.V_PREDICTION, vae_scaling_factor=0.18215,
        activations=ActivationProfile(218_600, 48_500, SD21_ATTENTION_LEVELS),
        single_file_layout={**_LDM, "text_encoder": ("open_clip", "cond_stage_model.model.")},
        embedding_keys={"text_encoder": "emb_params"},
        own_fields=DDPM_FIELDS, pipeline="StableDiffusionPipeline",
        **_SD_VAE_PASSES, **_SD_COMMON,
    ),
    Family.SDXL: FamilySpec(
        Family.SDXL, "Stable Diffusion XL",
        {
            "unet": SDXL_UNET,
            "text_encoder": CLIP_L,
            "text_encoder_2": OPEN_CLIP_BIG_G,
            "vae": SD_VAE,
        },
        default_resolution=1024, bucket_step=64, prediction_type=PredictionType.EPSILON, vae_scaling_factor=0.13025,
        activations=ActivationProfile(408_700, 14_800, SDXL_ATTENTION_LEVELS),
        added_conditions=("text_embeds", "time_ids"),
        single_file_layout={**_LDM, "text_encoder": ("clip", "conditioner.embedders.0.transformer."),
                            "text_encoder_2": ("open_clip", "conditioner.embedders.1.model.")},
        embedding_keys={"text_encoder": "clip_l", "text_encoder_2": "clip_g"},
        own_fields=DDPM_FIELDS, pipeline="StableDiffusionXLPipeline",
        **_SD_VAE_PASSES, **_SD_COMMON,
    ),
    Family.PIXART_ALPHA: FamilySpec(
        Family.PIXART_ALPHA, "PixArt-alpha (1024)",
        {
            "transformer": PIXART_TRANSFORMER,
            "text_encoder": T5_XXL,
            "vae": SD_VAE,
        },
        default_resolution=1024, latent_downscale=8, latent_channels=4, bucket_step=16,
        prediction_type=PredictionType.EPSILON, vae_scaling_factor=0.18215, text_tokens=120,
        activations=ActivationProfile(313_800, 24_000, PIXART_ATTENTION_LEVELS),
        own_fields=("training.variance_loss", *DDPM_FIELDS), methods=LORA_AND_FINETUNE, pipeline="PixArtAlphaPipeline",
        **_SD_VAE_PASSES,
    ),
    Family.STABLE_CASCADE: FamilySpec(
        Family.STABLE_CASCADE, "Stable Cascade stage C (3.6B)",
        {"prior": CASCADE_PRIOR, "text_encoder": CASCADE_TEXT_ENCODER, "effnet": EFFICIENTNET_V2_S},
        default_resolution=1024, latent_downscale=1024 / 24, latent_channels=16, bucket_step=128,
        prediction_type=PredictionType.EPSILON, vae_scaling_factor=None, text_tokens=77,
        activations=ActivationProfile(
            round(CASCADE_LITE_ACTIVATIONS.bytes_per_latent_pixel * CASCADE_SCALE),
            round(CASCADE_LITE_ACTIVATIONS.checkpointed_bytes_per_latent_pixel * CASCADE_SCALE),
            (SelfAttentionLevel(1, 32, 16), SelfAttentionLevel(2, 32, 48)),
        ),
        own_fields=("model.effnet_encoder", "model.cascade_decoder", *DDPM_FIELDS), methods=LORA_AND_FINETUNE,
        pipeline="StableCascadePriorPipeline",
        **_SD_VAE_PASSES,
    ),
    Family.FLUX1_DEV: FamilySpec(
        Family.FLUX1_DEV, "FLUX.1-dev (12B)",
        {"transformer": FLUX1_DEV_TRANSFORMER, "text_encoder": FLUX_CLIP_L, "text_encoder_2": FLUX_T5_XXL, "vae": FLUX_VAE},
        **_FLUX_COMMON, own_fields=(*FLOW_FIELDS, "flow.guidance"), pipeline="FluxPipeline",
        single_file_layout={"unet": ("flux", "")},
    ),
    Family.FLUX1_SCHNELL: FamilySpec(
        Family.FLUX1_SCHNELL, "FLUX.1-schnell (12B, few-step)",
        {"transformer": FLUX1_SCHNELL_TRANSFORMER, "text_encoder": FLUX_CLIP_L, "text_encoder_2": FLUX_T5_XXL, "vae": FLUX_VAE},
        **{**_FLUX_COMMON, "text_tokens": 256}, own_fields=FLOW_FIELDS, pipeline="FluxPipeline",
        single_file_layout={"unet": ("flux", "")},
    ),
    Family.CHROMA: FamilySpec(
        Family.CHROMA, "Chroma (8.9B, T5 only)",
        {"transformer": CHROMA_TRANSFORMER, "text_encoder": T5_XXL, "vae": FLUX_VAE},
        **_FLUX_COMMON, own_fields=FLOW_FIELDS, pipeline="ChromaPipeline",
        single_file_layout={"unet": ("chroma", "")},
    ),
    Family.Z_IMAGE: FamilySpec(  # base and Turbo: FLUX.1's VAE, Qwen3-4B's hidden states; the shift from the scheduler
        Family.Z_IMAGE, "Z-Image (6B; base and Turbo)",
        {"transformer": Z_IMAGE_TRANSFORMER, "text_encoder": QWEN3_4B, "vae": FLUX_VAE},
        **_FLUX_COMMON, own_fields=FLOW_FIELDS, pipeline="ZImagePipeline", comfyui_lora_layout="z_image",
        single_file_layout={"unet": ("z_image", "")},
    ),
    Family.QWEN_IMAGE: FamilySpec(
        Family.QWEN_IMAGE, "Qwen-Image (20B)",
        {"transformer": QWEN_IMAGE_TRANSFORMER, "text_encoder": QWEN2_5_VL, "vae": QWEN_IMAGE_VAE},
        **{**_FLUX_COMMON, "vae_scaling_factor": None, "activations": QWEN_IMAGE_ACTIVATIONS, **QWEN_IMAGE_VAE_PASSES},
        own_fields=FLOW_FIELDS, pipeline="QwenImagePipeline",
        single_file_layout={"unet": ("qwen_image", "")},
    ),
}
"""The family registry."""


def family_spec(family: Family) -> FamilySpec:
    """The registry entry of `family`."""
    return FAMILIES[Family(family)]


FAMILY_ONLY_FIELDS = frozenset(key for spec in FAMILIES.values() for key in spec.own_fields)
"""Config keys that mean something only for some families."""


def frees_text_encoders(spec: FamilySpec, method: Method, cached: bool, captions_vary: bool, text_trains: bool) -> bool:
    """Whether a run frees its text encoders after caching their outputs: the family does so (its samples' prompts
    are cached too), outputs are `cached`, no caption changes between epochs (then every caption is encoded up front),
    no text encoder trains, and the method writes no text encoder (LoRA; a finetune saves the whole model)."""
    return spec.frees_cached_text_encoders and cached and not captions_vary and not text_trains and method is Method.LORA


def config_frees_text_encoders(config: TrainConfig) -> bool:
    """frees_text_encoders for a config."""
    spec = family_spec(config.model.family)
    return frees_text_encoders(
        spec, config.method, config.training.cache_text_encoder_outputs,
        any(c.shuffle_tags or c.tag_dropout or c.caption_dropout for c in config.concepts),
        any(part.trainable and getattr(config.parts, part.config_section).train for part in spec.text_encoders if part.config_section),
    )


def field_applies(family: Family, key: str) -> bool:
    """Whether config key `key` means something for `family`."""
    return key not in FAMILY_ONLY_FIELDS or key in family_spec(family).own_fields

_CASCADE = FAMILIES[Family.STABLE_CASCADE]
VARIANTS: dict[tuple[Family, str], FamilySpec] = {
    (Family.STABLE_CASCADE, "lite"): replace(
        _CASCADE, label="Stable Cascade stage C lite (1B)", variant="lite",
        parts={**_CASCADE.parts, "prior": CASCADE_PRIOR_LITE},
        activations=CASCADE_LITE_ACTIVATIONS,
    ),
}
"""Smaller checkpoints of a family, picked by a word in the base model's name."""


def spec_for_model(family: Family, base_model: str = "") -> FamilySpec:
    """The registry entry for a base model: a variant when its name says so (e.g. 'lite'), else the family's."""
    name = base_model.lower()
    for (variant_family, variant), spec in VARIANTS.items():
        if variant_family == family and variant in name:
            return spec
    return family_spec(family)
