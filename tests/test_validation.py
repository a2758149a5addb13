"""Validation loss: seeded draws (the same weights give the same loss), events per concept, TensorBoard, no effect
on training, its phase in the estimate, and the loss chart's validation series."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from test_tui_runs import FakeRun, monitor_app, next_poll, on_monitor
from train_support import write_config
from tui_trainer.config import load_preset
from tui_trainer.config.schema import ConceptConfig, TrainConfig
from tui_trainer.runs.events import StepEvent, ValidationEvent, read_events
from tui_trainer.tui.widgets.loss_chart import LossChart

TRAINING = ('resolution = "64"\nbatch_size = 2\nepochs = 5\nmax_steps = 4\ngradient_checkpointing = false\n'
            "dataloader_workers = 0\nseed = 7")


def test_measure_is_fixed_by_the_seed_and_weights_images_per_concept():
    from tui_trainer.train.dataset import TrainingBatch
    from tui_trainer.train.validation import ValidationBatch, measure

    def batch(concept: str, images: int, value: float) -> ValidationBatch:
        latents = torch.full((images, 4, 8, 8), value)
        return ValidationBatch(concept, TrainingBatch(index=0, captions=["c"] * images, paths=[], geometry=torch.zeros(images, 6),
                                                      latents=latents))

    def loss(batch, latents, generator):  # a draw-dependent "loss", like a random timestep and noise
        return latents.mean() + torch.rand((), generator=generator)

    config = TrainConfig.model_validate({"model": {"base_model": "m"}, "validation": {"every": 1, "draws": 3, "seed": 5}})
    batches = [batch("dogs", 2, 1.0), batch("cats", 1, 3.0), batch("dogs", 1, 2.0)]
    first = measure(batches, config, torch.device("cpu"), 10, 2, loss)
    again = measure(batches, config, torch.device("cpu"), 11, 2, loss)
    assert first.concepts == again.concepts and first.loss == again.loss
    assert set(first.concepts) == {"dogs", "cats"} and first.images == 4
    assert 1.0 < first.concepts["dogs"] < 3.0 and 3.0 < first.concepts["cats"] < 4.0
    assert first.loss == pytest.approx((first.concepts["dogs"] * 3 + first.concepts["cats"]) / 4)
    config.validation.seed = 6
    assert measure(batches, config, torch.device("cpu"), 10, 2, loss).loss != first.loss


def test_validation_is_a_phase_of_the_estimate_only_with_held_out_images():
    from tui_trainer.estimate import estimate

    config = load_preset("sd15-lora")
    config.validation.every = 100
    assert "validation" not in estimate(config).phases  # no validation concept
    config.concepts = [ConceptConfig(name="held-out", path="val", type="validation")]
    phases = estimate(config).phases
    assert phases["training_step"].vram_bytes > phases["validation"].vram_bytes > 0
    assert phases["validation"].ram_bytes > 0


def test_minutes_is_no_validation_unit():
    from tui_trainer.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="validation.unit.*allowed: steps, epochs"):
        parse_config('[model]\nbase_model = "m"\n[validation]\nunit = "minutes"\n', "c.toml")


@pytest.mark.slow
def test_a_run_reports_validation_per_concept_to_events_and_tensorboard_without_changing_training(
    tiny_sd15: Path, tmp_path: Path,
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.train.entry import train_file

    data = make_dataset(tmp_path / "data", ((64, 64, 4),))
    held_out = make_dataset(tmp_path / "held-out", ((64, 64, 3),), seed=11)
    runs = {}
    for name, validation in (("with", 'every = 3\nunit = "steps"\ndraws = 2'), ("without", "every = 0")):
        folder = tmp_path / name
        folder.mkdir()
        path = write_config(folder, tiny_sd15, data, training=TRAINING + "\ntensorboard = true", validation=validation)
        path.write_text(path.read_text() + f'\n[[concepts]]\nname = "held-out"\npath = "{held_out}"\ntype = "validation"\n')
        code, run = train_file(path)
        assert code == 0
        runs[name] = read_events(run.events_file), run
    events, run = runs["with"]
    validations = [event for event in events if isinstance(event, ValidationEvent)]
    assert [event.step for event in validations] == [0, 3, 4]  # and at the end
    for event in validations:
        assert set(event.concepts) == {"held-out"} and event.images == 3 and math.isfinite(event.loss)
        assert event.loss == pytest.approx(event.concepts["held-out"])
    assert len({event.loss for event in validations}) == 3  # the weights changed between them

    def losses(events):
        return [event.loss for event in events if isinstance(event, StepEvent)]

    assert losses(events) == losses(runs["without"][0])  # measuring does not change training
    (logs,) = {path.parent for path in run.tensorboard_dir.rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(logs))
    accumulator.Reload()
    scalars = accumulator.Scalars("validation/loss")
    assert [(item.step, round(item.value, 5)) for item in scalars] == [(event.step, round(event.loss, 5)) for event in validations]
    assert "validation/held-out" in accumulator.Tags()["scalars"]


async def test_the_loss_chart_draws_validation_beside_training(tmp_path: Path):
    fake = FakeRun(tmp_path / "ws")
    fake.status("training", step=0, total_steps=10)
    app = monitor_app(tmp_path, fake.run)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await on_monitor(pilot)
        chart = screen.query_one(LossChart)
        for step in range(1, 5):
            fake.step(step, 0.5 - step * 0.01, 0.5)
        fake.event("validation", step=2, loss=0.61, concepts={"held-out": 0.61}, images=3)
        fake.event("validation", step=4, loss=0.58, concepts={"held-out": 0.58}, images=3)
        await next_poll(pilot, screen)
        assert list(chart.validation_steps) == [2, 4] and list(chart.validation) == [0.61, 0.58]
        assert "val 0.5800" in chart.border_subtitle
        assert chart.drawn_points == 4 + 4 + 2
        fake.event("resume", step=2, epoch=1, batch_index=0, backup="b")
        await next_poll(pilot, screen)
        assert list(chart.validation_steps) == [2]
