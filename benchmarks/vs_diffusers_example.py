"""Our trainer against diffusers' example train_text_to_image_lora.py, side by side on the tiny SD1.5 model.

    python benchmarks/vs_diffusers_example.py [--example PATH] [--example-python PYTHON] [--steps 40]
        [--rounds 5] [--record docs/benchmarks.md]

Both train a UNet LoRA (rank 4, alpha 4, attention projections) at 64 px, batch 2, float32, AdamW at 1e-4,
clip 1.0, TensorBoard on, 1 CPU thread, on the same tiny SD1.5 model saved as a diffusers folder and the
same 8 images and captions (for the example an imagefolder with metadata.jsonl). Each run is a new process;
a hook on every torch optimizer's step (torch.optim.optimizer.register_optimizer_step_post_hook) stamps the
time, so both are timed the same way: start-up = process start until the first optimizer step ends; step =
mean time between later steps (the first interval left out). Ours runs twice a round: uncached (latents and
text encoded each step, as the example does) and cached (latents and text-encoder outputs from its cache,
warm). One untimed warm-up of each, then `--rounds` rounds, the order rotated each round so a change in the
machine's load hits every side alike; medians are compared.

The example is not a dependency: `--example PATH` names a copy; without it the script tries to download the
one of the installed diffusers release into a temporary folder. It needs torchvision and `datasets`, which
this project's environment does not have: `--example-python` names an interpreter that does (see
docs/benchmarks.md). When the example cannot be got or run, only our figures are measured and recorded.
Goals (issue 24): start-up < 5 s and <= 0.70 x the example's, uncached step <= 0.95 x, cached step <= 0.70 x.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURE = "vs diffusers example:"
STARTUP_GOAL = "< 5000 ms; <= 0.70"
UNCACHED_GOAL = "<= 0.95"
CACHED_GOAL = "<= 0.70"
EXAMPLE_URL = "https://raw.githubusercontent.com/huggingface/diffusers/v{version}/examples/text_to_image/train_text_to_image_lora.py"
SECTION_BEGIN, SECTION_END = "<!-- vs-example -->", "<!-- /vs-example -->"
RUN_TIMEOUT_S = 600

CLOCK = """\
import atexit, json, runpy, sys, time
from torch.optim.optimizer import register_optimizer_step_post_hook
out, target, args = sys.argv[1], sys.argv[2], sys.argv[3:]
stamps = []
register_optimizer_step_post_hook(lambda optimizer, a, k: stamps.append(time.time()))
atexit.register(lambda: open(out, "w").write(json.dumps(stamps)))
sys.argv = [target, *args]
if target.endswith(".py"):
    runpy.run_path(target, run_name="__main__")
else:
    runpy.run_module(target, run_name="__main__", alter_sys=True)
"""
"""Runs a script or module with every optimizer step's end time recorded, written to a JSON file at exit."""

CONFIG = """method = "lora"
[model]
base_model = "{model}"
vae_dtype = "float32"
train_dtype = "float32"
[parts.denoiser]
dtype = "float32"
[parts.text_encoder]
dtype = "float32"
train = false
[workspace]
dir = "{workspace}"
run_name = "{name}"
[[concepts]]
name = "shapes"
path = "{data}"
[training]
resolution = "64"
batch_size = 2
epochs = 100000
max_steps = {steps}
seed = 42
gradient_checkpointing = false
cache_latents = {cache}
cache_text_encoder_outputs = {cache}
dataloader_workers = 0
tensorboard = true
[optimizer]
name = "adamw"
learning_rate = 0.0001
[lora]
rank = 4
alpha = 4.0
targets = "attention"
"""


@dataclass(frozen=True)
class Timing:
    """One run: seconds from process start to the end of the first step, and mean seconds per later step."""

    startup_s: float
    step_s: float


@dataclass(frozen=True)
class Side:
    """One way of training the same thing: a command line and where its clock file goes."""

    name: str
    argv: list[str]


