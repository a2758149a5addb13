"""How `tui-trainer train` / `resume` start a trainer: here, detached in its own session, or as `accelerate launch`
processes (distributed.num_processes > 1). Imports no torch, so --detach returns at once.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TextIO

from tui_trainer.config import TrainConfig, dump_config, resolve_path, with_absolute_paths
from tui_trainer.models.problems import load_checked_config
from tui_trainer.runs.commands import Command, send_command
from tui_trainer.runs.launch import launch_run, spawn_detached, trainer_command
from tui_trainer.runs.layout import RunDir, create_run_dir
from tui_trainer.runs.status import TERMINAL_STATES, read_status
from tui_trainer.train.control import stop_signals
from tui_trainer.train.distributed import in_launched_process
from tui_trainer.train.startup import import_train_config

class LaunchError(ValueError):
    """The command line asks for something impossible (the message says what)."""


def load_train_config(config_path: str | Path) -> TrainConfig:
    """Load and check a config file, relative paths made absolute (ConfigError when it is invalid)."""
    return with_absolute_paths(load_checked_config(config_path), config_path)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accelerate_command(num_processes: int, trainer_args: list[str]) -> list[str]:
    """`accelerate launch` of `tui-trainer <trainer_args>` in `num_processes` processes (DDP; gloo on a CPU).
    Mixed precision is left to the trainer's own Accelerator; a free port lets several runs share a machine."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), "-m", "tui_trainer.cli", *trainer_args,
    ]


def _run_folder(config: TrainConfig, config_path: str | Path, run_dir: str | Path | None) -> RunDir:
    if run_dir is None:
        return create_run_dir(resolve_path(config_path, config.workspace.dir), config.workspace.run_name, dump_config(config))
    run = RunDir(Path(run_dir).expanduser().resolve())
    if not run.exists():
        raise LaunchError(f"{run_dir}: not a run folder (it has no config.toml)")
    return run


def check_not_running(run: RunDir) -> None:
    """Refuse a second trainer in a run folder whose trainer is alive (another process of this host)."""
    status = read_status(run)
    pid = status.get("pid")
    if status.get("state") not in TERMINAL_STATES and status.get("host") == socket.gethostname() and pid not in (None, os.getpid()):
        raise LaunchError(f"{run.path} is still training (pid {pid}); stop it first: touch {run.commands_dir / 'stop'}")


def run_distributed(config: TrainConfig, config_path: str | Path, run_dir: str | Path | None, resume: bool) -> tuple[int, RunDir]:
    """Train in `distributed.num_processes` processes and wait; SIGTERM / SIGINT here become a `stop` command."""
    run = _run_folder(config, config_path, run_dir)
    args = ["train", str(Path(config_path).resolve()), "--run-dir", str(run.path)]
    process = subprocess.Popen(accelerate_command(config.distributed.num_processes, args + (["--resume", str(run.path)] if resume else [])))
    with stop_signals(lambda signum: send_command(run, Command.STOP)):
        return process.wait(), run


def detach(config: TrainConfig, config_path: str | Path, run_dir: str | Path | None, resume: bool) -> RunDir:
    """Start the trainer in its own session (output to train.log) and return its run folder at once."""
    if run_dir is None:
        return launch_run(resolve_path(config_path, config.workspace.dir), config.workspace.run_name, dump_config(config))
    run = _run_folder(config, config_path, run_dir)
    spawn_detached(trainer_command(Path(config_path).resolve(), run, resume=resume), run)
    return run


def start_training(
    config_path: str | Path, *, run_dir: str | Path | None = None, resume: str | Path | None = None,
    detached: bool = False, console: TextIO | None = None, own_process: bool = False,
) -> tuple[int, RunDir]:
    """Train `config_path` as the command line asks: (exit code, run folder). --resume RUN_DIR writes into RUN_DIR.
    own_process: this process runs nothing but this trainer (the `tui-trainer` command), so its start-up may set
    process-wide state (`startup.trainer_imports`)."""
    if resume is not None and run_dir is not None and Path(run_dir).resolve() != Path(resume).resolve():
        raise LaunchError(f"--resume {resume} and --run-dir {run_dir} name different folders; a resumed run writes into its own folder")
    config = load_train_config(config_path)
    folder = resume if resume is not None else run_dir
    if resume is not None and not in_launched_process():
        check_not_running(_run_folder(config, config_path, resume))
    if detached:
        return 0, detach(config, config_path, folder, resume is not None)
    if config.distributed.num_processes > 1 and not in_launched_process():
        return run_distributed(config, config_path, folder, resume is not None)
    train_config = import_train_config(config, own_process)
    run = _run_folder(config, config_path, folder) if folder is not None else None
    return train_config(config, config_path, dump_config(config), console=console, run=run, resume=resume is not None)
