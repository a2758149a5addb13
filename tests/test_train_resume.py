"""Runs that survive: bit-exact resume, command files, signals, a failing disk, NaN, more epochs after the end.

Every run is the tiny SD1.5 LoRA on 8 images of 64 px (4 steps per epoch), trained in this process; the
trainer is steered from inside its own step report (commands dropped through runs.commands, signals sent to
this process), so each action lands at a known step without sleeping.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from train_support import write_config
from tui_trainer.runs.events import Event, StepEvent, read_events

pytestmark = pytest.mark.slow

TRAINING = {"resolution": '"64"', "batch_size": "2", "epochs": "3", "gradient_checkpointing": "false", "dataloader_workers": "0",
            "tensorboard": "false", "seed": "7"}
EMA = {"ema": "true", "ema_decay": "0.9"}
SAMPLES = '[[samples]]\nprompt = "red, circle"\nsteps = 1\nsampler = "euler_a"\n'


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 images in two buckets: 4 batches of 2 per epoch."""
    from tui_trainer.devkit.datasets import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data"), ((64, 64, 6), (72, 56, 2)))


def config(folder: Path, model: Path, data: Path, *, training: dict[str, str] | None = None, extra: str = "",
           workspace: Path | None = None, **tables: str) -> Path:
    """The tiny LoRA config with a cosine schedule (so a resumed LR schedule shows), 12 steps by default."""
    folder.mkdir(parents=True, exist_ok=True)
    tables.setdefault("scheduler", 'name = "cosine"\nwarmup = 2')
    tables["training"] = "\n".join(f"{key} = {value}" for key, value in (TRAINING | (training or {})).items())
    return write_config(folder, model, data, extra=extra, workspace=workspace, **tables)


def events(run: Path) -> list[Event]:
    return read_events(run / "events.jsonl")


def of_type(run: Path, kind: str) -> list[Any]:
    """The run's events of one JSON "type" (typed: StepEvent for "step", ...)."""
    return [event for event in events(run) if event.type == kind]


def final_steps(run: Path) -> dict[int, StepEvent]:
    """The step events that count: after a resume, a step's last report replaces any earlier one."""
    return {event.step: event for event in of_type(run, "step")}


def only_run(folder: Path) -> Path:
    (run,) = (folder / "ws" / "runs").iterdir()
    return run


@contextlib.contextmanager
def at_steps(actions: dict[int, Callable[[Path], None]]) -> Iterator[None]:
    """Call actions[step](run folder) inside the trainer right after it reports that step."""
    from tui_trainer.train.monitor import RunMonitor

    original = RunMonitor.step

    def step(self, event, *args, **kwargs):
        original(self, event, *args, **kwargs)
        if event.step in actions:
            actions[event.step](self.run.path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RunMonitor, "step", step)
        yield


def send(*commands: str) -> Callable[[Path], None]:
    from tui_trainer.runs.commands import send_command
    from tui_trainer.runs.layout import RunDir

    return lambda run: [send_command(RunDir(run), command) for command in commands]


