"""Model & method: what is trained, from which base model, in which dtypes."""

from __future__ import annotations

from tui_trainer.config.schema import ModelConfig
from tui_trainer.tui.outline import SECTION_TITLES
from tui_trainer.tui.screens.section import Group, SectionPane, with_rest


class ModelMethodPane(SectionPane):
    """Method, base model, and weight / compute precision."""

    SECTION = "model"
    TITLE = SECTION_TITLES[SECTION]
    GROUPS = with_rest(ModelConfig, "model", (
        Group("Method", "", ("method",)),
        Group("Base model", "model", ("family", "base_model", "vae", "prediction_type", "zero_terminal_snr",
                                      "allow_pickle")),
        Group("Precision", "model", ("unet_dtype", "text_encoder_dtype", "vae_dtype", "train_dtype")),
    ))
