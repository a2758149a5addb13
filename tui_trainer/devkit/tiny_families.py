"""Tiny random PixArt-alpha, Stable Cascade (stage C, plus its EfficientNet encoder; stages B + A), FLUX.1, Chroma and
Qwen-Image models, built offline.

The parallel of tiny_models.TINY_SPECS for the transformer / Wuerstchen families: the real classes with a
few channels each, saved as diffusers folders the trainer loads like real checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tui_trainer.config.enums import Family
from tui_trainer.devkit.tiny_models import TINY_TEXT_ENCODER, TINY_VAE, tiny_tokenizer
from tui_trainer.models.architectures import (
    FLUX_FLOW_SCHEDULER,
    FLUX_SCHNELL_SCHEDULER,
    QWEN_IMAGE_SCHEDULER,
    QWEN_IMAGE_VAE,
    STABLE_CASCADE_C,
    Z_IMAGE_TURBO,
    Z_IMAGE_TURBO_SCHEDULER,
)

PIXART_BETAS = {"beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear", "num_train_timesteps": 1000}
"""PixArt-alpha's training schedule (its scheduler config)."""

TINY_PIXART = {
    "num_attention_heads": 3, "attention_head_dim": 8, "in_channels": 4, "out_channels": 8, "num_layers": 2,
    "cross_attention_dim": 24, "attention_bias": True, "sample_size": 128, "patch_size": 2,
    "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000, "norm_type": "ada_norm_single",
    "norm_elementwise_affine": False, "norm_eps": 1e-6, "caption_channels": 32,
}
"""PixArt-alpha 1024's layout, tiny. sample_size 128 as in the 1024 model: diffusers switches the resolution /
aspect-ratio conditioning on (model and pipeline) only for that size; the width (24) splits in thirds for it."""

TINY_T5 = {"d_model": 32, "d_kv": 8, "d_ff": 37, "num_layers": 2, "num_heads": 4, "feed_forward_proj": "gated-gelu",
           "is_encoder_decoder": False, "relative_attention_num_buckets": 8}

TINY_CASCADE_PRIOR = {
    **STABLE_CASCADE_C, "conditioning_dim": 32, "block_out_channels": [32, 32], "num_attention_heads": [2, 2],
    "down_num_layers_per_block": [1, 1], "up_num_layers_per_block": [1, 1], "clip_text_in_channels": 32,
    "clip_text_pooled_in_channels": 32, "dropout": [0.0, 0.0],
}
"""Stage C's layout (models/architectures.py STABLE_CASCADE_C), tiny."""

TINY_CASCADE_DECODER = {
    "in_channels": 4, "out_channels": 4, "timestep_ratio_embedding_dim": 64, "patch_size": 2, "conditioning_dim": 32,
    "block_out_channels": [16, 32], "num_attention_heads": [0, 2], "down_num_layers_per_block": [1, 1],
    "up_num_layers_per_block": [1, 1], "down_blocks_repeat_mappers": [1, 1], "up_blocks_repeat_mappers": [1, 1],
    "block_types_per_layer": [["SDCascadeResBlock", "SDCascadeTimestepBlock"], ["SDCascadeResBlock", "SDCascadeTimestepBlock", "SDCascadeAttnBlock"]],
    "clip_text_pooled_in_channels": 32, "clip_seq": 4, "effnet_in_channels": 16, "pixel_mapper_in_channels": 3,
    "kernel_size": 3, "dropout": [0.0, 0.0], "self_attn": True, "timestep_conditioning_type": ["sca"], "switch_level": None,
}
"""Stage B's layout (effnet-conditioned, pooled-CLIP only), tiny."""

TINY_PAELLA = {"levels": 2, "bottleneck_blocks": 1, "embed_dim": 16, "latent_channels": 4, "num_vq_embeddings": 32}
"""Stage A's VQGAN (x4 upsampling like the real one), tiny."""

TINY_FLUX = {
    "patch_size": 1, "in_channels": 64, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 8,
    "num_attention_heads": 4, "joint_attention_dim": 32, "axes_dims_rope": [2, 2, 4],
}
"""FLUX.1's and Chroma's transformer layout (16 latent channels x 2 x 2 patches in, rotary axes summing to the head
width), one double-stream and one single-stream block, T5 width 32."""
TINY_FLUX_VAE = {**TINY_VAE, "latent_channels": 16, "use_quant_conv": False, "use_post_quant_conv": False}

EFFNET_FILE = "effnet_encoder.safetensors"