def lora_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def straight(tiny_sd15: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 steps without a stop (EMA on: its averages are part of what must resume exactly)."""
    from tui_trainer.cli import main

    folder = tmp_path_factory.mktemp("straight")
    assert main(["train", str(config(folder, tiny_sd15, dataset, training=EMA))]) == 0
    return only_run(folder)


@pytest.fixture(scope="module")
def interrupted(tiny_sd15: Path, dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same 12 steps with samples every 2 steps, sample/backup/save commands at step 2, a stop at step 5,
    then `tui-trainer resume`."""
    from tui_trainer.cli import main

    folder = tmp_path_factory.mktemp("interrupted")
    path = config(folder, tiny_sd15, dataset, training=EMA, extra=SAMPLES, sampling='every = 2\nunit = "steps"\nbefore_training = true')
    with at_steps({2: send("sample", "backup", "save"), 5: send("stop")}):
        assert main(["train", str(path)]) == 0
    run = only_run(folder)
    assert json.loads((run / "status.json").read_text())["state"] == "stopped"
    assert main(["resume", str(run)]) == 0
    return run


def test_stop_and_resume_is_bit_exact(straight: Path, interrupted: Path):
    for file in ("output/tiny.safetensors", "backups/step-000012/trainable.safetensors"):  # EMA weights, trained weights
        expected, actual = lora_tensors(straight / file), lora_tensors(interrupted / file)
        assert expected.keys() == actual.keys()
        assert all(expected[key].equal(actual[key]) for key in expected), file
    straight_steps, resumed_steps = final_steps(straight), final_steps(interrupted)
    assert list(resumed_steps) == list(range(1, 13))
    for step in range(1, 13):
        for field in ("loss", "smoothed_loss", "lr", "epoch"):
            assert getattr(resumed_steps[step], field) == getattr(straight_steps[step], field), (step, field)
    assert len({event.lr["unet"] for event in straight_steps.values()}) > 6  # the cosine schedule moved


def test_stop_backs_up_saves_and_ends_then_resume_continues(interrupted: Path):
    kinds = [event.type for event in events(interrupted)]
    first_end = kinds.index("end")
    stop = events(interrupted)[first_end]
    assert stop.reason == "stopped" and stop.step == 5 and stop.command == "stop"
    assert [event.step for event in of_type(interrupted, "step")] == list(range(1, 13))
    (resume,) = of_type(interrupted, "resume")
    assert resume.step == 5 and resume.backup.endswith("step-000005") and resume.changed == []
    assert resume.epoch == 2 and resume.batch_index == 1
    assert of_type(interrupted, "end")[-1].reason == "completed"
    assert not list((interrupted / "commands").iterdir())


def test_commands_sample_backup_save_each_act_within_a_step(interrupted: Path):
    samples = of_type(interrupted, "sample")
    assert [event.step for event in samples] == [0, 2, 4, 6, 8, 10, 12]  # before training, every 2 steps (the command joins step 2)
    for event in samples:
        (path,) = event.paths
        assert Path(path).name == f"step-{event.step:06d}-0.png" and Path(path).read_bytes()[:4] == b"\x89PNG"
        assert event.prompts == ["red, circle"]
    backups = of_type(interrupted, "backup")
    assert [event.step for event in backups] == [2, 5, 12]
    saves = of_type(interrupted, "save")
    assert [Path(event.path).name for event in saves] == ["tiny-step-000002.safetensors", "tiny.safetensors", "tiny.safetensors"]
    assert lora_tensors(interrupted / "output" / "tiny-step-000002.safetensors")
    assert sorted(path.name for path in (interrupted / "backups").iterdir()) == ["step-000002", "step-000005", "step-000012"]


def test_backup_holds_state_and_a_manifest(interrupted: Path, tmp_path: Path):
    import shutil

    from tui_trainer.config import parse_config
    from tui_trainer.train.backup import check_backup, newest_backup

    backup = newest_backup(interrupted / "backups")
    assert backup.step == 12 and check_backup(backup.path) is None
    trainable, state, config_text = backup.load()
    assert any(key.startswith("unet.") for key in trainable) and any(key.startswith("text_encoder.") for key in trainable)
    assert state["step"] == 12 and state["epoch"] == 3 and state["batch_index"] == 0
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda", "generators"}
    assert state["optimizer"]["state"] and state["lr_scheduler"]["last_epoch"] == 12
    assert state["ema"]["optimization_step"] == 12 and len(state["ema"]["shadow_params"]) == len(trainable)
    assert [sample.prompt for sample in parse_config(config_text).samples] == ["red, circle"]
    manifest = json.loads((backup.path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"trainable.safetensors", "state.safetensors", "state.json", "config.toml"}
    tampered = shutil.copytree(backup.path, tmp_path / backup.path.name)
    (tampered / "state.json").write_text((tampered / "state.json").read_text().replace("12", "13", 1))
    assert "sha256" in check_backup(tampered)


def test_disk_failure_sigterm_resumes_and_more_epochs(tiny_sd15: Path, dataset: Path, tmp_path: Path):
    """A failed backup write (no space) ends the run with an error and keeps the previous backup; resumed, a
    SIGTERM stops it with a backup; resumed again it finishes; with one more epoch it goes on from there."""
    from tui_trainer.cli import main
    from tui_trainer.train import backup as backup_module

    cadence = 'every = 2\nunit = "steps"\nrolling_count = 5'
    path = config(tmp_path, tiny_sd15, dataset, training={"epochs": "2"}, backup=cadence)
    write_tensors = backup_module._write_tensors

    def full_disk(target: Path, tensors: dict) -> None:
        if target.parent.name.startswith(".step-000004."):
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        write_tensors(target, tensors)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backup_module, "_write_tensors", full_disk)
        assert main(["train", str(path)]) == 1
    run = only_run(tmp_path)
    error = of_type(run, "error")[-1]
    assert error.step == 4 and "No space left on device" in error.message and "step 2" in error.hint
    assert of_type(run, "end")[-1].reason == "error"
    assert sorted(path.name for path in (run / "backups").iterdir()) == ["step-000002"]

    with at_steps({5: lambda run_path: os.kill(os.getpid(), signal.SIGTERM)}):
        assert main(["resume", str(run)]) == 0
    end = of_type(run, "end")[-1]
    assert end.reason == "stopped" and end.signal == "SIGTERM" and end.step == 5
    assert of_type(run, "resume")[-1].step == 2
    assert of_type(run, "backup")[-1].step == 5

    assert main(["resume", str(run)]) == 0
    assert of_type(run, "end")[-1].reason == "completed" and of_type(run, "end")[-1].step == 8

    refused = config(tmp_path / "smaller-batch", tiny_sd15, dataset, training={"epochs": "2", "batch_size": "1"}, backup=cadence,
                     workspace=tmp_path / "ws")
    assert main(["train", str(refused), "--resume", str(run)]) == 1
    assert "training.batch_size: 2 -> 1" in of_type(run, "error")[-1].message

    longer = config(tmp_path / "longer", tiny_sd15, dataset, backup=cadence, workspace=tmp_path / "ws")
    assert main(["train", str(longer), "--resume", str(run)]) == 0
    resume = of_type(run, "resume")[-1]
    assert resume.step == 8 and resume.changed == ["training.epochs"] and resume.total_steps == 12
    steps = final_steps(run)
    assert list(steps) == list(range(1, 13)) and [steps[step].epoch for step in (4, 5, 8, 9, 12)] == [1, 2, 2, 3, 3]
    assert of_type(run, "end")[-1].reason == "completed" and "epochs = 3" in (run / "config.toml").read_text()


def test_nan_loss_stops_with_an_error_and_keeps_the_last_good_backup(tiny_sd15: Path, dataset: Path, tmp_path: Path):
    from tui_trainer.cli import main
    from tui_trainer.train import entry

    path = config(tmp_path, tiny_sd15, dataset, backup='every = 2\nunit = "steps"')
    micro_step, calls = entry.TrainRecipe._micro_step, []

    def poisoned(self, *args, **kwargs):
        calls.append(1)
        loss = micro_step(self, *args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(entry.TrainRecipe, "_micro_step", poisoned)
        assert main(["train", str(path)]) == 1
    run = only_run(tmp_path)
    error = of_type(run, "error")[-1]
    assert error.step == 3 and "nan" in error.message and "learning_rate" in error.hint
    assert sorted(path.name for path in (run / "backups").iterdir()) == ["step-000002"]
    assert not of_type(run, "save")
