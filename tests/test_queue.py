"""The run queue: atomic adds, order, remove, pause, one runner per workspace, and real tiny runs trained one after
another by a detached runner, a failing one recorded while the queue goes on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from train_support import write_config
from tui_trainer.cli import main
from tui_trainer.runs.queue import EntryState, QueueError, RunQueue
from tui_trainer.runs.status import pid_alive

TIMEOUT_S = 300.0
TRAINING = ('resolution = "64"\nbatch_size = 2\nmax_steps = 2\ngradient_checkpointing = false\ncache_latents = false\n'
            "dataloader_workers = 0\ntensorboard = false")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui_trainer.cli", *args], capture_output=True, text=True, timeout=TIMEOUT_S)


def test_concurrent_adds_lose_no_entry_and_move_remove_keep_the_order(tmp_path: Path):
    queue = RunQueue(tmp_path / "ws")
    threads = [threading.Thread(target=lambda i=i: queue.add(f"# config {i}\n", f"run{i}", f"/c{i}.toml")) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = queue.entries()
    assert sorted(entry.name for entry in entries) == [f"run{i}" for i in range(8)]
    assert queue.config_file(entries[0]).read_text().startswith("# config ")
    first, last = entries[0], entries[-1]
    queue.move(last.id, 1)
    assert [entry.id for entry in queue.entries()][:2] == [last.id, first.id]
    queue.move("1", 8)
    assert queue.entries()[-1].id == last.id
    queue.set_state(first, EntryState.RUNNING, run="/somewhere")
    with pytest.raises(QueueError, match="is running in /somewhere; stop it first"):
        queue.remove(first.id)
    queue.remove(last.id[:-1])  # a unique prefix
    assert last.id not in {entry.id for entry in queue.entries()} and len(queue.entries()) == 7
    assert not queue.config_file(last).exists()
    with pytest.raises(QueueError, match="position 9 is outside the queue; allowed: 1-7"):
        queue.move("2", 9)
    with pytest.raises(QueueError, match="'nope' is no entry"):
        queue.find("nope")


def test_list_json_pause_resume_and_a_second_runner_names_the_lock_holder(tmp_path: Path, capsys):
    workspace = tmp_path / "ws"
    queue = RunQueue(workspace)
    entry = queue.add("# c\n", "one", "/one.toml")
    assert main(["queue", "pause", "--workspace", str(workspace)]) == 0
    assert main(["queue", "list", "--workspace", str(workspace), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert listed["paused"] is True and listed["runner_pid"] is None
    assert [(item["id"], item["state"]) for item in listed["entries"]] == [(entry.id, "pending")]
    assert main(["queue", "resume", "--workspace", str(workspace)]) == 0
    assert not queue.paused
    with queue.runner_lock():
        assert queue.runner_pid() == os.getpid()
        second = cli("queue", "run", "--workspace", str(workspace))
        assert second.returncode == 2
        assert f"already has a runner (pid {os.getpid()})" in second.stderr
    assert queue.runner_pid() is None
    assert queue.entries()[0].state is EntryState.PENDING


@pytest.mark.slow
def test_a_detached_runner_trains_the_queue_in_order_and_goes_on_after_a_failure(tiny_sd15: Path, tmp_path: Path):
    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.runs.layout import RunDir
    from tui_trainer.runs.status import read_status

    data = make_dataset(tmp_path / "data", ((64, 64, 4),))
    empty = tmp_path / "no-images"
    empty.mkdir()
    workspace = tmp_path / "ws"
    configs = []
    for name, images in (("first", data), ("broken", empty), ("third", data)):
        folder = tmp_path / name
        folder.mkdir()
        path = write_config(folder, tiny_sd15, images, workspace=workspace, training=TRAINING)
        path.write_text(path.read_text().replace('run_name = "tiny"', f'run_name = "{name}"'))
        configs.append(str(path))
    assert main(["queue", "add", *configs]) == 0
    queue = RunQueue(workspace)
    assert [entry.name for entry in queue.entries()] == ["first", "broken", "third"]

    started = cli("queue", "run", "--workspace", str(workspace), "--detach")
    assert started.returncode == 0, started.stderr
    pid = int(started.stdout.split("pid ")[1].split(")")[0])
    deadline = time.monotonic() + TIMEOUT_S
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not pid_alive(pid), "the queue runner did not finish"
    entries = queue.entries()
    assert [(entry.name, entry.state) for entry in entries] == [
        ("first", EntryState.FINISHED), ("broken", EntryState.FAILED), ("third", EntryState.FINISHED)]
    runs = [RunDir(Path(entry.run)) for entry in entries]
    assert [read_status(run)["state"] for run in runs] == ["finished", "failed", "finished"]
    assert [run.name.split("-")[0] for run in runs] == ["first", "broken", "third"]
    assert all(run.path.parent == workspace / "runs" for run in runs)
    assert list((runs[0].output_dir).glob("*.safetensors")) and list((runs[2].output_dir).glob("*.safetensors"))
    assert entries[1].exit_code == 1
    log = (queue.folder / "runner.log").read_text()
    assert log.index("first") < log.index("broken") < log.index("third")
    assert runs[0].status_file.stat().st_mtime <= runs[2].config_file.stat().st_mtime  # one after the other


@pytest.mark.slow
def test_a_paused_queue_waits_and_goes_on_when_resumed(tmp_path: Path):
    workspace = tmp_path / "ws"
    queue = RunQueue(workspace)
    entry = queue.add('method = "no-such-method"\n', "broken", "/broken.toml")
    queue.pause()
    runner = subprocess.Popen([sys.executable, "-m", "tui_trainer.cli", "queue", "run", "--workspace", str(workspace)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while queue.runner_pid() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert queue.runner_pid() == runner.pid
        time.sleep(1.5)  # more than a paused runner's poll
        assert runner.poll() is None and queue.entries()[0].state is EntryState.PENDING
        assert main(["queue", "resume", "--workspace", str(workspace)]) == 0
        output, _ = runner.communicate(timeout=TIMEOUT_S)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 1  # an entry failed
    (done,) = queue.entries()
    assert done.id == entry.id and done.state is EntryState.FAILED and done.exit_code == 2
    assert "no-such-method" in Path(done.run, "train.log").read_text()
    assert f"{entry.id} (broken) failed (exit 2)" in output
