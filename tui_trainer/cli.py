"""The `tui-trainer` command: one registry of subcommands, each importing only what it needs."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tui_trainer import __version__

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
FRAMES_PER_SECOND = "120"
"""Textual's frame cap (TEXTUAL_FPS, default 60) unless the user set one: an edit draws two frames (the typed
character, then the VRAM budget it changes), each waiting for the next frame slot, so 60 frames a second adds
up to 33 ms to a keystroke. Frames are drawn only when something changed, so an idle app costs nothing more."""


def _print_problems(problems: list) -> None:
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)


def run_app(make_app: Callable[[], Any]) -> None:
    """Ask the terminal about image protocols (in a thread, while `make_app` imports Textual), then run the app.

    The cycle collector is paused until the app has drawn its first screens (`TrainerApp.start_up_done` resumes
    it): start-up makes tens of thousands of long-lived objects (modules, classes, the config schema, widgets)
    and almost no cyclic garbage, and scanning them again and again as they are made cost about a tenth of the
    CPU time to the editor being ready (measured 2.57 s -> 2.32 s, importing the app 0.35 s -> 0.27 s).
    """
    gc.disable()
    try:
        from tui_trainer.tui.graphics import start_probe

        os.environ.setdefault("TEXTUAL_FPS", FRAMES_PER_SECOND)

        wait_for_probe = start_probe()
        app = make_app()
        wait_for_probe()
        app.run()
    finally:
        gc.enable()


def cmd_tui(args: argparse.Namespace) -> int:
    """Open the app: the editor for a config file, else the start page (recent files or the wizard)."""

    def make_app():
        from tui_trainer.tui.app import TrainerApp

        return TrainerApp(args.config)

    run_app(make_app)
    return EXIT_OK


def cmd_presets(args: argparse.Namespace) -> int:
    """List the shipped presets."""
    from tui_trainer.config import load_preset, preset_names

    rows = [(name, config.model.family.value, config.method.value, config.model.base_model)
            for name, config in ((name, load_preset(name)) for name in preset_names())]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for *columns, base_model in rows:
        print("  ".join([*(value.ljust(width) for value, width in zip(columns, widths, strict=True)), base_model]))
    return EXIT_OK


def cmd_config_new(args: argparse.Namespace) -> int:
    """Write a new config file from a preset."""
    from tui_trainer.atomic import atomic_write_text
    from tui_trainer.config import ConfigError, preset_text

    target = Path(args.output)
    if target.exists() and not args.force:
        print(f"error: {target} already exists; use --force to overwrite it", file=sys.stderr)
        return EXIT_USAGE
    try:
        text = preset_text(args.preset)
    except ConfigError as error:
        _print_problems(error.problems)
        return EXIT_USAGE
    atomic_write_text(target, text)
    print(f"wrote {target} from preset {args.preset}")
    return EXIT_OK


def cmd_config_validate(args: argparse.Namespace) -> int:
    """Validate a config file: exit 0 and 'ok', or exit 2 with every error."""
    from tui_trainer.config import ConfigError, validate_file
    from tui_trainer.models.problems import family_problems

    try:
        config, problems, migrated = validate_file(args.config)
    except ConfigError as error:
        _print_problems(error.problems)
        return EXIT_USAGE
    if migrated.changes:
        print(f"{args.config}: version {migrated.from_version} config, read as version {config.version}:")
        print("\n".join(f"  migrated {change}" for change in migrated.changes))
        print("  (the file is unchanged; saving it from the TUI writes the new format)")
    problems += family_problems(config, args.config)
    if problems:
        _print_problems(problems)
        return EXIT_USAGE
    if not any(concept.enabled for concept in config.concepts):
        print(f"warning: {args.config}: concepts: no enabled concept; add a [[concepts]] table before training")
    print("ok")
    return EXIT_OK


def cmd_config_docs(args: argparse.Namespace) -> int:
    """Print (or write) the config reference generated from the schema."""
    from tui_trainer.atomic import atomic_write_text
    from tui_trainer.config.reference import config_reference

    text = config_reference()
    if args.output:
        atomic_write_text(args.output, text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    """Convert a OneTrainer / kohya / kohya_ss config into our TOML and print the report; exit 2 (nothing written)
    when the source cannot be imported."""
    import json

    from tui_trainer.config import ConfigError, save_config
    from tui_trainer.config.importing import import_file

    source, target = Path(args.source), Path(args.output)
    if target.exists() and (target.resolve() == source.resolve() or not args.force):
        why = "is the source" if target.resolve() == source.resolve() else "already exists; use --force to overwrite it"
        print(f"error: {target} {why}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = import_file(source)
    except ConfigError as error:
        _print_problems(error.problems)
        return EXIT_USAGE
    save_config(result.config, target)
    if args.json:
        print(json.dumps({"output": str(target), "report": result.report.to_json()}, indent=2))
    else:
        sys.stdout.write(result.report.format())
        print(f"wrote {target}")
    return EXIT_OK


def cmd_buckets(args: argparse.Namespace) -> int:
    """Print the bucket table of a config (or its JSON); exit 2 on config or dataset errors."""
    import json

    from tui_trainer.config import ConfigError, load_config
    from tui_trainer.data import build_report, format_report

    try:
        config = load_config(args.config)
    except ConfigError as error:
        _print_problems(error.problems)
        return EXIT_USAGE
    report = build_report(config, args.config)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        sys.stdout.write(format_report(report))
    for message in report.errors:
        print(f"error: {args.config}: {message}", file=sys.stderr)
    return EXIT_USAGE if report.errors else EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    """Train in the foreground (or, with --detach, in the background), writing a run folder; exit 0 when the model
    is saved (or the trainer started), 1 on a training error."""
    from tui_trainer.config import ConfigError
    from tui_trainer.train.launching import LaunchError, start_training

    try:
        code, run = start_training(args.config, run_dir=args.run_dir, resume=args.resume, detached=args.detach, console=sys.stdout,
                                   own_process=args.own_process)
    except ConfigError as error:
        _print_problems(error.problems)
        return EXIT_USAGE
    except LaunchError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"run folder: {run.path}")
    return EXIT_OK if code == 0 else EXIT_ERROR


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue a run from its newest complete backup with the config in its folder."""
    run_dir = Path(args.run_dir).expanduser().resolve()
    if not (run_dir / "config.toml").is_file():
        print(f"error: {args.run_dir}: not a run folder (it has no config.toml)", file=sys.stderr)
        return EXIT_USAGE
    return cmd_train(argparse.Namespace(config=str(run_dir / "config.toml"), run_dir=None, resume=str(run_dir), detach=args.detach,
                                        own_process=args.own_process))