def tiny_t5_tokenizer():
    """An offline T5 tokenizer (Unigram, no sentencepiece file): one piece per printable ASCII character."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    pieces += [(char, -2.0) for char in map(chr, range(33, 127))]
    pieces += [("▁" + char, -1.5) for char in map(chr, range(33, 127))]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=120)


def build_tiny_pixart(seed: int = 0) -> Any:
    """A tiny PixArtAlphaPipeline (transformer, T5 encoder, SD-layout VAE, DPM-Solver scheduler)."""
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(**TINY_PIXART)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**TINY_VAE, scaling_factor=0.18215)
    torch.manual_seed(seed + 2)
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, **TINY_T5))
    scheduler = DPMSolverMultistepScheduler(**PIXART_BETAS)
    return PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler)


def build_tiny_effnet(seed: int = 0) -> Any:
    """A tiny EfficientNet encoder (x32 downsampling like the real one, 16 latent channels)."""
    import torch

    from tui_trainer.train.effnet import EfficientNetEncoder, Stage

    torch.manual_seed(seed)
    stages = (Stage(True, 1, 2, 8, 8, 1), Stage(True, 2, 2, 8, 16, 1), Stage(False, 2, 2, 16, 16, 1),
              Stage(False, 2, 2, 16, 24, 1))
    return EfficientNetEncoder(stages, head=32, latent_channels=16).eval()


def build_tiny_cascade(seed: int = 0) -> Any:
    """A tiny StableCascadePriorPipeline (stage C prior, CLIP text encoder with projection, Wuerstchen scheduler)."""
    import torch
    from diffusers import DDPMWuerstchenScheduler, StableCascadePriorPipeline, StableCascadeUNet
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    prior = StableCascadeUNet(**TINY_CASCADE_PRIOR)
    torch.manual_seed(seed + 1)
    vocab = len(tokenizer)
    config = CLIPTextConfig(vocab_size=vocab, bos_token_id=vocab - 2, eos_token_id=vocab - 1, **{**TINY_TEXT_ENCODER, "hidden_act": "gelu"})
    return StableCascadePriorPipeline(
        tokenizer=tokenizer, text_encoder=CLIPTextModelWithProjection(config), prior=prior, scheduler=DDPMWuerstchenScheduler(),
    )


def build_tiny_cascade_decoder(seed: int = 0) -> Any:
    """A tiny StableCascadeDecoderPipeline (stage B, stage A VQGAN, CLIP text encoder, Wuerstchen scheduler)."""
    import torch
    from diffusers import DDPMWuerstchenScheduler, StableCascadeDecoderPipeline, StableCascadeUNet
    from diffusers.pipelines.deprecated.wuerstchen import PaellaVQModel

    text = build_tiny_cascade(seed)
    torch.manual_seed(seed + 4)
    decoder = StableCascadeUNet(**TINY_CASCADE_DECODER)
    torch.manual_seed(seed + 5)
    return StableCascadeDecoderPipeline(
        decoder=decoder, tokenizer=text.tokenizer, text_encoder=text.text_encoder, scheduler=DDPMWuerstchenScheduler(),
        vqgan=PaellaVQModel(**TINY_PAELLA),
    )


def _tiny_t5(seed: int) -> tuple[Any, Any]:
    import torch
    from transformers import T5Config, T5EncoderModel

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, **TINY_T5)), tokenizer


def _tiny_flux_vae(seed: int) -> Any:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**TINY_FLUX_VAE, scaling_factor=0.3611, shift_factor=0.1159)


def build_tiny_flux(seed: int = 0, guidance: bool = True) -> Any:
    """A tiny FluxPipeline: FLUX.1-dev's (guidance embedding) or -schnell's (none, no shift) layout."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer()
    vocab = len(tokenizer)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(**TINY_FLUX, pooled_projection_dim=TINY_TEXT_ENCODER["hidden_size"], guidance_embeds=guidance)
    torch.manual_seed(seed + 1)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, bos_token_id=vocab - 2, eos_token_id=vocab - 1, **TINY_TEXT_ENCODER))
    t5, t5_tokenizer = _tiny_t5(seed + 2)
    scheduler = FlowMatchEulerDiscreteScheduler(**(FLUX_FLOW_SCHEDULER if guidance else FLUX_SCHNELL_SCHEDULER))
    return FluxPipeline(scheduler=scheduler, vae=_tiny_flux_vae(seed + 3), text_encoder=clip, tokenizer=tokenizer,
                        text_encoder_2=t5, tokenizer_2=t5_tokenizer, transformer=transformer)


