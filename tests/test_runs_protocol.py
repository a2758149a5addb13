"""The run-directory protocol: layout, events tailing, status with dead-pid detection, command files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import shutil
import sys
import time
from pathlib import Path

from tui_trainer.runs.commands import Command, consume_command, pending_commands, send_command
from tui_trainer.runs.events import EventReader, EventWriter, read_events
from tui_trainer.runs.layout import DELETING_PREFIX, create_run_dir, delete_run, list_runs
from tui_trainer.runs.status import RunState, read_status, write_status


def test_create_run_dir_layout(tmp_path: Path):
    run = create_run_dir(tmp_path, "dogs", "version = 1\n", now=0)
    assert run.path.parent == tmp_path / "runs"
    assert run.name == "dogs-" + time.strftime("%Y%m%d-%H%M%S", time.localtime(0))
    assert run.config_file.read_text() == "version = 1\n"
    for folder in (run.commands_dir, run.backups_dir, run.samples_dir, run.output_dir):
        assert folder.is_dir()
    second = create_run_dir(tmp_path, "dogs", "version = 1\n", now=0)
    assert second.path != run.path
    assert {r.path for r in list_runs(tmp_path)} == {run.path, second.path}


def test_list_runs_skips_a_run_deleted_while_listing_and_one_being_deleted(tmp_path: Path, monkeypatch):
    kept = create_run_dir(tmp_path, "kept", "version = 1\n", now=0)
    vanishing = create_run_dir(tmp_path, "vanishing", "version = 1\n", now=0)
    being_deleted = create_run_dir(tmp_path, "old", "version = 1\n", now=0)
    being_deleted.path.rename(being_deleted.path.with_name(DELETING_PREFIX + being_deleted.name))
    listed = list((tmp_path / "runs").iterdir())

    def iterdir_then_delete(self):
        shutil.rmtree(vanishing.path)
        return iter(listed)

    monkeypatch.setattr(Path, "iterdir", iterdir_then_delete)
    assert [r.path for r in list_runs(tmp_path)] == [kept.path]


def test_delete_run_removes_the_folder_and_leaves_the_others(tmp_path: Path):
    kept = create_run_dir(tmp_path, "kept", "version = 1\n", now=0)
    doomed = create_run_dir(tmp_path, "doomed", "version = 1\n", now=0)
    (doomed.samples_dir / "step-000001-0.png").write_bytes(b"png")
    delete_run(doomed)
    assert not doomed.path.exists()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [kept.name]


def test_events_tail_by_offset_with_partial_last_line(tmp_path: Path):
    run = create_run_dir(tmp_path, "r", "")
    writer = EventWriter(run)
    reader_a = EventReader(run.events_file)
    writer.emit("start", total_steps=3)
    assert [e["type"] for e in reader_a.read_new()] == ["start"]
    with open(run.events_file, "a") as handle:
        handle.write('{"type": "step", "step": 1')
    assert reader_a.read_new() == []
    with open(run.events_file, "a") as handle:
        handle.write(', "loss": 0.5}\n')
    assert reader_a.read_new() == [{"type": "step", "step": 1, "loss": 0.5}]
    reader_b = EventReader(run.events_file)
    assert [e["type"] for e in reader_b.read_new()] == ["start", "step"]
    writer.close()
    assert len(read_events(run.events_file)) == 2


def test_status_merges_and_detects_dead_trainer(tmp_path: Path):
    run = create_run_dir(tmp_path, "r", "")
    write_status(run, state=RunState.TRAINING, step=3)
    status = read_status(run)
    assert status["state"] == "training" and status["pid"] == os.getpid() and status["host"] == socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    status_file = json.loads(run.status_file.read_text())
    status_file["pid"] = dead.pid
    run.status_file.write_text(json.dumps(status_file))
    assert read_status(run)["state"] == "crashed"
    write_status(run, state=RunState.FINISHED)
    assert read_status(run)["state"] == "finished"


def test_command_files(tmp_path: Path):
    run = create_run_dir(tmp_path, "r", "")
    send_command(run, "stop")
    send_command(run, Command.SAMPLE)
    assert pending_commands(run) == [Command.SAMPLE, Command.STOP]
    consume_command(run, Command.SAMPLE)
    assert pending_commands(run) == [Command.STOP]
