"""The estimate of block offload (flow.offload): the GPU keeps the non-block weights and one group of blocks (two with
prefetch), pinned host RAM the blocks, and every step copies every block twice (forward and the backward's rerun)."""

from __future__ import annotations

import pytest

from tui_trainer.config import config_from_dict
from tui_trainer.estimate import estimate
from tui_trainer.estimate.vram import OFFLOAD_CHANGE, OFFLOAD_COPY_BYTES_PER_S
from tui_trainer.models.architectures import CHROMA1, FLUX1_DEV, FLUX1_SCHNELL, QWEN_IMAGE, Z_IMAGE_TURBO
from tui_trainer.models.families import FAMILIES
from tui_trainer.config.enums import Family
from tui_trainer.units import GIB

FLUX_BLOCK_PARAMS = 19 * 339_831_296 + 38 * 141_591_808
"""11,837,283,328 of FLUX.1-dev's 11,901,408,320 parameters are in its 57 blocks."""
FLUX_DOUBLE_BLOCK_BYTES = 339_831_296 * 2
FLUX_PINNED_BYTES = 2 * (19 * (536_870_912 + 139_776) + 38 * (218_103_808 + 49_408))
"""Each tensor rounded up to a power of two of bytes by torch's pinned-memory allocator: 1.56 x the blocks' bytes."""


def _config(offload: dict | None = None, **overrides):
    """FLUX.1-dev bf16 LoRA at 1024 px with samples; `overrides` merge into (or, when empty, replace) its sections."""
    document = {
        "version": 2, "method": "lora",
        "model": {"family": "flux1_dev", "base_model": "black-forest-labs/FLUX.1-dev", "train_dtype": "bfloat16"},
        "parts": {"denoiser": {"dtype": "bfloat16"}},
        "training": {"resolution": "1024", "cache_text_encoder_outputs": True},
        "samples": [{"prompt": "a cat"}], "sampling": {"every": 1},
        "flow": {"offload": offload} if offload else {},
    }
    for key, value in overrides.items():
        merge = isinstance(value, dict) and value and isinstance(document.get(key), dict)
        document[key] = {**document[key], **value} if merge else value
    return config_from_dict(document)


@pytest.mark.parametrize(("family", "cls", "config"), [
    (Family.FLUX1_DEV, "FluxTransformer2DModel", FLUX1_DEV), (Family.FLUX1_SCHNELL, "FluxTransformer2DModel", FLUX1_SCHNELL),
    (Family.CHROMA, "ChromaTransformer2DModel", CHROMA1), (Family.Z_IMAGE, "ZImageTransformer2DModel", Z_IMAGE_TURBO),
    (Family.QWEN_IMAGE, "QwenImageTransformer2DModel", QWEN_IMAGE),
], ids=lambda value: getattr(value, "value", ""))
def test_block_lists_equal_the_meta_device_build_and_what_the_trainer_offloads(family, cls, config):
    import diffusers
    import torch

    from tui_trainer.train.offload import block_lists

    with torch.device("meta"):
        transformer = getattr(diffusers, cls)(**config)
    def rounded(tensors):
        return sum(1 << (tensor.numel() - 1).bit_length() for tensor in tensors)

    measured = []
    for name, blocks in block_lists(transformer).items():
        block = blocks[0]
        linear = [layer.weight for layer in block.modules() if type(layer) is torch.nn.Linear]
        others = [param for param in block.parameters() if all(param is not weight for weight in linear)]
        assert {sum(param.numel() for param in other.parameters()) for other in blocks} == {sum(p.numel() for p in block.parameters())}
        measured.append((name, len(blocks), sum(p.numel() for p in block.parameters()), sum(w.numel() for w in linear),
                         rounded(linear), rounded(others)))
    stacks = FAMILIES[family].denoiser.blocks
    assert [(stack.name, stack.count, stack.params, stack.linear_weight_params, stack.rounded_linear_params,
             stack.rounded_other_params) for stack in stacks] == measured