def build_tiny_chroma(seed: int = 0) -> Any:
    """A tiny ChromaPipeline (T5 only, the distilled modulation network)."""
    import torch
    from diffusers import ChromaPipeline, ChromaTransformer2DModel, FlowMatchEulerDiscreteScheduler

    torch.manual_seed(seed)
    transformer = ChromaTransformer2DModel(**TINY_FLUX, approximator_hidden_dim=32, approximator_layers=1)
    t5, tokenizer = _tiny_t5(seed + 2)
    return ChromaPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_FLOW_SCHEDULER), vae=_tiny_flux_vae(seed + 3),
                          text_encoder=t5, tokenizer=tokenizer, transformer=transformer)


TINY_Z_IMAGE = {**Z_IMAGE_TURBO, "dim": 32, "n_heads": 2, "n_kv_heads": 2, "n_layers": 2, "n_refiner_layers": 1,
                "cap_feat_dim": 32, "axes_dims": [4, 6, 6], "axes_lens": [1024, 64, 64]}
"""Z-Image's transformer layout (models/architectures.py Z_IMAGE_TURBO), tiny: rotary axes summing to the head width
(16), room on the first axis for 512 caption tokens plus the image's frame position."""
TINY_QWEN3 = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 1024, "tie_word_embeddings": True}
"""Qwen3-4B's layout (grouped-query attention, tied embeddings), tiny; the pipeline reads hidden_states[-2]."""
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""What Qwen3's chat template makes of one user message with a generation prompt and thinking enabled (ZImagePipeline's call)."""


def tiny_qwen_tokenizer(words: tuple[str, ...] = (), chat_template: str | None = None, model_max_length: int | None = None):
    """An offline Qwen2 BPE tokenizer: the 256 byte-level characters, merges that spell `words` whole, and Qwen's
    special tokens (<|endoftext|>, <|im_start|>, <|im_end|>)."""
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {char: index for index, char in enumerate(bytes_to_unicode().values())}
    merges = []
    for word in words:
        for end in range(2, len(word) + 1):
            if word[:end] not in vocab:
                merges.append((word[: end - 1], word[end - 1]))
                vocab[word[:end]] = len(vocab)
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab[special] = len(vocab)
    limits = {"model_max_length": model_max_length} if model_max_length else {}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, chat_template=chat_template, **limits)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return tokenizer


TINY_QWEN_IMAGE = {
    "patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 2, "attention_head_dim": 8,
    "num_attention_heads": 2, "joint_attention_dim": 32, "guidance_embeds": False, "axes_dims_rope": [2, 2, 4],
}
"""Qwen-Image's transformer layout (16 latent channels x 2 x 2 patches in, 16 out, rotary axes summing to the head
width), two double-stream blocks, text width 32."""
TINY_QWEN_IMAGE_VAE = {**QWEN_IMAGE_VAE, "base_dim": 8, "num_res_blocks": 1}
"""The published VAE layout (x8 spatial, 16 channels, its latents_mean / latents_std), 8 base channels."""
TINY_QWEN2_5_VL = {
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "num_key_value_heads": 2, "max_position_embeddings": 2048, "tie_word_embeddings": False,
                    "rope_scaling": {"rope_type": "default", "mrope_section": [1, 1, 2]}},
    "vision_config": {"depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": 32,
                      "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
                      "fullatt_block_indexes": [0]},
}
"""Qwen2.5-VL's layout (language model with multimodal rotary sections, vision tower), width 32."""

QWEN_TEMPLATE_WORDS = ("system", "user", "assistant", "Describe", *(
    "Ġ" + word for word in "the image by detailing color shape size texture quantity text spatial relationships of "
    "objects and background".split()))
"""Whole-word tokens of QwenImagePipeline's prompt template, so its prefix is 34 tokens as with the real tokenizer
(prompt_template_encode_start_idx drops exactly the system prompt)."""


