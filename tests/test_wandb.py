"""[wandb]: a tiny run logs scalars, validation, samples and its config to an offline wandb run in its folder when no
API key is set. Skipped when wandb is not installed (it is an optional extra)."""

from __future__ import annotations

from pathlib import Path

import pytest

from train_support import write_config

pytest.importorskip("wandb")
pytestmark = pytest.mark.slow

TRAINING = ('resolution = "64"\nbatch_size = 2\nmax_steps = 2\ngradient_checkpointing = false\ndataloader_workers = 0\n'
            "tensorboard = false")
SAMPLE = '\n[[samples]]\nprompt = "red, circle"\nwidth = 64\nheight = 64\nsteps = 1\n'


def test_without_an_api_key_a_run_logs_offline_into_its_folder(tiny_sd15: Path, tmp_path: Path, monkeypatch):
    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.train.entry import train_file
    from tui_trainer.train.wandb_logger import wandb_mode

    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    assert wandb_mode() == "offline"
    data = make_dataset(tmp_path / "data", ((64, 64, 2),))
    path = write_config(tmp_path, tiny_sd15, data, training=TRAINING, wandb='enabled = true\nproject = "tiny-test"',
                        sampling='every = 2\nunit = "steps"')
    path.write_text(path.read_text() + SAMPLE)
    code, run = train_file(path)
    assert code == 0
    (offline,) = (run.path / "wandb").glob("offline-run-*")
    (records,) = offline.glob("*.wandb")  # wandb's own record log (protobuf), uploaded later by `wandb sync`
    logged = records.read_bytes()
    for text in (b"smoothed_loss", b"lr/unet", b"tiny-test", b"max_steps", run.name.encode()):
        assert text in logged, text
    assert list((offline / "files" / "media" / "images").glob("samples_2_*.png"))  # the sample of step 2
