"""The run-directory protocol: layout, events tailing, status with dead-pid detection, command files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import shutil
import sys
import time
from dataclasses import fields
from pathlib import Path

from tui_trainer.runs.commands import Command, consume_command, pending_commands, send_command
from tui_trainer.runs.events import (
    EVENT_KINDS, BackupEvent, CacheProgressEvent, EndEvent, ErrorEvent, Event, EventReader, EventWriter, ResumeEvent,
    SampleEvent, SaveEvent, StartEvent, StepEvent, UnknownEvent, ValidationEvent, WarningEvent, event_from_json, parse_events,
    read_events,
)
from tui_trainer.runs.layout import DELETING_PREFIX, create_run_dir, delete_run, list_runs
from tui_trainer.runs.status import RunState, read_status, write_status
from tui_trainer.runs.summary import RunSummary


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
    writer.emit(StartEvent(total_steps=3))
    (start,) = reader_a.read_new()
    assert isinstance(start, StartEvent) and start.total_steps == 3 and isinstance(start.time, float)
    with open(run.events_file, "a") as handle:
        handle.write('{"type": "step", "step": 1')
    assert reader_a.read_new() == []
    with open(run.events_file, "a") as handle:
        handle.write(', "loss": 0.5}\n')
    assert reader_a.read_new() == [StepEvent(step=1, loss=0.5)]
    reader_b = EventReader(run.events_file)
    assert [type(e) for e in reader_b.read_new()] == [StartEvent, StepEvent]
    writer.close()
    assert len(read_events(run.events_file)) == 2


EXAMPLES: dict[type[Event], Event] = {example.__class__: example for example in (
    StartEvent(time=1.5, config_hash="abc123", run="dogs-1", method="lora", family="sdxl", base_model="m.safetensors",
               seed=7, device="cuda:0", mixed_precision="bf16", num_processes=2, epochs=4, total_images=40,
               batches_per_epoch=20, steps_per_epoch=10, total_steps=40, effective_batch=4,
               buckets=[{"width": 64, "height": 64, "images": 40}], trainable_params={"unet": 1234}),
    ResumeEvent(time=2.5, step=12, epoch=2, batch_index=3, backup="backups/step-000012", changed=["training.lr"],
                total_steps=40),
    CacheProgressEvent(time=3.5, kind="latents", done=5, total=40, hits=2),
    StepEvent(time=4.5, step=13, total_steps=40, epoch=2, epochs=4, loss=0.125, smoothed_loss=0.25,
              lr={"unet": 1e-4, "text_encoder": 5e-5}, it_per_s=2.0, s_per_step=0.5, eta_s=13.5, vram_bytes=3 * 2**30),
    SampleEvent(time=5.5, step=13, paths=["samples/step-000013-0.png"], prompts=["a red circle"]),
    ValidationEvent(time=5.75, step=13, epoch=2, loss=0.125, concepts={"held-out": 0.125}, images=3, seconds=0.5),
    BackupEvent(time=6.5, step=13, path="backups/step-000013", bytes=2048, seconds=0.25,
                removed=["backups/step-000010"]),
    SaveEvent(time=7.5, path="output/dogs.safetensors", format="kohya", step=13),
    WarningEvent(time=8.5, message="skipped 2 images", path="a.png", paths=["a.png", "b.png"]),
    ErrorEvent(time=9.5, message="CUDA out of memory", hint="batch size 1", step=13),
    EndEvent(time=10.5, reason="stopped", step=13, signal="SIGTERM", command="stop"),
)}


def test_every_event_kind_round_trips_through_its_json():
    assert set(EXAMPLES) == set(EVENT_KINDS.values())  # a new kind needs an example here
    for kind, event in EXAMPLES.items():
        defaults = kind()
        assert all(getattr(event, f.name) != getattr(defaults, f.name) for f in fields(kind) if f.name != "extra"), kind
        line = json.dumps(event.to_json())
        assert json.loads(line)["type"] == kind.KIND == event.type
        assert event_from_json(json.loads(line)) == event


def test_the_written_line_is_the_format_old_readers_know(tmp_path: Path, monkeypatch):
    """Byte for byte what the trainer wrote before events were typed: "type", "time", the fields in their order, and
    optional fields (vram_bytes off CUDA, a warning's path) left out rather than null."""
    run = create_run_dir(tmp_path, "r", "")
    writer = EventWriter(run)
    monkeypatch.setattr(time, "time", lambda: 1795000000.12345)
    writer.emit(StepEvent(step=1, total_steps=10, epoch=1, epochs=2, loss=0.5, smoothed_loss=0.5, lr={"unet": 0.0001},
                          it_per_s=None, s_per_step=None, eta_s=None))
    writer.emit(WarningEvent(message="float16 weights need a CUDA GPU"))
    writer.emit(EndEvent(reason="completed", step=10))
    writer.close()
    assert run.events_file.read_text().splitlines() == [
        '{"type":"step","time":1795000000.123,"step":1,"total_steps":10,"epoch":1,"epochs":2,"loss":0.5,'
        '"smoothed_loss":0.5,"lr":{"unet":0.0001},"it_per_s":null,"s_per_step":null,"eta_s":null}',
        '{"type":"warning","time":1795000000.123,"message":"float16 weights need a CUDA GPU"}',
        '{"type":"end","time":1795000000.123,"reason":"completed","step":10}',
    ]


def test_a_newer_trainers_kind_and_fields_read_as_text_and_are_kept():
    unknown, step, start = parse_events([
        b'{"type":"grad_norm","time":5.0,"step":3,"norm":1.25}',
        b'{"type":"step","time":6.0,"step":3,"loss":"nan?","ema_loss":0.2,"extra":1}',
        b'{"type":"start","time":"yesterday","total_steps":10}',
    ])
    assert isinstance(unknown, UnknownEvent) and unknown.type == "grad_norm" and unknown.time == 5.0
    assert unknown.raw == {"type": "grad_norm", "time": 5.0, "step": 3, "norm": 1.25} == unknown.to_json()
    assert unknown.unknown_text() == 'event this viewer does not know: {"type": "grad_norm", "time": 5.0, "step": 3, "norm": 1.25}'
    assert isinstance(step, StepEvent) and (step.step, step.loss, step.time) == (3, None, 6.0)
    assert step.extra == {"loss": "nan?", "ema_loss": 0.2, "extra": 1}
    assert step.unknown_text() == 'step event with fields this viewer does not know: {"loss": "nan?", "ema_loss": 0.2, "extra": 1}'
    assert step.to_json()["loss"] == "nan?" and step.to_json()["ema_loss"] == 0.2  # written back as read
    assert (start.total_steps, start.time, start.extra) == (10, None, {"time": "yesterday"})
    assert StepEvent(step=1).unknown_text() is None
    summary = RunSummary()
    for event in (unknown, step, start):
        summary.apply(event)
    assert (summary.step, summary.loss, summary.total_steps, summary.first_time, summary.last_time) == (3, None, 10, 5.0, 6.0)


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
    assert pending_commands(run) == [], "no commands folder yet"
    send_command(run, "stop")
    send_command(run, Command.SAMPLE)
    assert pending_commands(run) == [Command.SAMPLE, Command.STOP]
    consume_command(run, Command.SAMPLE)
    assert pending_commands(run) == [Command.STOP]
    (run.commands_dir / ".stop.k3j9x.tmp").write_text("")  # the temp name atomic_write_text gives it
    (run.commands_dir / "stop").unlink()
    assert pending_commands(run) == [], "a command file still being written is not a command"
