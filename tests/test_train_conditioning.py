"""Training-step details: v-prediction targets, SDXL size/crop time ids, masked-training gradients, masks, EMA."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest
import torch

from test_train_methods import preset_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _training(**values):
    from tui_trainer.config.schema import TrainingConfig

    return TrainingConfig(**values)


class _Echo(torch.nn.Module):
    """A denoiser stand-in that returns a fixed prediction."""

    def __init__(self, prediction: torch.Tensor):
        super().__init__()
        self.prediction = prediction

    def forward(self, sample, timesteps, **kwargs):
        return (self.prediction,)


@pytest.mark.slow
def test_v_prediction_model_is_trained_toward_v_not_noise(tiny_model_dir, tmp_path):
    from tui_trainer.config.schema import ModelConfig, TrainConfig
    from tui_trainer.train.loading import load_model
    from tui_trainer.train.loop import add_noise, denoise_loss

    config = TrainConfig(model=ModelConfig(family="sd2", base_model=str(tiny_model_dir("sd2"))))
    model = load_model(config)
    assert model.prediction_type == "v_prediction"  # read from the scheduler config
    training = _training(min_snr_gamma=None)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    noise, timesteps, _ = add_noise(model.noise_scheduler, latents, training, torch.Generator().manual_seed(5))
    alphas = model.noise_scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    v = alphas.sqrt() * noise - (1 - alphas).sqrt() * latents

    def loss_for(prediction: torch.Tensor) -> float:
        model.unet = _Echo(prediction)
        return float(denoise_loss(model, latents, {}, training, torch.Generator().manual_seed(5), torch.float32, contextlib.nullcontext))

    assert loss_for(v) < 1e-10
    assert loss_for(noise) > 0.1
    forced = TrainConfig(model=ModelConfig(family="sd2", base_model=str(tiny_model_dir("sd2")), prediction_type="epsilon"))
    assert load_model(forced).prediction_type == "epsilon"


def test_zero_terminal_snr_rescales_the_schedule(tiny_model_dir):
    from tui_trainer.config.schema import ModelConfig, TrainConfig
    from tui_trainer.train.loading import load_model

    config = TrainConfig(model=ModelConfig(family="sd2", base_model=str(tiny_model_dir("sd2")), zero_terminal_snr=True))
    assert float(load_model(config).noise_scheduler.alphas_cumprod[-1]) < 1e-6


def test_masked_loss_has_no_gradient_outside_the_mask():
    from diffusers import DDPMScheduler

    from tui_trainer.train.loop import diffusion_loss
    from tui_trainer.train.masks import loss_weights

    masks = torch.zeros(2, 1, 64, 64)
    masks[:, :, :32, 32:] = 1  # top-right quadrant
    training = _training(masked_training=True, unmasked_weight=0.0, unmasked_probability=0.0, min_snr_gamma=5.0)
    weights = loss_weights(masks, (8, 8), training, torch.Generator().manual_seed(0))
    prediction = torch.randn(2, 4, 8, 8, requires_grad=True)
    scheduler = DDPMScheduler()
    loss = diffusion_loss(prediction, torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), scheduler, "epsilon", training, weights)
    loss.backward()
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[:4, 4:] = True
    assert torch.all(prediction.grad[..., ~inside] == 0)
    assert torch.all(prediction.grad[..., inside] != 0)


def test_masked_loss_weights_unmasked_weight_probability_and_normalisation():
    from tui_trainer.train.masks import loss_weights

    masks = torch.zeros(4, 1, 16, 16)
    masks[:, :, :4, :4] = 1  # 1/16 of the image
    plain = loss_weights(masks, (2, 2), _training(unmasked_weight=0.5, unmasked_probability=0.0, normalize_masked_area=False), torch.Generator())
    assert plain[0, 0].tolist() == [[0.5 + 0.5 * 0.25, 0.5], [0.5, 0.5]]
    normalised = loss_weights(masks, (4, 4), _training(unmasked_weight=0.0, unmasked_probability=0.0), torch.Generator())
    assert torch.allclose(normalised.mean(dim=(1, 2, 3)), torch.ones(4)) and float(normalised[0, 0, 0, 0]) == 16.0
    always = loss_weights(masks, (4, 4), _training(unmasked_weight=0.0, unmasked_probability=1.0), torch.Generator())
    assert torch.equal(always, torch.ones_like(always))


def test_random_masks_are_deterministic_and_cover_part_of_the_image():
    from tui_trainer.train.masks import FULL, fill_mask

    for kind in ("rectangles", "strokes", "both"):
        first, again = (fill_mask(kind, random.Random(3), (48, 64)) for _ in range(2))
        assert first.shape == (1, 64, 48) and torch.equal(first, again)
        assert 0 < float(first.mean()) < 1
    assert float(fill_mask(FULL, random.Random(0), (8, 8)).min()) == 1.0


def test_items_without_a_mask_file_get_the_source_fill(tmp_path: Path):
    from tui_trainer.config.schema import ConceptConfig
    from tui_trainer.data import build_report, read_captions
    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.train.dataset import EpochBatches
    from tui_trainer.train.masks import MaskSource

    make_dataset(tmp_path / "with", ((64, 64, 1),), masks=True)
    make_dataset(tmp_path / "without", ((64, 64, 1),), seed=1)
    from tui_trainer.config.schema import ModelConfig, TrainConfig, TrainingConfig, WorkspaceConfig

    config = TrainConfig(model=ModelConfig(base_model="x"), training=TrainingConfig(resolution="64", batch_size=2),
                         workspace=WorkspaceConfig(dir=str(tmp_path / "ws")),
                         concepts=[ConceptConfig(name="a", path=str(tmp_path / "with")), ConceptConfig(name="b", path=str(tmp_path / "without"))])
    items = sorted(build_report(config, None).items, key=lambda item: str(item.path))
    captions = read_captions(items, config.concepts)
    batch = EpochBatches([items], 0, 0, config.concepts, captions, masks=MaskSource(True, "full"))[0]
    filed, filled = batch.masks
    assert 0 < float(filed.mean()) < 1 and float(filled.min()) == 1.0
    random_fill = EpochBatches([items], 0, 0, config.concepts, captions, masks=MaskSource(False, "rectangles"))[0].masks
    assert not torch.equal(random_fill[0], filed)


@pytest.mark.slow
def test_sdxl_time_ids_are_each_images_original_size_crop_and_target(tiny_model_dir, tmp_path):
    """Two images of different sizes in one bucket, with crop jitter and a flip: the UNet gets each one's own ids."""
    from PIL import Image

    from tui_trainer.config import load_config
    from tui_trainer.runs.layout import create_run_dir
    from tui_trainer.train.dataset import EpochBatches, choose_augment, cover_size, item_rng
    from tui_trainer.train.entry import TrainRecipe
    from tui_trainer.train.monitor import RunMonitor

    data = tmp_path / "data"
    data.mkdir()
    for name, size in (("wide", (96, 80)), ("tall", (80, 112))):
        Image.new("RGB", size, (200, 10, 10)).save(data / f"{name}.png")
        (data / f"{name}.txt").write_text("red")
    path = preset_config(tmp_path, "sdxl-lora", tiny_model_dir("sdxl"), data, training={"cache_latents": False, "cache_text_encoder_outputs": False},
                         concepts=[{"name": "c", "path": str(data), "crop_jitter": 1.0, "flip_probability": 0.5}])
    config = load_config(path)
    run = create_run_dir(tmp_path / "ws", "t", path.read_text())
    recipe = TrainRecipe(config, path, run, RunMonitor(run))
    try:
        recipe.setup()
        seen = []
        recipe.model.unet.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["added_cond_kwargs"]["time_ids"].clone()), with_kwargs=True)
        (batch_items,) = recipe._batches(0)[:1]
        batch = EpochBatches([batch_items], 0, config.training.seed, config.concepts, recipe.item_captions)[0]
        recipe._micro_step(batch, 1.0, True, False)
    finally:
        recipe.cleanup()
    expected = []
    for position, item in enumerate(batch_items):
        augment = choose_augment(item, config.concepts[0], item_rng(config.training.seed, 0, 0, position))
        left = cover_size((item.width, item.height), item.bucket)[0] - item.bucket[0] - augment.left if augment.flip else augment.left
        expected.append([item.height, item.width, augment.top, left, item.bucket[1], item.bucket[0]])
    assert seen[0].tolist() == expected
    assert {tuple(row[:2]) for row in expected} == {(80, 96), (112, 80)}


def test_ema_swaps_averaged_weights_in_and_back():
    from tui_trainer.train.ema import PartsEMA

    param = torch.nn.Parameter(torch.zeros(3))
    ema = PartsEMA([param], decay=0.5)
    for value in (4.0, 8.0):
        with torch.no_grad():
            param.fill_(value)
        ema.step()
    averaged_value = ema.model.shadow_params[0].clone()
    with ema.averaged():
        assert torch.equal(param.detach(), averaged_value)
    assert torch.equal(param.detach(), torch.full((3,), 8.0)) and 4 < float(averaged_value[0]) < 8
