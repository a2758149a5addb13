"""Stable Cascade's image encoder: EfficientNetV2-S features + a 1x1 mapper to 16 normalised channels.

Written in plain torch because torchvision (which defines EfficientNetV2-S) cannot be installed beside the
torch here. Module names follow torchvision's `efficientnet_v2_s().features` exactly, so the official
`effnet_encoder.safetensors` (keys `backbone.*` and `mapper.*`) loads with no renaming.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from tui_trainer.atomic import atomic_write_bytes


@dataclass(frozen=True)
class Stage:
    """One EfficientNetV2 stage: `layers` blocks; the first takes `stride`, later ones stride 1."""

    fused: bool
    """FusedMBConv (one full conv) rather than MBConv (1x1 expand, depthwise conv, squeeze-excitation)."""
    expand: int
    stride: int
    channels_in: int
    channels_out: int
    layers: int


EFFICIENTNET_V2_S = (
    Stage(True, 1, 1, 24, 24, 2),
    Stage(True, 4, 2, 24, 48, 4),
    Stage(True, 4, 2, 48, 64, 4),
    Stage(False, 4, 2, 64, 128, 6),
    Stage(False, 6, 1, 128, 160, 9),
    Stage(False, 6, 2, 160, 256, 15),
)
"""torchvision's efficientnet_v2_s stage table (stem 24 channels, head 1280)."""

BN_EPS = 1e-3
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SCALE = 0.75
"""Stable Cascade encodes images at 3/4 of their size: 1024 px -> 768 px -> 24 x 24 features (x32 smaller)."""


def conv_norm(channels_in: int, channels_out: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: conv (no bias), BatchNorm, optional SiLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(channels_in, channels_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(channels_out, eps=BN_EPS),
    ]
    return nn.Sequential(*layers, nn.SiLU()) if act else nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """Channel attention with torchvision's names (fc1, fc2)."""

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sigmoid(self.fc2(nn.functional.silu(self.fc1(nn.functional.adaptive_avg_pool2d(x, 1)))))
        return x * scale


class Block(nn.Module):
    """An (Fused)MBConv block with a residual when shape allows (stochastic depth is identity at inference)."""

    def __init__(self, stage: Stage, channels_in: int, stride: int):
        super().__init__()
        out, expanded = stage.channels_out, channels_in * stage.expand
        if stage.fused and expanded == channels_in:
            layers = [conv_norm(channels_in, out, 3, stride)]
        elif stage.fused:
            layers = [conv_norm(channels_in, expanded, 3, stride), conv_norm(expanded, out, act=False)]
        else:
            layers = [conv_norm(channels_in, expanded), conv_norm(expanded, expanded, 3, stride, groups=expanded),
                      SqueezeExcitation(expanded, max(1, channels_in // 4)), conv_norm(expanded, out, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and channels_in == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + x if self.residual else self.block(x)


def backbone(stages: tuple[Stage, ...], head: int) -> nn.Sequential:
    """EfficientNetV2 `features`: stem, one Sequential per stage, 1x1 head conv."""
    layers: list[nn.Module] = [conv_norm(3, stages[0].channels_in, 3, 2)]
    for stage in stages:
        layers.append(nn.Sequential(*(
            Block(stage, stage.channels_in if index == 0 else stage.channels_out, stage.stride if index == 0 else 1)
            for index in range(stage.layers)
        )))
    layers.append(conv_norm(stages[-1].channels_out, head))
    return nn.Sequential(*layers)


class EfficientNetEncoder(nn.Module):
    """Pixels in [-1, 1] -> Stable Cascade stage C latents (channels x H/32 x W/32 of the 3/4-size image)."""

    def __init__(self, stages: tuple[Stage, ...] = EFFICIENTNET_V2_S, head: int = 1280, latent_channels: int = 16):
        super().__init__()
        self.settings = {"stages": [asdict(stage) for stage in stages], "head": head, "latent_channels": latent_channels}
        self.backbone = backbone(stages, head)
        self.mapper = nn.Sequential(nn.Conv2d(head, latent_channels, 1, bias=False), nn.BatchNorm2d(latent_channels, affine=False))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return self.mapper[0].weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype."""
        return self.mapper[0].weight.dtype

    @property
    def config(self) -> dict:
        """Constructor settings (cache keys use them to tell encoders apart)."""
        return self.settings

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Features of images in [-1, 1], resized to 3/4 size and ImageNet-normalised as in Stable Cascade's training."""
        height, width = (max(32, round(side * INPUT_SCALE / 32) * 32) for side in pixels.shape[-2:])
        x = nn.functional.interpolate(pixels.to(self.dtype), size=(height, width), mode="bilinear", antialias=True)
        x = ((x + 1) / 2 - self.mean.to(x)) / self.std.to(x)
        return self.mapper(self.backbone(x))


CONFIG_KEY = "tui_trainer_effnet"
"""safetensors metadata key holding a non-standard encoder's settings (the tiny test stand-in)."""


def save_encoder(encoder: EfficientNetEncoder, path: str | Path) -> Path:
    """Write an encoder as .safetensors (official key names; non-standard settings in the metadata)."""
    tensors = {name: value.detach().to("cpu").contiguous() for name, value in encoder.state_dict().items()}
    atomic_write_bytes(Path(path), safetensors_bytes(tensors, metadata={CONFIG_KEY: json.dumps(encoder.settings)}))
    return Path(path)


def load_encoder(path: str | Path, dtype: torch.dtype = torch.float32) -> EfficientNetEncoder:
    """The official effnet_encoder.safetensors (or a file written by save_encoder), frozen in eval mode."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        settings = json.loads((handle.metadata() or {}).get(CONFIG_KEY, "{}"))
    stages = tuple(Stage(**stage) for stage in settings.pop("stages", ())) or EFFICIENTNET_V2_S
    encoder = EfficientNetEncoder(stages, **settings)
    missing, unexpected = encoder.load_state_dict(load_file(str(path)), strict=False)
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"{path} is not a Stable Cascade EfficientNet encoder: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return encoder.to(dtype).requires_grad_(False).eval()