def test_offload_keeps_one_group_on_the_gpu_and_the_blocks_in_ram():
    plain, offloaded = estimate(_config()), estimate(_config({"enabled": True}))
    saved = 2 * FLUX_BLOCK_PARAMS - FLUX_DOUBLE_BLOCK_BYTES
    assert plain.breakdown["weights"] - offloaded.breakdown["weights"] == saved
    for phase in ("training_step", "sampling"):
        assert plain.phases[phase].vram_bytes - offloaded.phases[phase].vram_bytes == saved
        assert offloaded.phases[phase].ram_bytes - plain.phases[phase].ram_bytes == FLUX_PINNED_BYTES
    assert offloaded.phases["training_step"].vram_bytes == sum(offloaded.breakdown.values())
    assert {name: offloaded.phases[name] for name in ("loading", "text_caching", "latent_caching")} == {
        name: plain.phases[name] for name in ("loading", "text_caching", "latent_caching")}
    cost = offloaded.offload
    assert (cost.block_bytes, cost.ram_bytes, cost.gpu_bytes) == (2 * FLUX_BLOCK_PARAMS, FLUX_PINNED_BYTES, FLUX_DOUBLE_BLOCK_BYTES)
    assert 1.5 < FLUX_PINNED_BYTES / cost.block_bytes < 1.6
    assert cost.bytes_per_step == 4 * FLUX_BLOCK_PARAMS == 47_349_133_312
    assert cost.seconds_per_step == pytest.approx(47_349_133_312 / OFFLOAD_COPY_BYTES_PER_S) == pytest.approx(2.37, abs=0.01)
    assert plain.offload is None


def test_groups_prefetch_nf4_and_accumulation_scale_the_cost():
    grouped = estimate(_config({"enabled": True, "blocks_per_group": 3})).offload
    assert grouped.gpu_bytes == 3 * FLUX_DOUBLE_BLOCK_BYTES
    prefetched = estimate(_config({"enabled": True, "use_stream": True})).offload
    assert prefetched.gpu_bytes == 2 * FLUX_DOUBLE_BLOCK_BYTES
    accumulated = estimate(_config({"enabled": True}, training={"gradient_accumulation": 4})).offload
    assert accumulated.bytes_per_step == 16 * FLUX_BLOCK_PARAMS
    nf4 = estimate(_config({"enabled": True}, parts={"denoiser": {"dtype": "nf4"}})).offload
    linear = 19 * 339_738_624 + 38 * 141_557_760
    assert nf4.block_bytes == round(linear * 0.5625 + (FLUX_BLOCK_PARAMS - linear) * 2)
    assert nf4.block_bytes / FLUX_BLOCK_PARAMS < 0.57
    assert nf4.ram_bytes == 19 * (536_870_912 // 2 + 139_776 * 2) + 38 * (218_103_808 // 2 + 49_408 * 2)


def test_offload_is_suggested_with_its_cost_only_when_vram_is_short():
    short = estimate(_config(), target_bytes=24 * GIB)
    (suggestion,) = [s for s in short.suggestions if s.change.startswith(OFFLOAD_CHANGE)]
    assert suggestion.change == f"{OFFLOAD_CHANGE}: about 2.4 s of copies per step"
    assert suggestion.saves_bytes == short.total_bytes - estimate(
        _config({"enabled": True}), target_bytes=24 * GIB).total_bytes > 10 * GIB
    assert suggestion in estimate(_config()).suggestions  # no budget: an OOM hint may need it
    roomy = estimate(_config(), target_bytes=80 * GIB)
    assert not any(s.change.startswith(OFFLOAD_CHANGE) for s in roomy.suggestions)
    for config in (_config(method="finetune"), _config(model={"family": "sdxl", "base_model": "x/y"}, parts={}, flow={})):
        assert not any(s.change.startswith(OFFLOAD_CHANGE) for s in estimate(config, target_bytes=1 * GIB).suggestions)


def test_json_and_text_carry_the_copy_cost(tmp_path, capsys):
    import json

    from tui_trainer.cli import main
    from tui_trainer.config import save_config

    path = tmp_path / "config.toml"
    save_config(_config({"enabled": True}), path)
    assert main(["estimate", str(path), "--json"]) == 0
    offload = json.loads(capsys.readouterr().out)["offload"]
    assert offload == {"block_bytes": 2 * FLUX_BLOCK_PARAMS, "ram_bytes": FLUX_PINNED_BYTES, "gpu_bytes": FLUX_DOUBLE_BLOCK_BYTES,
                       "bytes_per_step": 4 * FLUX_BLOCK_PARAMS, "seconds_per_step": offload["seconds_per_step"]}
    assert main(["estimate", str(path)]) == 0
    text = capsys.readouterr().out
    assert "bfloat16     22.17 GiB  on GPU, its blocks in RAM (block offload)" in text
    assert ("block offload: 22.05 GiB of transformer blocks in pinned RAM (taking 34.45 GiB), 0.63 GiB of them on the GPU "
            "at once; copies "
            "44.10 GiB to the GPU per step, about 2.4 s at 20 GB/s") in text
