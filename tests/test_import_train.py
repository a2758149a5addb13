"""Imported configs train: a OneTrainer saved config and a kohya training config, pointed at the devkit's tiny
model and dataset, train a few steps and save a LoRA with the imported rank."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_support import finish, train_in_process

from tui_trainer.config.importing import import_file
from tui_trainer.config.io import config_from_dict, config_to_dict, save_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
DATA = Path(__file__).parent / "data" / "import"


def tiny_run(document: dict, folder: Path, model: Path, data: Path) -> Path:
    """The imported config on the tiny model and dataset: float32, 64 px, 2 steps, sdpa, no samples or backups."""
    for table in document["parts"].values():
        table["dtype"] = "float32"
    document["model"].update(base_model=str(model), train_dtype="float32")
    document["workspace"] = {"dir": str(folder / "ws"), "run_name": "tiny"}
    document["training"].update(resolution="64", batch_size=2, gradient_accumulation=1, max_steps=2, dataloader_workers=0,
                                 tensorboard=False, gradient_checkpointing=False, attention="sdpa")
    document["training"].pop("bucket_step", None)
    document.update(samples=[], sampling={"every": 0}, backup={"every": 0})
    first = {key: value for key, value in document["concepts"][0].items() if key != "resolution"}
    document["concepts"] = [{**first, "path": str(data)}]
    path = folder / "imported.toml"
    save_config(config_from_dict(document), path)
    return path


@pytest.mark.parametrize(("source", "rank"), [(DATA / "onetrainer" / "my-sd15-lora.json", 32), (DATA / "kohya" / "lora-sd15.toml", 32)])
def test_an_imported_config_trains_and_saves_a_lora_of_its_rank(source: Path, rank: int, tiny_sd15, tmp_path: Path):
    from safetensors.torch import load_file

    from tui_trainer.devkit.datasets import make_dataset

    data = make_dataset(tmp_path / "data", ((64, 64, 4),))
    config = import_file(source).config
    recipe = train_in_process(tiny_run(config_to_dict(config), tmp_path, tiny_sd15, data))
    try:
        (saved,) = recipe.save()
    finally:
        finish(recipe)
    tensors = load_file(saved.path)
    downs = {key: tensor for key, tensor in tensors.items() if key.endswith("lora_down.weight")}
    assert {key.split("_")[1] for key in downs} == {"unet", "te"}
    assert {tensor.shape[0] for tensor in downs.values()} == {rank}
    alphas = {float(tensor) for key, tensor in tensors.items() if key.endswith(".alpha")}
    assert alphas == {config.lora.alpha}
