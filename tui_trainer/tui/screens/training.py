"""Training: resolution, batching, length, memory, buckets, loss, and flow matching (flow families only)."""

from __future__ import annotations

from tui_trainer.config.schema import TrainingConfig
from tui_trainer.tui.outline import SECTION_TITLES
from tui_trainer.tui.screens.section import Group, SectionPane, with_rest


class TrainingPane(SectionPane):
    """The training loop's settings."""

    SECTION = "training"
    TITLE = SECTION_TITLES[SECTION]
    GROUPS = with_rest(TrainingConfig, "training", (
        Group("Resolution & batch", "training", ("resolution", "batch_size", "gradient_accumulation", "epochs",
                                                 "max_steps", "seed")),
        Group("Memory & caching", "training", ("gradient_checkpointing", "cache_latents",
                                               "cache_text_encoder_outputs", "attention", "dataloader_workers")),
        Group("Buckets", "training", ("bucket_step", "bucket_min_side", "bucket_max_side", "bucket_max_aspect",
                                      "bucket_remainder")),
        Group("Loss", "training", ("loss", "huber_delta", "min_snr_gamma", "offset_noise", "clip_grad_norm",
                                   "masked_training", "unmasked_probability", "unmasked_weight",
                                   "normalize_masked_area")),
        Group("EMA & logging", "training", ("ema", "ema_decay", "tensorboard")),
    )) + (Group("Flow matching", "flow"),)
