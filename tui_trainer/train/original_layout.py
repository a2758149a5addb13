"""diffusers parts -> one original-layout (A1111 / ComfyUI / ldm) single-file state dict, a flow family's transformer
in its original single-file layout (FLUX.1 / Chroma: BFL's; Z-Image: ComfyUI's; Qwen-Image: diffusers' own names), and
Z-Image's original key names (for its ComfyUI-layout LoRA).

diffusers ships only the other direction (`diffusers.loaders.single_file_utils`, used by `from_single_file`),
so the block-index arithmetic below is its inverse, written by hand; the fixed-name keys come from
diffusers' own DIFFUSERS_TO_LDM_MAPPING. Every converted part is checked by running diffusers' forward
converter on the result: it must give back exactly the part's own keys and shapes, or nothing is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from diffusers.loaders import single_file_utils as sfu

from tui_trainer.models.families import family_spec

RESNET_NAMES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
"""diffusers UNet resnet parameter names -> ldm names."""

VAE_ATTENTION_NAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
"""diffusers VAE attention names -> ldm names (ldm holds them as 1x1 convolutions)."""

OPEN_CLIP_LAYER_NAMES = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                         "self_attn.out_proj": "attn.out_proj"}
"""transformers CLIP encoder-layer names -> OpenCLIP resblock names (q/k/v are fused into in_proj)."""


class ConversionError(Exception):
    """A part cannot be written in the original layout (its structure differs from Stable Diffusion's)."""


def _rename(name: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if name.startswith(old + "."):
            return new + name[len(old):]
    return name


def unet_key_map(unet: torch.nn.Module) -> dict[str, str]:
    """diffusers UNet2DConditionModel key -> ldm key (without the model.diffusion_model. prefix)."""
    config = unet.config
    per_block = config.layers_per_block + 1
    fixed = {**sfu.DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]}
    if config.addition_embed_type == "text_time":
        fixed |= sfu.DIFFUSERS_TO_LDM_MAPPING["unet"]["addition_embed_type"]
    mapping = {}
    for key in unet.state_dict():
        if key in fixed:
            mapping[key] = fixed[key]
            continue
        parts = key.split(".")
        if parts[0] == "down_blocks":
            block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "downsamplers":
                mapping[key] = f"input_blocks.{(block + 1) * per_block}.0.op.{parts[-1]}"
                continue
            slot = 1 + block * per_block + index
            mapping[key] = f"input_blocks.{slot}.{0 if kind == 'resnets' else 1}." + (
                _rename(rest, RESNET_NAMES) if kind == "resnets" else rest)
        elif parts[0] == "mid_block":
            kind, index, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            slot = 2 * index if kind == "resnets" else 1
            mapping[key] = f"middle_block.{slot}." + (_rename(rest, RESNET_NAMES) if kind == "resnets" else rest)
        elif parts[0] == "up_blocks":
            block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
            if kind == "upsamplers":
                has_attention = any(k.startswith(f"up_blocks.{block}.attentions.") for k in unet.state_dict())
                mapping[key] = f"output_blocks.{block * per_block + per_block - 1}.{2 if has_attention else 1}.conv.{parts[-1]}"
                continue
            slot = block * per_block + index
            mapping[key] = f"output_blocks.{slot}.{0 if kind == 'resnets' else 1}." + (
                _rename(rest, RESNET_NAMES) if kind == "resnets" else rest)
        else:
            raise ConversionError(f"UNet key {key!r} has no place in the original layout")
    return mapping


def vae_key_map(vae: torch.nn.Module) -> dict[str, str]:
    """diffusers AutoencoderKL key -> ldm key (without the first_stage_model. prefix)."""
    fixed = sfu.DIFFUSERS_TO_LDM_MAPPING["vae"]
    up_blocks = len(vae.config.up_block_types)
    mapping = {}
    for key in vae.state_dict():
        if key in fixed:
            mapping[key] = fixed[key]
            continue
        coder, block_kind, *rest = key.split(".")
        if block_kind == "mid_block":
            kind, index, tail = rest[0], int(rest[1]), ".".join(rest[2:])
            if kind == "resnets":
                mapping[key] = f"{coder}.mid.block_{index + 1}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
            else:
                mapping[key] = f"{coder}.mid.attn_1.{_rename(tail, VAE_ATTENTION_NAMES)}"
            continue
        block, kind, index, tail = int(rest[0]), rest[1], rest[2], ".".join(rest[3:])
        ldm_block = block if coder == "encoder" else up_blocks - 1 - block
        level = "down" if coder == "encoder" else "up"
        if kind == "resnets":
            mapping[key] = f"{coder}.{level}.{ldm_block}.block.{index}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
        else:
            sampler = "downsample" if coder == "encoder" else "upsample"
            mapping[key] = f"{coder}.{level}.{ldm_block}.{sampler}.{tail}"
    return mapping


def _convert_unet(unet: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    state = unet.state_dict()
    return {prefix + ldm: state[key] for key, ldm in unet_key_map(unet).items()}


def _convert_vae(vae: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    state = vae.state_dict()
    out = {}
    for key, ldm in vae_key_map(vae).items():
        value = state[key]
        if ".mid.attn_1." in ldm and ldm.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]  # ldm's attention projections are 1x1 convolutions
        out[prefix + ldm] = value
    return out


def _text_model_state(encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CLIP text encoder's state dict with the `text_model.` level the original layout keeps (transformers 5
    drops it for CLIPTextModel)."""
    state = encoder.state_dict()
    return {key if key.startswith(("text_model.", "text_projection")) else f"text_model.{key}": value for key, value in state.items()}


def _convert_clip(encoder: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in _text_model_state(encoder).items() if not key.startswith("text_projection")}


def _convert_open_clip(encoder: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    state = _text_model_state(encoder)
    fixed = sfu.DIFFUSERS_TO_LDM_MAPPING["openclip"]["layers"]
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key in fixed:
            out[prefix + fixed[key]] = value.T.contiguous() if key == "text_projection.weight" else value
            continue
        layer, name = key.removeprefix("text_model.encoder.layers.").split(".", 1)
        head = f"{prefix}transformer.resblocks.{layer}."
        projection = name.split(".")[1] if name.startswith("self_attn.") else ""
        if projection in ("q_proj", "k_proj", "v_proj"):
            fused.setdefault(f"{head}attn.in_proj_{name.rsplit('.', 1)[1]}", {})[projection] = value
            continue
        out[head + _rename(name.rsplit(".", 1)[0], OPEN_CLIP_LAYER_NAMES) + "." + name.rsplit(".", 1)[1]] = value
    for key, pieces in fused.items():
        out[key] = torch.cat([pieces["q_proj"], pieces["k_proj"], pieces["v_proj"]])
    return out


def _check_unet(unet: torch.nn.Module, converted: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return sfu.convert_ldm_unet_checkpoint(converted, dict(unet.config))


def _check_vae(vae: torch.nn.Module, converted: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return sfu.convert_ldm_vae_checkpoint(converted, dict(vae.config))


def _check_clip(encoder: torch.nn.Module, converted: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return sfu.convert_ldm_clip_checkpoint(converted, prefix)


def _check_open_clip(encoder: torch.nn.Module, converted: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return sfu.convert_open_clip_checkpoint(encoder, converted, prefix=prefix)


LAYOUTS: dict[str, tuple[Callable[[Any, str], dict[str, torch.Tensor]], Callable[..., dict[str, torch.Tensor]]]] = {
    "ldm_unet": (_convert_unet, _check_unet),
    "ldm_vae": (_convert_vae, _check_vae),
    "clip": (_convert_clip, _check_clip),
    "open_clip": (_convert_open_clip, _check_open_clip),
}
"""Key layout -> (diffusers part -> original keys, diffusers' own original -> diffusers converter)."""


def _expected(part: torch.nn.Module, layout: str) -> dict[str, torch.Size]:
    state = _text_model_state(part) if layout in ("clip", "open_clip") else part.state_dict()
    if layout == "clip":
        state = {key: value for key, value in state.items() if not key.startswith("text_projection")}
    return {key: value.shape for key, value in state.items()}


def convert_part(part: torch.nn.Module, layout: str, prefix: str) -> dict[str, torch.Tensor]:
    """One part in the original layout, checked against diffusers' own reading of it."""
    convert, read_back = LAYOUTS[layout]
    converted = convert(part, prefix)
    back = {key.removeprefix("text_model."): value.shape for key, value in read_back(part, converted, prefix).items()}
    expected = {key.removeprefix("text_model."): shape for key, shape in _expected(part, layout).items()}
    if back != expected:
        missing, extra = sorted(set(expected) - set(back)), sorted(set(back) - set(expected))
        wrong = sorted(key for key in set(back) & set(expected) if back[key] != expected[key])
        raise ConversionError(f"{layout} conversion does not read back: missing {missing[:5]}, extra {extra[:5]}, shapes {wrong[:5]}")
    return converted


def single_file_state_dict(family: Any, parts: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """Every part of a family's original single-file checkpoint, as contiguous CPU tensors."""
    layout = family_spec(family).single_file_layout
    if not layout:
        raise ConversionError(f"family {family} has no original single-file layout")
    state: dict[str, torch.Tensor] = {}
    for name, (kind, prefix) in layout.items():
        state |= convert_part(parts[name], kind, prefix)
    return {key: value.detach().to("cpu").contiguous() for key, value in state.items()}


Z_IMAGE_FUSED = re.compile(r"\.attention\.to_([qkv])\.")
"""diffusers' split Z-Image attention projections; the original layout stacks them, in q, k, v order, into one
`attention.qkv` (diffusers' converter chunks it back into three)."""


Z_IMAGE_RENAMES = (
    ("final_layer.", "all_final_layer.2-1."),
    ("x_embedder.", "all_x_embedder.2-1."),
    (".attention.out.bias", ".attention.to_out.0.bias"),
    (".attention.k_norm.weight", ".attention.norm_k.weight"),
    (".attention.q_norm.weight", ".attention.norm_q.weight"),
    (".attention.out.weight", ".attention.to_out.0.weight"),
)
"""(original, diffusers) name pieces, in the order diffusers' Z-Image single-file converter applies them. A copy: the
table is local to `convert_z_image_transformer_checkpoint_to_diffusers`, so it cannot be imported; z_image_key_layout
runs that converter on every layout it makes, so a diffusers that renames differently fails loudly, never silently."""

Z_IMAGE_PROBE_KEYS = (
    "layers.0.attention.to_q.weight", "layers.0.attention.to_k.weight", "layers.0.attention.to_v.weight",
    "layers.0.attention.to_out.0.weight", "layers.0.attention.to_out.0.bias", "layers.0.attention.norm_q.weight",
    "layers.0.attention.norm_k.weight", "all_final_layer.2-1.linear.weight", "all_x_embedder.2-1.weight",
)
"""One diffusers key per rename and the fused q/k/v: what a check before training lays out."""


def z_image_key_layout(keys: Iterable[str] = Z_IMAGE_PROBE_KEYS) -> dict[str, tuple[str, int, int]]:
    """diffusers ZImageTransformer2DModel parameter key -> (original-layout key without prefix, row block, blocks):
    to_q / to_k / to_v are blocks 0 / 1 / 2 of the fused `attention.qkv`, every other key is its own (block 0 of 1).

    Checked by diffusers' own converter on a probe (one row per block, holding its index): it must give back exactly
    `keys`, each with its own block, or ConversionError."""
    layout = {}
    for key in keys:
        original = key
        for name, diffusers_name in reversed(Z_IMAGE_RENAMES):
            original = original.replace(diffusers_name, name)
        fused = Z_IMAGE_FUSED.search(original)
        if fused:
            layout[key] = (original.replace(fused[0], ".attention.qkv."), "qkv".index(fused[1]), 3)
        else:
            layout[key] = (original, 0, 1)
    probe = {original: torch.arange(blocks).view(blocks, 1) for original, _, blocks in layout.values()}
    read = {key: int(value[0, 0]) for key, value in sfu.convert_z_image_transformer_checkpoint_to_diffusers(probe).items()}
    expected = {key: block for key, (_, block, _) in layout.items()}
    if read != expected:
        wrong = sorted(set(read) ^ set(expected)) + sorted(key for key in set(read) & set(expected) if read[key] != expected[key])
        raise ConversionError(f"Z-Image original layout does not read back with diffusers' converter: {wrong[:5]} "
                              "(a fused qkv needs to_q, to_k and to_v together)")
    return layout


def z_image_original_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers-layout Z-Image transformer state dict in the original (Tongyi-MAI / ComfyUI) layout, without prefix."""
    return original_state_dict(state, z_image_key_layout(state))


ORIGINAL_KEY_LAYOUTS: dict[str, Callable[[Iterable[str]], dict[str, tuple[str, int, int]]]] = {
    "z_image": z_image_key_layout,
}
"""FamilySpec.comfyui_lora_layout -> diffusers key -> (original key, row block, blocks) of that denoiser."""


FusedKeys = dict[str, tuple[str, int, int]]
"""diffusers key -> (original key, its piece of the original tensor, the number of pieces), pieces concatenated in
order along the rows."""


def original_state_dict(state: Mapping[str, torch.Tensor], layout: FusedKeys,
                        swapped_halves: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """`state` in the original layout, on the CPU: each fused key's pieces concatenated in order (moved to the CPU one by
    one, so a model on a GPU needs no second copy there), the halves of the `swapped_halves` keys exchanged."""
    pieces: dict[str, list[Any]] = {}
    for key, (original, block, count) in layout.items():
        pieces.setdefault(original, [None] * count)[block] = key
    out = {}
    for original, keys in pieces.items():
        if None in keys:
            raise ConversionError(f"original key {original!r} is fused from {len(keys)} diffusers keys; found only {[k for k in keys if k]}")
        tensors = [state[key].detach().to("cpu") for key in keys]
        value = torch.cat(tensors) if len(tensors) > 1 else tensors[0]
        out[original] = torch.cat(value.chunk(2)[::-1]) if original in swapped_halves else value
    return out


def _linear(diffusers: str, original: str, block: int = 0, blocks: int = 1) -> FusedKeys:
    return {f"{diffusers}.{param}": (f"{original}.{param}", block, blocks) for param in ("weight", "bias")}


def _rms_norm(diffusers: str, original: str) -> FusedKeys:
    return {f"{diffusers}.weight": (f"{original}.scale", 0, 1)}


def _fused(diffusers: tuple[str, ...], original: str) -> FusedKeys:
    return {key: value for index, name in enumerate(diffusers) for key, value in _linear(name, original, index, len(diffusers)).items()}


FLUX_DOUBLE_BLOCK: FusedKeys = {
    **_fused(("attn.to_q", "attn.to_k", "attn.to_v"), "img_attn.qkv"),
    **_fused(("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"), "txt_attn.qkv"),
    **_rms_norm("attn.norm_q", "img_attn.norm.query_norm"), **_rms_norm("attn.norm_k", "img_attn.norm.key_norm"),
    **_rms_norm("attn.norm_added_q", "txt_attn.norm.query_norm"), **_rms_norm("attn.norm_added_k", "txt_attn.norm.key_norm"),
    **_linear("attn.to_out.0", "img_attn.proj"), **_linear("attn.to_add_out", "txt_attn.proj"),
    **_linear("ff.net.0.proj", "img_mlp.0"), **_linear("ff.net.2", "img_mlp.2"),
    **_linear("ff_context.net.0.proj", "txt_mlp.0"), **_linear("ff_context.net.2", "txt_mlp.2"),
}
"""A double-stream block without its modulation (`transformer_blocks.N.` -> `double_blocks.N.`): Chroma's, and FLUX.1's
but for FLUX_MODULATION."""

FLUX_SINGLE_BLOCK: FusedKeys = {
    **_fused(("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), "linear1"),
    **_rms_norm("attn.norm_q", "norm.query_norm"), **_rms_norm("attn.norm_k", "norm.key_norm"),
    **_linear("proj_out", "linear2"),
}
"""A single-stream block without its modulation (`single_transformer_blocks.N.` -> `single_blocks.N.`): linear1 is
q, k, v and the MLP's input projection, in that order."""

FLUX_MODULATION = {
    "transformer_blocks": {**_linear("norm1.linear", "img_mod.lin"), **_linear("norm1_context.linear", "txt_mod.lin")},
    "single_transformer_blocks": _linear("norm.linear", "modulation.lin"),
}
"""FLUX.1's per-block modulation weights (Chroma computes them in its distilled_guidance_layer instead)."""

FLUX_TOP: FusedKeys = {
    **_linear("time_text_embed.timestep_embedder.linear_1", "time_in.in_layer"),
    **_linear("time_text_embed.timestep_embedder.linear_2", "time_in.out_layer"),
    **_linear("time_text_embed.text_embedder.linear_1", "vector_in.in_layer"),
    **_linear("time_text_embed.text_embedder.linear_2", "vector_in.out_layer"),
    **_linear("time_text_embed.guidance_embedder.linear_1", "guidance_in.in_layer"),
    **_linear("time_text_embed.guidance_embedder.linear_2", "guidance_in.out_layer"),
    **_linear("context_embedder", "txt_in"), **_linear("x_embedder", "img_in"),
    **_linear("proj_out", "final_layer.linear"), **_linear("norm_out.linear", "final_layer.adaLN_modulation.1"),
}
"""FLUX.1's keys outside the blocks (-schnell has no guidance_in). diffusers' norm_out splits into (scale, shift), BFL's
final_layer.adaLN_modulation into (shift, scale): FLUX_SWAPPED_HALVES."""

FLUX_SWAPPED_HALVES = frozenset({"final_layer.adaLN_modulation.1.weight", "final_layer.adaLN_modulation.1.bias"})

CHROMA_TOP: FusedKeys = {
    **_linear("distilled_guidance_layer.in_proj", "distilled_guidance_layer.in_proj"),
    **_linear("distilled_guidance_layer.out_proj", "distilled_guidance_layer.out_proj"),
    **_linear("context_embedder", "txt_in"), **_linear("x_embedder", "img_in"), **_linear("proj_out", "final_layer.linear"),
}
"""Chroma's keys outside the blocks: no time / text / guidance embedders and no final modulation (its approximator,
distilled_guidance_layer, makes every modulation)."""

BLOCK_KEY = re.compile(r"^(?P<blocks>.+?)\.(?P<index>\d+)\.(?P<rest>.+)$")
"""A key inside a numbered block: the block list, the block's index, the key within the block."""


def _block_key_layout(top: FusedKeys, blocks: dict[str, tuple[str, FusedKeys]], what: str, keys: Iterable[str]) -> FusedKeys:
    """diffusers keys -> original keys: `top` by name, a key of a numbered block by its block list's table."""
    layout = {}
    for key in keys:
        if key in top:
            layout[key] = top[key]
            continue
        match = BLOCK_KEY.match(key)
        original_blocks, table = blocks.get(match["blocks"], ("", {})) if match else ("", {})
        if not match or match["rest"] not in table:
            raise ConversionError(f"{what} key {key!r} has no place in the original layout")
        original, block, count = table[match["rest"]]
        layout[key] = (f"{original_blocks}.{match['index']}.{original}", block, count)
    return layout


FLUX_BLOCKS = {
    "transformer_blocks": ("double_blocks", FLUX_DOUBLE_BLOCK | FLUX_MODULATION["transformer_blocks"]),
    "single_transformer_blocks": ("single_blocks", FLUX_SINGLE_BLOCK | FLUX_MODULATION["single_transformer_blocks"]),
}
CHROMA_BLOCKS = {
    "transformer_blocks": ("double_blocks", FLUX_DOUBLE_BLOCK),
    "single_transformer_blocks": ("single_blocks", FLUX_SINGLE_BLOCK),
    "distilled_guidance_layer.layers": ("distilled_guidance_layer.layers", {**_linear("linear_1", "in_layer"), **_linear("linear_2", "out_layer")}),
    "distilled_guidance_layer.norms": ("distilled_guidance_layer.norms", {"weight": ("scale", 0, 1)}),
}


@dataclass(frozen=True)
class TransformerLayout:
    """How a flow family's diffusers transformer becomes its original single-file layout (transformer only)."""

    key_layout: Callable[[Iterable[str]], FusedKeys]
    swapped_halves: frozenset[str] = frozenset()
    fixed_width: int = 0
    """The width diffusers' converter assumes (0 = any): its FLUX.1 and Chroma converters split the single blocks'
    linear1 at a hard-coded inner_dim = 3072, so only a 3072-wide transformer reads back."""


TRANSFORMER_LAYOUTS: dict[str, TransformerLayout] = {
    "flux": TransformerLayout(partial(_block_key_layout, FLUX_TOP, FLUX_BLOCKS, "FLUX.1"), FLUX_SWAPPED_HALVES, 3072),
    "chroma": TransformerLayout(partial(_block_key_layout, CHROMA_TOP, CHROMA_BLOCKS, "Chroma"), fixed_width=3072),
    "z_image": TransformerLayout(z_image_key_layout),
    "qwen_image": TransformerLayout(lambda keys: {key: (key, 0, 1) for key in keys}),
}
"""Single-file layout of each flow family's transformer (FamilySpec.single_file_layout). FLUX.1 and Chroma: BFL's own
names (black-forest-labs' flux1-dev.safetensors, ComfyUI's flux model); Z-Image: ComfyUI's (fused attention.qkv);
Qwen-Image: the original names are diffusers' own (ComfyUI's qwen_image model uses them and diffusers' single-file loader
reads such a file unconverted)."""


def _width(part: torch.nn.Module) -> int:
    return int(part.config.num_attention_heads * part.config.attention_head_dim)


def _convert_transformer(name: str, part: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    layout = TRANSFORMER_LAYOUTS[name]
    if layout.fixed_width and _width(part) != layout.fixed_width:
        raise ConversionError(
            f"this {type(part).__name__} is {_width(part)} wide (num_attention_heads x attention_head_dim); diffusers' "
            f"single-file converter for it assumes {layout.fixed_width} (FLUX.1's width), so an original-layout file would not read back")
    state = part.state_dict()
    converted = original_state_dict(state, layout.key_layout(state), layout.swapped_halves)
    return {prefix + key: value for key, value in converted.items()}


SPOT_CHECKED_BLOCK = re.compile(r"^(?:\w+_blocks|layers|noise_refiner|context_refiner)\.(\d+)\.")
"""Original keys of a numbered block: those of block 0 (and every key outside the blocks) are read back with their
values; the others as shapes only (meta tensors), so the check of a 12B transformer costs no second copy."""


def _spot_checked(key: str) -> bool:
    match = SPOT_CHECKED_BLOCK.match(key)
    return not match or match[1] == "0"


def _check_transformer(name: str, part: torch.nn.Module, converted: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """diffusers' from_single_file converter of the part's class, on meta copies of `converted` (real values where
    _spot_checked): every key must be read, and every value read must be the part's own."""
    from diffusers.loaders.single_file_model import SINGLE_FILE_LOADABLE_CLASSES

    read_back = SINGLE_FILE_LOADABLE_CLASSES[type(part).__name__]["checkpoint_mapping_fn"]
    probe = {key: value if _spot_checked(key.removeprefix(prefix)) else torch.empty_like(value, device="meta") for key, value in converted.items()}
    try:
        back = read_back(checkpoint=probe, config=dict(part.config))
    except (RuntimeError, KeyError, ValueError, IndexError) as error:
        raise ConversionError(f"{name} layout: diffusers' single-file converter fails on it ({type(error).__name__}: {error})") from None
    unread = sorted(set(probe) - set(back))
    state = part.state_dict()
    differ = sorted(key for key, value in back.items()
                    if value.device.type != "meta" and key in state and not torch.equal(value, state[key].detach().to(value.device)))
    if unread or differ:
        raise ConversionError(f"{name} layout does not read back: keys left unread {unread[:5]}, values that differ {differ[:5]}")
    return back


LAYOUTS.update({name: (partial(_convert_transformer, name), partial(_check_transformer, name)) for name in TRANSFORMER_LAYOUTS})