def build_tiny_z_image(seed: int = 0) -> Any:
    """A tiny ZImagePipeline: single-stream transformer, Qwen3 text encoder, FLUX.1-layout VAE, Turbo's scheduler."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = tiny_qwen_tokenizer(chat_template=QWEN_CHAT_TEMPLATE, model_max_length=512)
    torch.manual_seed(seed)
    transformer = ZImageTransformer2DModel(**TINY_Z_IMAGE)
    torch.manual_seed(seed + 1)
    text_encoder = Qwen3Model(Qwen3Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **TINY_QWEN3))
    return ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(**Z_IMAGE_TURBO_SCHEDULER), vae=_tiny_flux_vae(seed + 3),
                          text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer)


def build_tiny_qwen_image(seed: int = 0) -> Any:
    """A tiny QwenImagePipeline (MMDiT, Qwen2.5-VL text encoder with its vision tower, Wan-style VAE, the shift schedule)."""
    import torch
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = tiny_qwen_tokenizer(QWEN_TEMPLATE_WORDS)
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(**TINY_QWEN_IMAGE)
    torch.manual_seed(seed + 1)
    ends = {"bos_token_id": tokenizer.convert_tokens_to_ids("<|endoftext|>"), "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>")}
    settings = {**TINY_QWEN2_5_VL, **ends, "text_config": {**TINY_QWEN2_5_VL["text_config"], **ends, "vocab_size": len(tokenizer)}}
    text_encoder = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**settings))
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLQwenImage(**TINY_QWEN_IMAGE_VAE)
    return QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_IMAGE_SCHEDULER), vae=vae,
                             text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer)


def _save_cascade(path: Path, seed: int) -> None:
    from tui_trainer.train.effnet import save_encoder

    build_tiny_cascade(seed).save_pretrained(path, safe_serialization=True)
    save_encoder(build_tiny_effnet(seed + 3), path / EFFNET_FILE)


TINY_FAMILY_BUILDERS: dict[str, Callable[[Path, int], None]] = {
    "pixart": lambda path, seed: build_tiny_pixart(seed).save_pretrained(path, safe_serialization=True),
    "cascade": _save_cascade,
    "cascade-decoder": lambda path, seed: build_tiny_cascade_decoder(seed).save_pretrained(path, safe_serialization=True),
    "flux1-dev": lambda path, seed: build_tiny_flux(seed).save_pretrained(path, safe_serialization=True),
    "flux1-schnell": lambda path, seed: build_tiny_flux(seed, guidance=False).save_pretrained(path, safe_serialization=True),
    "chroma": lambda path, seed: build_tiny_chroma(seed).save_pretrained(path, safe_serialization=True),
    "z-image": lambda path, seed: build_tiny_z_image(seed).save_pretrained(path, safe_serialization=True),
    "qwen-image": lambda path, seed: build_tiny_qwen_image(seed).save_pretrained(path, safe_serialization=True),
}
"""Writers of each tiny model folder by name (cascade: the prior pipeline plus effnet_encoder.safetensors in it;
cascade-decoder: stages B and A, for samples)."""


def save_tiny_family_model(path: str | Path, kind: str, seed: int = 0) -> Path:
    """Build a tiny model of `kind` (see TINY_FAMILY_BUILDERS) as a diffusers folder (reused if already there)."""
    path = Path(path)
    if (path / "model_index.json").is_file():
        return path
    tmp = path.with_name(path.name + ".partial")
    TINY_FAMILY_BUILDERS[kind](tmp, seed)
    tmp.rename(path)
    return path


@dataclass(frozen=True)
class TinyFamilyModel:
    """The tiny model of one family: its builder's kind and the smallest training side (px) its layout takes."""

    kind: str
    resolution: int


TINY_FAMILY_MODELS: dict[Family, TinyFamilyModel] = {
    Family.SD15: TinyFamilyModel("sd15", 64),
    Family.SD2: TinyFamilyModel("sd2", 64),
    Family.SDXL: TinyFamilyModel("sdxl", 64),
    Family.PIXART_ALPHA: TinyFamilyModel("pixart", 64),
    Family.STABLE_CASCADE: TinyFamilyModel("cascade", 128),
    Family.FLUX1_DEV: TinyFamilyModel("flux1-dev", 64),
    Family.FLUX1_SCHNELL: TinyFamilyModel("flux1-schnell", 64),
    Family.CHROMA: TinyFamilyModel("chroma", 64),
    Family.Z_IMAGE: TinyFamilyModel("z-image", 64),


    Family.QWEN_IMAGE: TinyFamilyModel("qwen-image", 64),
}
"""The tiny model of every family (the registry completeness test trains each)."""


def save_tiny_model(path: str | Path, family: Family, seed: int = 0) -> Path:
    """The tiny model of `family` as a diffusers folder at `path` (reused if already there)."""
    from tui_trainer.devkit.tiny_models import save_tiny_pipeline

    kind = TINY_FAMILY_MODELS[Family(family)].kind
    return save_tiny_family_model(path, kind, seed) if kind in TINY_FAMILY_BUILDERS else save_tiny_pipeline(path, kind, seed)