def cmd_estimate(args: argparse.Namespace) -> int:
    """Print the VRAM estimate of a config against the GPU or --gpu-memory (or its JSON); exit 2 on config errors."""
    import json

    from tui_trainer.config import ConfigError, load_config
    from tui_trainer.estimate import estimate, probe_gpus
    from tui_trainer.estimate.report import format_estimate, parse_size

    try:
        config = load_config(args.config)
        target = parse_size(args.gpu_memory) if args.gpu_memory else None
    except ConfigError as error:
        _print_problems(error.problems)
        return EXIT_USAGE
    except ValueError as error:
        print(f"error: --gpu-memory: {error}", file=sys.stderr)
        return EXIT_USAGE
    probe = probe_gpus()
    result = estimate(config, probe.gpus[0] if probe.gpus else None, target_bytes=target)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        title = f"{args.config} ({config.model.family.value}, {config.method.value})"
        sys.stdout.write(format_estimate(result, title, probe.message))
    return EXIT_OK


def cmd_attach(args: argparse.Namespace) -> int:
    """Watch a run folder (running or not); detaching or quitting leaves the trainer running."""
    from tui_trainer.runs.layout import RunDir

    run = RunDir(Path(args.run_dir).expanduser().resolve())
    if not run.exists():
        print(f"error: {args.run_dir}: not a run folder (it has no config.toml)", file=sys.stderr)
        return EXIT_USAGE

    def make_app():
        from tui_trainer.tui.app import TrainerApp
        from tui_trainer.tui.screens.run_monitor import RunMonitorScreen

        return TrainerApp(initial_screen=lambda: RunMonitorScreen(run))

    run_app(make_app)
    return EXIT_OK


