"""Stable Cascade's EfficientNet encoder: the official architecture's size and key names, and a file round trip."""

from __future__ import annotations

from pathlib import Path


def test_official_encoder_matches_the_registry_count_and_torchvision_names() -> None:
    import torch

    from tui_trainer.config.enums import Family
    from tui_trainer.models.families import FAMILIES
    from tui_trainer.train.effnet import EfficientNetEncoder

    with torch.device("meta"):
        encoder = EfficientNetEncoder()
    assert sum(param.numel() for param in encoder.parameters()) == FAMILIES[Family.STABLE_CASCADE].parts["effnet"].params
    keys = set(encoder.state_dict())
    # torchvision's efficientnet_v2_s().features names: stem, FusedMBConv, MBConv with squeeze-excitation, head.
    assert {"backbone.0.0.weight", "backbone.1.0.block.0.1.running_var", "backbone.2.0.block.1.0.weight",
            "backbone.4.0.block.2.fc1.weight", "backbone.6.14.block.3.1.bias", "backbone.7.0.weight",
            "mapper.0.weight", "mapper.1.running_mean"} <= keys


def test_tiny_encoder_round_trips_and_downsamples_like_stage_c(tmp_path: Path) -> None:
    import torch

    from tui_trainer.devkit.tiny_families import build_tiny_effnet
    from tui_trainer.train.effnet import load_encoder, save_encoder

    encoder = build_tiny_effnet()
    pixels = torch.rand(1, 3, 256, 128) * 2 - 1
    loaded = load_encoder(save_encoder(encoder, tmp_path / "effnet.safetensors"))
    with torch.no_grad():
        expected, got = encoder(pixels), loaded(pixels)
    assert got.shape == (1, 16, 6, 3)
    assert torch.equal(expected, got)
