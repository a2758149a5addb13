"""The train-side family registry: one module per family, one row here."""

from __future__ import annotations

from tui_trainer.config.enums import Family
from tui_trainer.train.families.base import TrainFamily
from tui_trainer.train.families.chroma import CHROMA
from tui_trainer.train.families.flux import FLUX1_DEV, FLUX1_SCHNELL
from tui_trainer.train.families.pixart_alpha import PIXART_ALPHA
from tui_trainer.train.families.qwen_image import QWEN_IMAGE
from tui_trainer.train.families.sd2 import SD2
from tui_trainer.train.families.sd15 import SD15
from tui_trainer.train.families.sdxl import SDXL
from tui_trainer.train.families.stable_cascade import STABLE_CASCADE
from tui_trainer.train.families.z_image import Z_IMAGE

TRAIN_FAMILIES: dict[Family, TrainFamily] = {
    family.family: family
    for family in (SD15, SD2, SDXL, PIXART_ALPHA, STABLE_CASCADE, FLUX1_DEV, FLUX1_SCHNELL, CHROMA, Z_IMAGE, QWEN_IMAGE)
}
"""Every family the trainer can train."""


def train_family(family: Family) -> TrainFamily:
    """The trainer's module of `family`."""
    return TRAIN_FAMILIES[Family(family)]