def runs_workspace(value: str | None) -> Path:
    """The workspace to list: a folder, the workspace of a config file, else ./workspace."""
    from tui_trainer.config import load_config, resolve_path

    path = Path(value or "workspace").expanduser()
    if path.suffix == ".toml" and path.is_file():
        return resolve_path(path, load_config(path).workspace.dir)
    return path


def cmd_runs(args: argparse.Namespace) -> int:
    """Browse the runs of a workspace: attach, resume, edit the config, delete."""
    from tui_trainer.config import ConfigError

    try:
        workspace = runs_workspace(args.workspace)
    except ConfigError as error:
        _print_problems(error.problems)
        return EXIT_USAGE

    def make_app():
        from tui_trainer.tui.app import TrainerApp
        from tui_trainer.tui.screens.runs_browser import RunsBrowserScreen

        return TrainerApp(initial_screen=lambda: RunsBrowserScreen(workspace))

    run_app(make_app)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the demo workspace and open it in the app, or train it headless."""
    from tui_trainer.devkit.demo import build_demo_workspace

    print(f"preparing the demo workspace in {args.dir} ...", flush=True)
    config_path = build_demo_workspace(args.dir)
    if not args.headless:
        args.config = str(config_path)
        return cmd_tui(args)
    from tui_trainer.config import dump_config, load_config, with_absolute_paths
    from tui_trainer.train.startup import import_train_config

    config = with_absolute_paths(load_config(config_path), config_path)
    train_config = import_train_config(config, args.own_process)
    if args.max_steps:
        config.training.max_steps = args.max_steps
    code, run = train_config(config, config_path, dump_config(config), console=sys.stdout)
    print(f"run folder: {run.path}")
    if code == 0:
        print(f"LoRA: {sorted(str(path) for path in run.output_dir.glob('*.safetensors'))}")
    return EXIT_OK if code == 0 else EXIT_ERROR


def _queue(args: argparse.Namespace) -> Any:
    from tui_trainer.runs.queue import RunQueue

    return RunQueue(runs_workspace(args.workspace))


def cmd_queue_list(args: argparse.Namespace) -> int:
    """Print the queue: position, id, state, name, run folder (or its JSON)."""
    import json

    queue = _queue(args)
    entries = queue.entries()
    if args.json:
        print(json.dumps({"workspace": str(queue.workspace), "paused": queue.paused, "runner_pid": queue.runner_pid(),
                          "entries": [entry.to_json() for entry in entries]}, indent=2))
        return EXIT_OK
    pid = queue.runner_pid()
    print(f"queue of {queue.workspace}: " + ("paused, " if queue.paused else "") + (f"runner pid {pid}" if pid else "no runner"))
    for position, entry in enumerate(entries, start=1):
        print(f"{position:>3}  {entry.id}  {entry.state.value:<8}  {entry.name}  {entry.run or entry.source}")
    if not entries:
        print("  (empty: tui-trainer queue add CONFIG)")
    return EXIT_OK


def cmd_queue_add(args: argparse.Namespace) -> int:
    """Validate each config and append it (paths made absolute) to its workspace's queue."""
    from tui_trainer.config import ConfigError, dump_config, resolve_path, with_absolute_paths
    from tui_trainer.models.problems import load_checked_config
    from tui_trainer.runs.queue import RunQueue

    loaded = []
    for path in args.configs:
        try:
            config = load_checked_config(path)
        except ConfigError as error:
            _print_problems(error.problems)
            return EXIT_USAGE
        loaded.append((path, with_absolute_paths(config, path), resolve_path(path, config.workspace.dir)))
    for path, config, workspace in loaded:
        queue = RunQueue(args.workspace or workspace)
        entry = queue.add(dump_config(config), config.workspace.run_name, Path(path).resolve())
        print(f"queued {path} as {entry.id} in {queue.folder}")
    return EXIT_OK