def child_env() -> dict[str, str]:
    """One CPU thread, no hub access, this checkout's tui_trainer first on the path."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return env


def timed(side: Side, root: Path) -> Timing:
    """Run `side` once as a new process; its start-up and step time from the optimizer-step stamps."""
    clock = root / f"clock-{side.name}.json"
    clock.unlink(missing_ok=True)
    log = root / f"{side.name}.log"
    started = time.time()
    with log.open("w") as output:
        code = subprocess.run(side.argv[:1] + ["-c", CLOCK, str(clock)] + side.argv[1:], stdout=output, stderr=subprocess.STDOUT,
                              env=child_env(), cwd=root, timeout=RUN_TIMEOUT_S).returncode
    stamps = json.loads(clock.read_text()) if clock.exists() else []
    if code != 0 or len(stamps) < 3:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise RuntimeError(f"{side.name} failed (exit {code}, {len(stamps)} steps); the end of {log}:\n{tail}")
    return Timing(stamps[0] - started, (stamps[-1] - stamps[1]) / (len(stamps) - 2))


def prepare(root: Path, steps: int) -> tuple[Path, Path, dict[str, Path]]:
    """The tiny SD1.5 diffusers folder, the images with .txt captions, the same images as an imagefolder with
    metadata.jsonl, and our uncached and cached configs."""
    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.devkit.tiny_models import save_tiny_pipeline

    model = save_tiny_pipeline(root / "sd15")
    data = make_dataset(root / "data", ((64, 64, 8),))
    folder = root / "example-data"
    folder.mkdir()
    lines = []
    for image in sorted(data.glob("*.png")):
        shutil.copy(image, folder / image.name)
        lines.append(json.dumps({"file_name": image.name, "text": image.with_suffix(".txt").read_text().strip()}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    configs = {}
    for name, cache in (("uncached", "false"), ("cached", "true")):
        configs[name] = root / f"{name}.toml"
        configs[name].write_text(CONFIG.format(model=model, workspace=root / "ws", name=name, data=data, steps=steps, cache=cache))
    return model, folder, configs


def fetch_example(folder: Path) -> tuple[Path | None, str]:
    """The example of the installed diffusers release, downloaded into `folder`; (None, why) when it cannot be."""
    import diffusers

    url = EXAMPLE_URL.format(version=diffusers.__version__)
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            text = response.read()
    except OSError as error:
        return None, f"could not download {url} ({error}); pass --example PATH to a copy"
    path = folder / "train_text_to_image_lora.py"
    path.write_bytes(text)
    return path, f"downloaded {url}"


def example_problem(python: str) -> str | None:
    """Why `python` cannot run the example (a missing module), or None."""
    probe = subprocess.run([python, "-c", "import torchvision.transforms, datasets, diffusers, peft"], capture_output=True,
                           text=True, env=child_env(), timeout=300)
    if probe.returncode == 0:
        return None
    last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
    return f"{python} cannot import what the example needs ({last}); make a venv for it as docs/benchmarks.md says and pass --example-python"


TORCHVISION_OPS_STUB = """\
import sys


class DefineTorchvisionOpsFirst:
    # torchvision registers fake kernels for torchvision::nms and ::qnms even when its C++ ops did not load (a
    # CUDA-built wheel beside a CPU-only torch); defining the two schemas first lets it import. Its transforms,
    # all the example uses, never call them.
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            import torch

            library = torch.library.Library("torchvision", "DEF")
            for op in ("nms", "qnms"):
                library.define(op + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            LIBRARIES.append(library)
        return None


LIBRARIES = []
sys.meta_path.insert(0, DefineTorchvisionOpsFirst())
"""


def make_example_venv(folder: Path) -> Path:
    """A throwaway venv for the example: this interpreter's packages (through a .pth file) plus torchvision
    matching torch and datasets; when that torchvision cannot load its ops here, a start-up hook that lets it
    import. Returns its python."""
    import site

    import torch

    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    python = folder / "bin" / "python"
    packages = Path(subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                                   capture_output=True, text=True).stdout.strip())
    (packages / "zz_project_packages.pth").write_text(site.getsitepackages()[0] + "\n")
    minor = int(torch.__version__.split(".")[1])
    subprocess.run([python, "-m", "pip", "install", "--no-deps", f"torchvision==0.{minor + 15}.*"], check=True)
    subprocess.run([python, "-m", "pip", "install", "datasets>=5.2"], check=True)
    if subprocess.run([python, "-c", "import torchvision"], capture_output=True).returncode != 0:
        (packages / "torchvision_ops_stub.py").write_text(TORCHVISION_OPS_STUB)
        (packages / "torchvision_ops_stub.pth").write_text("import torchvision_ops_stub\n")
    return python


def example_side(python: str, script: Path, model: Path, data: Path, root: Path, steps: int) -> Side:
    """The example's command line for the same training as ours."""
    return Side("example", [
        python, str(script), f"--pretrained_model_name_or_path={model}", f"--train_data_dir={data}", "--resolution=64",
        "--center_crop", "--train_batch_size=2", f"--max_train_steps={steps}", "--rank=4", "--learning_rate=1e-4",
        "--lr_scheduler=constant", "--lr_warmup_steps=0", "--max_grad_norm=1.0", "--mixed_precision=no", "--seed=42",
        "--dataloader_num_workers=0", "--report_to=tensorboard", f"--output_dir={root / 'example-out'}",
        f"--cache_dir={root / 'example-cache'}", f"--checkpointing_steps={10**9}",
    ])


def measure(sides: list[Side], root: Path, rounds: int) -> tuple[dict[str, list[Timing]], list[float]]:
    """One untimed warm-up of each side, then `rounds` rounds in rotated order; timings per side and the
    1-minute load averages seen."""
    for side in sides:
        timed(side, root)
    timings: dict[str, list[Timing]] = {side.name: [] for side in sides}
    loads = [os.getloadavg()[0]]
    for index in range(rounds):
        for side in sides[index % len(sides):] + sides[: index % len(sides)]:
            timings[side.name].append(timed(side, root))
            loads.append(os.getloadavg()[0])
    return timings, loads


def median(timings: list[Timing], field: str) -> float:
    """Median of one field over the rounds."""
    return statistics.median(getattr(timing, field) for timing in timings)


def machine() -> str:
    """Short description of this machine."""
    import torch

    return f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__} (1 thread)"


