"""Textual inversion: a placeholder token of num_vectors new tokens in every text encoder; only their
embedding rows train (peft trainable tokens), so the rest of each text encoder stays bit-identical.

Output: the A1111 / ComfyUI .safetensors embedding (one tensor per text encoder, keyed by the family
registry: emb_params for SD1/SD2, clip_l + clip_g for SDXL), readable by diffusers' load_textual_inversion.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import peft
import torch
from safetensors.torch import save as safetensors_bytes

from tui_trainer.atomic import atomic_write_bytes
from tui_trainer.config.enums import WeightDtype
from tui_trainer.config.schema import PartConfig, TrainConfig
from tui_trainer.models.families import family_spec
from tui_trainer.train.methods import SavedFile, TrainablePart
from tui_trainer.train.model_parts import ModelParts, part_configs, part_key

TOKENIZERS = {"text_encoder": "tokenizer", "text_encoder_2": "tokenizer_2"}
"""The tokenizer of each text encoder."""

TRAINABLE_DTYPES = (WeightDtype.FLOAT32, WeightDtype.BFLOAT16)
"""Text-encoder storage dtypes the new rows can train in."""


def placeholder_tokens(config: TrainConfig) -> list[str]:
    """The placeholder and its extra vectors' tokens, named as diffusers' load_textual_inversion names them."""
    token = config.embedding.placeholder_token
    return [token] + [f"{token}_{index}" for index in range(1, config.embedding.num_vectors)]


def check(config: TrainConfig) -> list[str]:
    """Problems with an embedding config, found before loading anything."""
    allowed = " or ".join(dtype.value for dtype in TRAINABLE_DTYPES)
    return [
        f"{part_key(name, 'dtype')} {part.dtype.value!r} cannot train embedding rows; use {allowed}"
        for name, part in part_configs(config).items()
        if name in family_spec(config.model.family).embedding_keys and part.dtype not in TRAINABLE_DTYPES
    ]


def captions(config: TrainConfig, texts: list[str]) -> list[str]:
    """Each caption with the placeholder (put in front when missing) expanded to all of its vector tokens."""
    token = config.embedding.placeholder_token
    expanded = " ".join(placeholder_tokens(config))
    return [(text if token in text else f"{token}, {text}" if text else token).replace(token, expanded) for text in texts]


def _initial_vectors(tokenizer, weight: torch.Tensor, init_text: str, count: int) -> torch.Tensor:
    ids = tokenizer(init_text, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"embedding.init_text {init_text!r} has no tokens")
    return weight[[ids[index % len(ids)] for index in range(count)]].clone()


def prepare(model: ModelParts, config: TrainConfig) -> list[TrainablePart]:
    """Add the placeholder tokens to every text encoder, start them from init_text and make them the only trainable rows."""
    names = placeholder_tokens(config)
    parts = []
    for name in family_spec(config.model.family).embedding_keys:
        tokenizer, encoder = model.tokenizers[TOKENIZERS[name]], model.text_encoders[name]
        init = _initial_vectors(tokenizer, encoder.get_input_embeddings().weight, config.embedding.init_text, len(names))
        if tokenizer.add_tokens(names) != len(names):
            raise ValueError(f"embedding.placeholder_token {names[0]!r} is already a token of {name}; choose another")
        encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        ids = tokenizer.convert_tokens_to_ids(names)
        with torch.no_grad():
            encoder.get_input_embeddings().weight[ids] = init.to(encoder.get_input_embeddings().weight)
        peft.inject_adapter_in_model(peft.TrainableTokensConfig(target_modules=["token_embedding"], token_indices=ids), encoder)
        params = [param for param in encoder.parameters() if param.requires_grad]
        parts.append(TrainablePart(name, encoder, params, PartConfig(), config.optimizer.learning_rate))
    return parts


def vectors(part: TrainablePart) -> torch.Tensor:
    """The trained vectors of one text encoder, num_vectors x width, in token order."""
    (rows,) = part.params
    return rows.detach().to("cpu", torch.float32).contiguous()


def save(
    model: ModelParts, parts: list[TrainablePart], config: TrainConfig, folder: Path, stem: str,
    metadata: dict[str, str], unwrap: Callable = lambda module: module,
) -> list[SavedFile]:
    """Write the A1111 / ComfyUI embedding file."""
    keys = family_spec(config.model.family).embedding_keys
    tensors = {keys[part.name]: vectors(part) for part in parts}
    info = {key: value for key, value in metadata.items() if not key.startswith("ss_network")}
    info["modelspec.architecture"] = metadata["modelspec.architecture"].replace("/lora", "/textual-inversion")
    path = folder / f"{stem}.safetensors"
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata=info))
    return [SavedFile(path, config.output_format.value)]