def _queue_change(change: Callable[[Any], str]) -> Callable[[argparse.Namespace], int]:
    """A queue subcommand that changes the queue and prints what it did; QueueError is a usage error."""

    def handler(args: argparse.Namespace) -> int:
        from tui_trainer.runs.queue import QueueError

        try:
            print(change(args))
        except QueueError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USAGE
        return EXIT_OK

    return handler


QUEUE_CHANGES: dict[str, Callable[[argparse.Namespace], str]] = {
    "remove": lambda args: "\n".join(f"removed {_queue(args).remove(key).id}" for key in args.entries),
    "move": lambda args: f"moved {_queue(args).move(args.entry, args.position).id} to position {args.position}",
    "pause": lambda args: (_queue(args).pause(), "paused: the runner starts no further entry")[1],
    "resume": lambda args: (_queue(args).resume(), "resumed")[1],
}
"""What each queue subcommand that changes the queue does, as the line it prints."""


def cmd_queue_run(args: argparse.Namespace) -> int:
    """Train the pending entries one after another (in the foreground, or detached with --detach)."""
    from tui_trainer.runs.queue import QueueError, QueueRunner, detach_runner

    queue = _queue(args)
    try:
        if args.detach:
            pid = detach_runner(queue, stop_on_failure=args.stop_on_failure)
            print(f"queue runner started (pid {pid}); log: {queue.folder / 'runner.log'}")
            return EXIT_OK
        return QueueRunner(queue, stop_on_failure=args.stop_on_failure, say=lambda text: print(text, flush=True)).run()
    except QueueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE


