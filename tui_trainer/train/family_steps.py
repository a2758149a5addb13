"""The training step's family-specific pieces, one table row per family: captions -> conditioning, the denoiser's
loss, and pixels -> latents."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tui_trainer.config.enums import Family
from tui_trainer.train.cascade import cascade_loss, clip_cascade_conditioning, encode_features
from tui_trainer.train.loop import conditioning_for, denoise_loss, encode_latents
from tui_trainer.train.pixart import pixart_loss, t5_conditioning


@dataclass(frozen=True)
class FamilySteps:
    """How one family conditions, scores and encodes (the UNet families: loop.py's functions)."""

    conditioning: Callable
    """(model, captions, device) -> the denoiser's conditioning tensors."""
    loss: Callable = denoise_loss
    """Same arguments as loop.denoise_loss."""
    encode: Callable = encode_latents
    """(autoencoder, pixels in [-1, 1]) -> latents."""


FAMILY_STEPS: dict[Family, FamilySteps] = {
    Family.PIXART_ALPHA: FamilySteps(t5_conditioning, pixart_loss),
    Family.STABLE_CASCADE: FamilySteps(clip_cascade_conditioning, cascade_loss, encode_features),
}
"""Families whose step differs from the UNet families'."""


def family_steps(family: Family) -> FamilySteps:
    """The step pieces of `family` (loop.CONDITIONING's function with the UNet loss unless listed above)."""
    return FAMILY_STEPS.get(family) or FamilySteps(conditioning_for(family))
