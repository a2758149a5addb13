"""End to end: tiny SD1.5 LoRA runs through `tui-trainer train`, outputs loaded by diffusers' own loaders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from train_support import write_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 images in two buckets, one corrupt file and one caption file that is not UTF-8."""
    from tui_trainer.devkit.datasets import make_dataset

    folder = make_dataset(tmp_path_factory.mktemp("data"), ((64, 64, 6), (72, 56, 2)), broken=("truncated",))
    (folder / "img_0003_64x64.txt").write_bytes(b"red, caf\xe9")
    return folder


@pytest.fixture(scope="module")
def kohya_run(tiny_sd15: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """One 10-step kohya run through the CLI: (config path, run folder)."""
    from tui_trainer.cli import main

    folder = tmp_path_factory.mktemp("kohya")
    config = write_config(folder, tiny_sd15, dataset)
    assert main(["train", str(config)]) == 0
    (run,) = (folder / "ws" / "runs").iterdir()
    return config, run


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def _generate(pipeline):
    """A 64 px image from a fixed seed and prompt."""
    import torch

    generator = torch.Generator().manual_seed(0)
    return pipeline("red, circle", num_inference_steps=2, generator=generator, output_type="np", height=64, width=64).images[0]


def _load_and_compare(model: Path, lora: Path, expected_modules: tuple[int, int]) -> None:
    """Load `lora` into a fresh tiny pipeline: every adapted module comes back, and the image changes."""
    import numpy as np
    from diffusers import StableDiffusionPipeline
    from peft.tuners.tuners_utils import BaseTunerLayer

    pipeline = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
    base = _generate(pipeline)
    pipeline.load_lora_weights(str(lora))
    adapted = tuple(sum(isinstance(m, BaseTunerLayer) for m in part.modules()) for part in (pipeline.unet, pipeline.text_encoder))
    assert adapted == expected_modules
    assert np.abs(_generate(pipeline) - base).max() > 1e-3


def test_events_status_log_and_totals(kohya_run):
    from tui_trainer.config import load_config
    from tui_trainer.data import build_report

    config_path, run = kohya_run
    events = _events(run)
    types = [event["type"] for event in events]
    assert types[-1] == "end" and events[-1]["reason"] == "completed"
    start = events[types.index("start")]
    report = build_report(load_config(config_path), config_path)
    for key in ("total_images", "batches_per_epoch", "steps_per_epoch", "total_steps"):
        assert start[key] == getattr(report, key)
    assert start["buckets"] == [{"width": b.width, "height": b.height, "aspect": b.aspect, "images": b.images,
                                 "batches": b.batches, "dropped": b.dropped, "repeated": b.repeated,
                                 "warnings": b.warnings} for b in report.buckets]
    steps = [event for event in events if event["type"] == "step"]
    assert [event["step"] for event in steps] == list(range(1, report.total_steps + 1))
    assert all(math.isfinite(event["loss"]) and math.isfinite(event["smoothed_loss"]) for event in steps)
    assert set(steps[-1]["lr"]) == {"unet", "text_encoder"}
    assert steps[-1]["eta_s"] == 0 and steps[-1]["it_per_s"] > 0
    assert [e["done"] for e in events if e["type"] == "cache_progress"][-1] == 8
    (save,) = [event for event in events if event["type"] == "save"]
    assert save["format"] == "kohya" and Path(save["path"]).is_file()
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 10
    log = (run / "train.log").read_text()
    assert "step 10/10" in log and "saved kohya" in log


def test_corrupt_image_is_skipped_with_a_warning_naming_it(kohya_run):
    _, run = kohya_run
    warnings = [event["message"] for event in _events(run) if event["type"] == "warning"]
    assert any("broken_truncated.png" in message for message in warnings)


def test_caption_that_is_not_utf8_is_one_warning_naming_it(kohya_run, dataset):
    _, run = kohya_run
    bad = str(dataset / "img_0003_64x64.txt")
    warnings = [event for event in _events(run) if event["type"] == "warning" and "UTF-8" in event["message"]]
    assert [(event["message"], event["paths"]) for event in warnings] == [
        (f"concept 'shapes' (concepts[0]): 1 caption files are not UTF-8 ({bad!r}); bad bytes were replaced", [bad])
    ]


def test_kohya_file_loads_into_the_pipeline_and_changes_its_image(kohya_run, tiny_sd15):
    from safetensors import safe_open

    _, run = kohya_run
    path = run / "output" / "tiny.safetensors"
    with safe_open(path, "pt") as handle:
        keys, metadata = list(handle.keys()), handle.metadata()
        alpha = handle.get_tensor(next(key for key in keys if key.endswith(".alpha")))
    assert {key.split("_", 2)[1] for key in keys} == {"unet", "te"}
    assert all(key.startswith(("lora_unet_", "lora_te_")) for key in keys)
    assert float(alpha) == 2.0
    assert metadata["ss_network_dim"] == "4" and metadata["ss_network_alpha"] == "2.0"
    assert metadata["ss_base_model_version"] == "sd_v1" and "[lora]" in metadata["tui_trainer_config"]
    down = [key for key in keys if key.endswith("lora_down.weight")]
    unet = sum(key.startswith("lora_unet_") for key in down)
    _load_and_compare(tiny_sd15, path, (unet, len(down) - unet))


def test_same_seed_gives_identical_weights_and_reuses_the_latent_cache(kohya_run):
    import torch
    from safetensors.torch import load_file

    from tui_trainer.train.entry import train_file

    config_path, first = kohya_run
    code, second = train_file(config_path, console=None)
    assert code == 0
    a, b = (load_file(run / "output" / "tiny.safetensors") for run in (first, second.path))
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    progress = [e for e in _events(second.path) if e["type"] == "cache_progress"]
    assert progress[0]["hits"] == progress[0]["total"] == 8
    losses = [[e["loss"] for e in _events(run) if e["type"] == "step"] for run in (first, second.path)]
    assert losses[0] == losses[1]


def test_diffusers_format_loads_into_the_pipeline_and_changes_its_image(tiny_sd15, dataset, tmp_path):
    from diffusers import StableDiffusionPipeline

    from tui_trainer.train.entry import train_file

    config = write_config(tmp_path, tiny_sd15, dataset, workspace=tmp_path / "ws")
    text = config.read_text().replace('run_name = "tiny"', 'run_name = "tiny"\noutput_format = "diffusers"')
    config.write_text(text.replace("max_steps = 10", "max_steps = 4"))
    code, run = train_file(config, console=None)
    assert code == 0
    folder = run.output_dir / "tiny"
    assert (folder / "pytorch_lora_weights.safetensors").is_file()
    state_dict, _ = StableDiffusionPipeline.lora_state_dict(str(folder))
    down = [key for key in state_dict if "lora_A" in key]
    unet = sum(key.startswith("unet.") for key in down)
    _load_and_compare(tiny_sd15, folder, (unet, len(down) - unet))


def test_unet_only_with_cached_text_outputs_and_tensorboard(tiny_sd15, dataset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tui_trainer.train.entry import train_file

    config = write_config(
        tmp_path, tiny_sd15, dataset,
        training='resolution = "64"\nbatch_size = 4\ngradient_accumulation = 2\nepochs = 1\ndataloader_workers = 0\n'
                 "cache_latents = false\ncache_text_encoder_outputs = true\ngradient_checkpointing = true",
        text_encoder="train = false",
        scheduler='name = "cosine"\nwarmup = 0.5',
    )
    code, run = train_file(config, console=None)
    events = _events(run.path)
    assert code == 0, [e for e in events if e["type"] == "error"]
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2] and set(steps[0]["lr"]) == {"unet"}  # 3 batches, accumulation 2
    assert any(e["type"] == "cache_progress" and e["kind"] == "text" for e in events)
    (logs,) = {path.parent for path in run.tensorboard_dir.rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(logs))
    accumulator.Reload()  # the writer is left to flush on its own: every step must still be there at the end
    assert [(item.step, round(item.value, 5)) for item in accumulator.Scalars("loss")] == [(e["step"], round(e["loss"], 5)) for e in steps]
    assert {"smoothed_loss", "lr/unet"} <= set(accumulator.Tags()["scalars"])


@pytest.mark.slow
def test_float16_preset_dtypes_train_on_the_cpu_as_bfloat16(tiny_sd15, dataset, tmp_path):
    from tui_trainer.train.entry import train_file

    config = write_config(tmp_path, tiny_sd15, dataset, training='resolution = "64"\nbatch_size = 2\nmax_steps = 2\ndataloader_workers = 0\ntensorboard = false')
    text = config.read_text().replace('unet_dtype = "float32"', 'unet_dtype = "float16"')
    config.write_text(text.replace('text_encoder_dtype = "float32"', 'text_encoder_dtype = "float16"').replace('train_dtype = "float32"', 'train_dtype = "float16"'))
    code, run = train_file(config, console=None)
    events = _events(run.path)
    assert code == 0, [e for e in events if e["type"] == "error"]
    warnings = [e["message"] for e in events if e["type"] == "warning"]
    assert "float16 weights need a CUDA GPU; they are stored as bfloat16 on the CPU" in warnings
    assert all(math.isfinite(e["loss"]) for e in events if e["type"] == "step")