def add_queue_parser(commands: Any) -> None:
    """`tui-trainer queue list|add|remove|move|pause|resume|run`; `queue` alone lists ./workspace's queue."""
    queue = commands.add_parser("queue", help="queue configs to train one after another")
    queue.set_defaults(handler=cmd_queue_list, workspace=None, json=False)
    actions = queue.add_subparsers(dest="queue_command", metavar="ACTION")
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--workspace", metavar="DIR", help="workspace folder, or a config naming one (default: ./workspace)")
    listing = actions.add_parser("list", parents=[where], help="show the queue")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_queue_list)
    add = actions.add_parser("add", parents=[where], help="append configs (default: to each config's workspace)")
    add.add_argument("configs", nargs="+", metavar="CONFIG")
    add.set_defaults(handler=cmd_queue_add)
    remove = actions.add_parser("remove", parents=[where], help="take entries out (by position or id)")
    remove.add_argument("entries", nargs="+", metavar="ENTRY")
    move = actions.add_parser("move", parents=[where], help="put an entry at a position")
    move.add_argument("entry", metavar="ENTRY")
    move.add_argument("position", type=int, metavar="POSITION")
    pause = actions.add_parser("pause", parents=[where], help="start no further entry until resume")
    resume = actions.add_parser("resume", parents=[where], help="let the runner go on")
    for name, parser in (("remove", remove), ("move", move), ("pause", pause), ("resume", resume)):
        parser.set_defaults(handler=_queue_change(QUEUE_CHANGES[name]))
    run = actions.add_parser("run", parents=[where], help="train the pending entries one after another")
    run.add_argument("--detach", action="store_true", help="run in the background; survives the SSH link and the app")
    run.add_argument("--stop-on-failure", action="store_true", help="stop at a failed entry instead of going on")
    run.set_defaults(handler=cmd_queue_run)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="tui-trainer", description="Set up, run and watch Stable Diffusion fine-tuning.")
    parser.add_argument("--version", action="version", version=f"tui-trainer {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    tui = commands.add_parser("tui", help="open the app (default)")
    tui.add_argument("config", nargs="?", help="config file to open")
    tui.set_defaults(handler=cmd_tui)

    presets = commands.add_parser("presets", help="list presets")
    presets.set_defaults(handler=cmd_presets)

    config = commands.add_parser("config", help="create, validate and document config files")
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    new = config_commands.add_parser("new", help="write a config from a preset")
    new.add_argument("--preset", required=True, help="preset name (see `tui-trainer presets`)")
    new.add_argument("-o", "--output", required=True, help="config file to write")
    new.add_argument("--force", action="store_true", help="overwrite an existing file")
    new.set_defaults(handler=cmd_config_new)
    validate = config_commands.add_parser("validate", help="check a config file")
    validate.add_argument("config")
    validate.set_defaults(handler=cmd_config_validate)
    docs = config_commands.add_parser("docs", help="print the config reference (Markdown)")
    docs.add_argument("-o", "--output", help="write to this file")
    docs.set_defaults(handler=cmd_config_docs)

    importing = commands.add_parser("import", help="convert a OneTrainer, kohya or kohya_ss config into a config file")
    importing.add_argument("source", help="OneTrainer .json, kohya_ss .json, or kohya training / dataset .toml")
    importing.add_argument("-o", "--output", required=True, help="config file to write")
    importing.add_argument("--force", action="store_true", help="overwrite an existing file (never the source)")
    importing.add_argument("--json", action="store_true", help="print the report as JSON")
    importing.set_defaults(handler=cmd_import)

    train = commands.add_parser("train", help="train from a config file")
    train.add_argument("config")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its newest complete backup (with this config)")
    train.add_argument("--run-dir", metavar="RUN_DIR", help="write into this existing run folder instead of a new one")
    train.add_argument("--detach", action="store_true", help="train in the background; print the run folder and return")
    train.set_defaults(handler=cmd_train)

    resume = commands.add_parser("resume", help="resume a run from its last backup")
    resume.add_argument("run_dir")
    resume.add_argument("--detach", action="store_true", help="train in the background; print the run folder and return")
    resume.set_defaults(handler=cmd_resume)

    attach = commands.add_parser("attach", help="watch a running or finished run")
    attach.add_argument("run_dir")
    attach.set_defaults(handler=cmd_attach)

    runs = commands.add_parser("runs", help="browse runs in a workspace")
    runs.add_argument("workspace", nargs="?", help="workspace folder, or a config file naming one (default: ./workspace)")
    runs.set_defaults(handler=cmd_runs)

    estimate = commands.add_parser("estimate", help="estimate VRAM for a config")
    estimate.add_argument("config")
    estimate.add_argument("--gpu-memory", metavar="SIZE", help="budget against this size (e.g. 24GiB) instead of the detected GPU")
    estimate.add_argument("--json", action="store_true", help="print JSON")
    estimate.set_defaults(handler=cmd_estimate)

    buckets = commands.add_parser("buckets", help="show aspect-ratio buckets for a config")
    buckets.add_argument("config")
    buckets.add_argument("--json", action="store_true", help="print JSON instead of a table")
    buckets.set_defaults(handler=cmd_buckets)

    demo = commands.add_parser("demo", help="build (once) and open the demo workspace: a tiny model, images and a LoRA config")
    demo.add_argument("--dir", default="demo-workspace", help="demo workspace folder (default: ./demo-workspace)")
    demo.add_argument("--headless", action="store_true", help="train right away without the app, printing progress")
    demo.add_argument("--max-steps", type=int, help="stop after this many steps (headless)")
    demo.set_defaults(handler=cmd_demo)
    add_queue_parser(commands)
    return parser


def main(argv: list[str] | None = None, *, own_process: bool = False) -> int:
    """Run one command (argv: default this process's command line). own_process: the process is this command's
    alone (the console script, `python -m tui_trainer.cli`), so a trainer may set process-wide state at start-up."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].endswith(".toml") and Path(argv[0]).suffix == ".toml"):
        argv = ["tui", *argv]
    args = parser.parse_args(argv)
    args.own_process = own_process
    try:
        code = args.handler(args)
        sys.stdout.flush()  # inside the try: buffered output is written here, not at exit where nothing catches it
        return code
    except BrokenPipeError:
        # Output piped into a reader that stopped (`tui-trainer presets | head -3`): end quietly. stdout goes to
        # /dev/null so the interpreter's flush at exit does not raise again (Python docs, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


def console_main() -> int:
    """Entry point of the `tui-trainer` console script and of `python -m tui_trainer.cli`."""
    return main(own_process=True)


if __name__ == "__main__":
    sys.exit(console_main())