def table_rows(timings: dict[str, list[Timing]], steps: int) -> list[str]:
    """The Markdown rows: start-up, uncached step and cached step, each against the example when it ran."""
    when, where = time.strftime("%Y-%m-%d"), machine()
    setting = f"tiny SD1.5 UNet LoRA 64 px batch 2, {steps} steps ({when})"
    example = timings.get("example")
    rows = []
    for figure, side, field, goal in (
        ("start-up to first step, ours uncached", "uncached", "startup_s", STARTUP_GOAL),
        ("step, ours uncached (encodes each step)", "uncached", "step_s", UNCACHED_GOAL),
        ("step, ours cached latents + text", "cached", "step_s", CACHED_GOAL),
    ):
        ours = median(timings[side], field) * 1000
        unit = "ms" if field == "startup_s" else "ms/step"
        if example is None:
            reference, ratio, goal = "example not run", "", "< 5000 ms" if field == "startup_s" else ""
        else:
            theirs = median(example, field) * 1000
            reference, ratio = f"example {theirs:,.1f} {unit}", f"{ours / theirs:.2f}"
        rows.append(f"| {FIGURE} {figure}, {setting} | {ours:,.1f} {unit} | {reference} | {ratio} | {goal} | {where} |")
    return rows


def section(timings: dict[str, list[Timing]], loads: list[float], source: str, minutes: float) -> str:
    """The notes of this run (load, rounds, where the example came from), between markers run_all keeps."""
    cpus = os.cpu_count() or 1
    per_round = "; ".join(
        f"{name}: start-up {', '.join(f'{t.startup_s:.2f}' for t in runs)} s, step {', '.join(f'{t.step_s * 1000:.1f}' for t in runs)} ms"
        for name, runs in timings.items()
    )
    return (
        f"{SECTION_BEGIN}\n"
        f"Last run of `benchmarks/vs_diffusers_example.py` ({time.strftime('%Y-%m-%d %H:%M')}, {minutes:.0f} minutes): "
        f"1-minute load average {min(loads):.1f}-{max(loads):.1f} on {cpus} CPUs. Example: {source}. Every round: {per_round}.\n"
        f"{SECTION_END}\n"
    )


def record(path: Path, rows: list[str], notes: str) -> None:
    """Replace this benchmark's rows in the table of `path` (the others kept) and its notes section."""
    from step_overhead import record as record_rows

    record_rows(path, rows, FIGURE)
    text = path.read_text(encoding="utf-8")
    if SECTION_BEGIN in text and SECTION_END in text:
        before, rest = text.split(SECTION_BEGIN, 1)
        text = before + notes + rest.split(SECTION_END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + notes
    from tui_trainer.atomic import atomic_write_text

    atomic_write_text(path, text)


def run(example: Path | None, python: str, steps: int, rounds: int) -> tuple[list[str], str]:
    """Set up, measure and return the table rows and the notes section."""
    root = Path(tempfile.mkdtemp(prefix="tt-vs-example-"))
    started = time.perf_counter()
    model, folder, configs = prepare(root, steps)
    sides = [Side(name, [sys.executable, "tui_trainer.cli", "train", str(config)]) for name, config in configs.items()]
    source = f"given as {example}" if example else ""
    if example is None:
        example, source = fetch_example(root)
    problem = example_problem(python) if example is not None else source
    if problem:
        print(f"skipping the diffusers example: {problem}", file=sys.stderr)
        source = f"not run: {problem}"
    else:
        sides.insert(0, example_side(python, example, model, folder, root, steps))
    timings, loads = measure(sides, root, rounds)
    rows = table_rows(timings, steps)
    for row in rows:
        print(row)
    shutil.rmtree(root, ignore_errors=True)
    return rows, section(timings, loads, source, (time.perf_counter() - started) / 60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", type=Path, help="a copy of diffusers' examples/text_to_image/train_text_to_image_lora.py")
    parser.add_argument("--example-python", default=sys.executable, help="interpreter with torchvision and datasets for the example")
    parser.add_argument("--steps", type=int, default=40, help="training steps per run")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (medians kept)")
    parser.add_argument("--record", type=Path, help="record the figures in this Markdown file (docs/benchmarks.md)")
    parser.add_argument("--make-example-venv", type=Path, metavar="DIR", help="build a venv for the example in DIR, then use it")
    args = parser.parse_args()
    if args.make_example_venv:
        args.example_python = str(make_example_venv(args.make_example_venv))
    rows, notes = run(args.example, args.example_python, args.steps, args.rounds)
    if args.record:
        record(args.record, rows, notes)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
