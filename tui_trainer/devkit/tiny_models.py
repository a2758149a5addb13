"""Tiny random-initialised models of the real Stable Diffusion architectures, built offline in seconds.

They keep the real block layouts (so diffusers' single-file conversion and LoRA key mapping work on
them) with a few channels each. Tests and the demo train these; real users load real weights through
the same code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}

TINY_TEXT_ENCODER = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "max_position_embeddings": 77,
    "projection_dim": 32,
    "hidden_act": "quick_gelu",
}

TINY_VAE = {
    "block_out_channels": [8, 16, 16, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 8,
    "sample_size": 64,
}

SD_UNET = {
    "block_out_channels": [32, 64],
    "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "cross_attention_dim": 32,
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
}


@dataclass(frozen=True)
class TinySpec:
    """How one tiny architecture differs from the tiny SD1.5 defaults."""

    pipeline: str
    unet: dict[str, Any]
    scheduler: dict[str, Any] = field(default_factory=dict)
    text_encoder_2: dict[str, Any] | None = None
    """Settings of a second text encoder (with projection) over TINY_TEXT_ENCODER; None = no second encoder.
    Wider than the first, as in SDXL: single-file loading tells the two apart by their width."""
    vae_scaling_factor: float = 0.18215


TINY_SPECS: dict[str, TinySpec] = {
    "sd15": TinySpec("StableDiffusionPipeline", SD_UNET),
    "sd15-inpaint": TinySpec("StableDiffusionInpaintPipeline", {**SD_UNET, "in_channels": 9}),
    "sd2": TinySpec(
        "StableDiffusionPipeline",
        {**SD_UNET, "use_linear_projection": True, "upcast_attention": True, "attention_head_dim": [2, 4]},
        scheduler={"prediction_type": "v_prediction"},
    ),
    "sdxl": TinySpec(
        "StableDiffusionXLPipeline",
        {
            **SD_UNET,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
            "attention_head_dim": [2, 4],
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 8,
            "transformer_layers_per_block": [1, 2],
            "projection_class_embeddings_input_dim": 6 * 8 + 64,
            "cross_attention_dim": 32 + 64,
        },
        text_encoder_2={"hidden_size": 64, "intermediate_size": 75, "projection_dim": 64},
        vae_scaling_factor=0.13025,
    ),
}
"""Tiny architectures by name."""


def tiny_tokenizer():
    """An offline CLIP tokenizer: byte-level vocab, no merges (every character is a token)."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab: dict[str, int] = {}
    for char in bytes_to_unicode().values():
        vocab.setdefault(char, len(vocab))
        vocab.setdefault(char + "</w>", len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], pad_token="<|endoftext|>", model_max_length=77)


def _text_encoder(with_projection: bool, vocab_size: int, seed: int, **overrides: Any):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    settings = TINY_TEXT_ENCODER | overrides
    config = CLIPTextConfig(vocab_size=vocab_size, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, **settings)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def build_tiny_pipeline(kind: str = "sd15", seed: int = 0):
    """Build a tiny random pipeline of architecture `kind` (see TINY_SPECS) in memory."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    spec = TINY_SPECS[kind]
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**spec.unet)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**TINY_VAE, scaling_factor=spec.vae_scaling_factor)
    scheduler = DDPMScheduler(**SD_BETAS, clip_sample=False, steps_offset=1, **spec.scheduler)
    parts: dict[str, Any] = {
        "unet": unet,
        "vae": vae,
        "scheduler": scheduler,
        "tokenizer": tokenizer,
        "text_encoder": _text_encoder(False, len(tokenizer), seed + 2),
    }
    pipeline_class = getattr(diffusers, spec.pipeline)
    if spec.text_encoder_2 is not None:
        parts["tokenizer_2"] = tiny_tokenizer()
        parts["text_encoder_2"] = _text_encoder(True, len(tokenizer), seed + 3, **spec.text_encoder_2)
    else:
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return pipeline_class(**parts)


def save_tiny_pipeline(path: str | Path, kind: str = "sd15", seed: int = 0) -> Path:
    """Build a tiny pipeline and save it as a diffusers folder (reused if it is already there)."""
    path = Path(path)
    if (path / "model_index.json").is_file():
        return path
    tmp = path.with_name(path.name + ".partial")
    build_tiny_pipeline(kind, seed).save_pretrained(tmp, safe_serialization=True)
    tmp.rename(path)
    return path
