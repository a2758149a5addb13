"""The demo workspace: a tiny SD1.5-architecture model, a small synthetic concept and a LoRA config."""

from __future__ import annotations

from pathlib import Path

from tui_trainer.atomic import atomic_write_text
from tui_trainer.config import dump_config, load_preset
from tui_trainer.config.enums import TrainDtype, WeightDtype
from tui_trainer.config.schema import ConceptConfig, SampleConfig

DEMO_IMAGE_SIZES = ((64, 64, 12), (80, 48, 9), (48, 80, 3))
"""(width, height, count): square, landscape, and a portrait group smaller than the batch size."""

DEMO_CONFIG_NAME = "demo-lora.toml"
DEMO_PROMPTS = ("red circle, blue sky", "green square, sea")


def demo_config_text() -> str:
    """The demo's LoRA config: the sd15-lora preset on the tiny model at 64 px, sized for a CPU."""
    config = load_preset("sd15-lora")
    config.model.base_model = "models/tiny-sd15"
    for part in (config.parts.denoiser, config.parts.text_encoder, config.parts.text_encoder_2):
        part.dtype = WeightDtype.FLOAT32
    config.model.vae_dtype = WeightDtype.FLOAT32
    config.model.train_dtype = TrainDtype.FLOAT32
    config.workspace.dir = "workspace"
    config.workspace.run_name = "demo-lora"
    config.concepts = [ConceptConfig(name="shapes", path="dataset/shapes", caption_prefix="shp style, ")]
    config.samples = [SampleConfig(prompt=prompt, width=64, height=64, steps=10, seed=index) for index, prompt in enumerate(DEMO_PROMPTS)]
    config.sampling.every = 5
    config.training.resolution = "64"
    config.training.batch_size = 4
    config.training.epochs = 10
    config.training.dataloader_workers = 0
    config.training.tensorboard = False
    config.training.gradient_checkpointing = False
    config.optimizer.learning_rate = 1e-3
    config.parts.text_encoder.learning_rate = 5e-4
    config.lora.rank = 4
    config.lora.alpha = 4.0
    config.backup.every = 5
    header = (
        "# tui-trainer demo: LoRA on a tiny random SD1.5-architecture model (CPU, ~1 minute).\n"
        "# Paths are relative to this file. Edit freely: `tui-trainer demo` reuses this file.\n"
    )
    return header + dump_config(config)


def build_demo_workspace(folder: str | Path) -> Path:
    """Create (once; later calls reuse what exists) the demo model, dataset and config; returns the config path."""
    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.devkit.tiny_models import save_tiny_pipeline

    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    save_tiny_pipeline(folder / "models" / "tiny-sd15", "sd15")
    dataset = folder / "dataset" / "shapes"
    if not dataset.is_dir():
        partial = dataset.with_name("shapes.partial")
        make_dataset(partial, DEMO_IMAGE_SIZES, seed=3)
        partial.rename(dataset)
    config_path = folder / DEMO_CONFIG_NAME
    if not config_path.is_file():
        atomic_write_text(config_path, demo_config_text())
    return config_path
