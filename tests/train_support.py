"""Helpers of the trainer tests: a tiny LoRA config on a synthetic 64 px dataset."""

from __future__ import annotations

import sys
import types
from pathlib import Path

from tui_trainer.config.enums import LoraTargets


def ensure_family_registry() -> None:
    """Until tui_trainer.models.families (issue 4) lands, stand in SD1.5's LoRA targets for these tests only."""
    try:
        import tui_trainer.models.families  # noqa: F401
    except ImportError:
        attention = ("to_q", "to_k", "to_v", "to_out.0")
        text = ("q_proj", "k_proj", "v_proj", "out_proj")
        targets = {
            LoraTargets.ATTENTION: {"unet": attention, "text_encoder": text},
            LoraTargets.ATTENTION_MLP: {"unet": (*attention, "ff.net.0.proj", "ff.net.2"), "text_encoder": (*text, "fc1", "fc2")},
            LoraTargets.FULL: {"unet": (*attention, "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"), "text_encoder": (*text, "fc1", "fc2")},
        }
        module = types.ModuleType("tui_trainer.models.families")
        module.family_spec = lambda family: types.SimpleNamespace(lora_target_modules=targets)
        sys.modules["tui_trainer.models.families"] = module


def write_config(folder: Path, model: Path, data: Path, *, extra: str = "", workspace: Path | None = None, **tables: str) -> Path:
    """A tiny LoRA config (UNet + text encoder, 64 px, batch 2, 10 steps, float32, no checkpointing)."""
    sections = {
        "training": 'resolution = "64"\nbatch_size = 2\nepochs = 3\nmax_steps = 10\ngradient_checkpointing = false\n'
                    "dataloader_workers = 0\ntensorboard = false\nseed = 7",
        "optimizer": "learning_rate = 0.001",
        "text_encoder": "train = true",
        "lora": "rank = 4\nalpha = 2.0",
    }
    sections.update(tables)
    body = "\n".join(f"[{name}]\n{text}" for name, text in sections.items())
    path = folder / "config.toml"
    path.write_text(
        f'method = "lora"\n{extra}\n[model]\nbase_model = "{model}"\nunet_dtype = "float32"\ntext_encoder_dtype = "float32"\n'
        f'train_dtype = "float32"\n[workspace]\ndir = "{workspace or folder / "ws"}"\nrun_name = "tiny"\n'
        f'[[concepts]]\nname = "shapes"\npath = "{data}"\n{body}\n'
    )
    return path
