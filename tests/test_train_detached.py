"""Trainers in their own processes: a detached run outlives its launcher and survives kill -9 in a backup write;
a 2-process (gloo, CPU) run writes one set of outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from test_train_resume import config, events, of_type, only_run

pytestmark = pytest.mark.slow

TIMEOUT_S = 240.0


def wait_for(condition: Callable[[], object], what: str, timeout: float = TIMEOUT_S) -> object:
    """Poll `condition` until it is truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tui_trainer.devkit.datasets import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data"), ((64, 64, 6), (72, 56, 2)))


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui_trainer.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=TIMEOUT_S)


def kill_trainer(run) -> None:
    """Leave no trainer of a failed test behind."""
    from tui_trainer.runs.status import pid_alive, read_status

    pid = read_status(run).get("pid")
    if isinstance(pid, int) and pid != os.getpid() and pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def test_detached_run_outlives_its_launcher_and_resumes_after_kill_9_in_a_backup(
    tiny_sd15: Path, dataset: Path, tmp_path: Path, request: pytest.FixtureRequest,
):
    from tui_trainer.cli import main
    from tui_trainer.runs.layout import RunDir
    from tui_trainer.runs.status import pid_alive, read_status

    path = config(tmp_path, tiny_sd15, dataset, training={"max_steps": "6"}, backup='every = 2\nunit = "steps"')
    flag = tmp_path / "paused-in-backup-4"
    launched = cli("train", str(path), "--detach", env={"TUI_TRAINER_TEST_PAUSE_IN_BACKUP": f"4:{flag}"})
    assert launched.returncode == 0, launched.stderr
    run = only_run(tmp_path)
    request.addfinalizer(lambda: kill_trainer(RunDir(run)))
    assert f"run folder: {run}" in launched.stdout
    assert not of_type(run, "step")  # the launcher returned before any training

    wait_for(flag.exists, "the backup of step 4 to pause")
    assert [event.step for event in of_type(run, "step")] == [1, 2, 3, 4]  # trained on after its launcher exited
    pid = read_status(RunDir(run))["pid"]
    assert pid != os.getpid() and pid_alive(pid)
    assert main(["resume", str(run)]) == 2  # refused: its trainer is alive
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), "the trainer to die")
    assert read_status(RunDir(run))["state"] == "crashed"
    backups = run / "backups"
    assert sorted(path.name for path in backups.iterdir() if not path.name.startswith(".")) == ["step-000002"]
    assert [path for path in backups.iterdir() if path.name.startswith(".step-000004.")]  # the half-written one

    assert main(["resume", str(run)]) == 0
    assert of_type(run, "resume")[-1].step == 2
    assert [event.step for event in of_type(run, "step")] == [1, 2, 3, 4, 3, 4, 5, 6]
    assert of_type(run, "end")[-1].reason == "completed"
    assert sorted(path.name for path in backups.iterdir()) == ["step-000002", "step-000004", "step-000006"]
    assert (run / "output" / "tiny.safetensors").is_file()
    log = (run / "train.log").read_text()
    assert log.count("step 1/6") == 1  # the detached trainer's stdout is train.log: each line once


def test_two_processes_train_one_run(tiny_sd15: Path, dataset: Path, tmp_path: Path):
    path = config(tmp_path, tiny_sd15, dataset, training={"batch_size": "1", "max_steps": "3"}, backup='every = 2\nunit = "steps"',
                  distributed="num_processes = 2")
    finished = cli("train", str(path))
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    run = only_run(tmp_path)
    kinds = [event.type for event in events(run)]
    assert kinds.count("start") == 1 and kinds.count("end") == 1
    start = of_type(run, "start")[0]
    assert start.num_processes == 2 and start.effective_batch == 2 and start.steps_per_epoch == 4
    assert [event.step for event in of_type(run, "step")] == [1, 2, 3]
    assert [event.step for event in of_type(run, "backup")] == [2, 3]
    assert [Path(event.path).name for event in of_type(run, "save")] == ["tiny.safetensors"]
    assert sorted(path.name for path in (run / "output").iterdir()) == ["tiny.safetensors"]
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def test_two_processes_train_a_last_batch_too_small_to_split(tiny_sd15: Path, tmp_path: Path):
    """Remainder "partial": the last batch of 3 images has 1 image for 2 processes; the process without an image
    still joins the step (share 0) instead of leaving the other waiting in DDP's all-reduce."""
    from tui_trainer.devkit.datasets import make_dataset

    data = make_dataset(tmp_path / "data", ((64, 64, 3),))
    path = config(tmp_path, tiny_sd15, data, training={"batch_size": "1", "max_steps": "4", "bucket_remainder": '"partial"'},
                  distributed="num_processes = 2\ntimeout_minutes = 2")
    finished = cli("train", str(path))
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    run = only_run(tmp_path)
    assert of_type(run, "start")[0].steps_per_epoch == 2
    assert [event.step for event in of_type(run, "step")] == [1, 2, 3, 4]
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def test_a_stalled_process_fails_the_run_naming_the_phase(tiny_sd15: Path, dataset: Path, tmp_path: Path):
    """Process 1 stops answering while caching latents: process 0 gives up after distributed.timeout_minutes with an
    error that names the phase, and the run ends failed instead of hanging."""
    path = config(tmp_path, tiny_sd15, dataset, training={"batch_size": "1", "max_steps": "3"},
                  distributed="num_processes = 2\ntimeout_minutes = 0.5")
    started = time.monotonic()
    failed = cli("train", str(path), env={"TUI_TRAINER_TEST_STALL": "1:latent caching"})
    assert failed.returncode != 0
    assert time.monotonic() - started < TIMEOUT_S - 30
    run = only_run(tmp_path)
    (error,) = of_type(run, "error")
    assert "process 0 of 2 waited in vain for the others during latent caching" in error.message
    assert "distributed.timeout_minutes" in error.hint
    assert not of_type(run, "step")
    assert json.loads((run / "status.json").read_text())["state"] == "failed"
