"""Per-step overhead of our trainer against a bare hand-written loop, on the tiny SD1.5 model.

    python benchmarks/step_overhead.py [--steps 40] [--rounds 3] [--threads 1] [--record docs/benchmarks.md]

Both train LoRA (rank 4, UNet attention+MLP and text encoder) at 64 px, batch 2, on cached latents, with
AdamW, clip-grad-norm 1.0, float32, no gradient checkpointing. Ours is a whole `train_config` run whose
seconds per step come from its `step` events (first to last, so start-up, caching and saving are left
out); the bare loop keeps the latents in a list and does only the forward, backward and optimizer step.
Rounds alternate ours / bare and the median of each is compared. Goal (issue 5): ours / bare <= 1.10.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from tui_trainer.atomic import atomic_write_text
from tui_trainer.config import dump_config, load_config
from tui_trainer.runs.events import ErrorEvent, StepEvent, read_events

FIGURE = "step overhead: ours vs bare loop, tiny SD1.5 LoRA 64 px batch 2 cached latents"
GOAL = "<= 1.10"

CONFIG = """method = "lora"
[model]
base_model = "{model}"
unet_dtype = "float32"
text_encoder_dtype = "float32"
train_dtype = "float32"
[workspace]
dir = "{workspace}"
run_name = "bench"
[[concepts]]
name = "shapes"
path = "{data}"
[training]
resolution = "64"
batch_size = 2
epochs = 1000
max_steps = {steps}
gradient_checkpointing = false
dataloader_workers = 0
tensorboard = false
[optimizer]
name = "adamw"
learning_rate = 0.0001
[text_encoder]
train = true
[lora]
rank = 4
alpha = 4.0
"""


def ours(config_path: Path) -> float:
    """Seconds per step of a full trainer run, from its step events."""
    from tui_trainer.train.entry import train_config

    config = load_config(config_path)
    code, run = train_config(config, config_path, dump_config(config), console=None)
    events = read_events(run.events_file)
    times = [event.time for event in events if isinstance(event, StepEvent)]
    if code != 0:
        raise SystemExit(f"trainer failed: {[e.message for e in events if isinstance(e, ErrorEvent)]}")
    return (times[-1] - times[0]) / (len(times) - 1)


def bare(model_dir: Path, config_path: Path, steps: int) -> float:
    """Seconds per step of a hand-written loop on the same model, adapters, latents and captions."""
    import peft
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from tui_trainer.data import build_report, read_captions
    from tui_trainer.models.families import family_spec
    from tui_trainer.train.dataset import open_rgb, to_tensor, transform

    config = load_config(config_path)
    report = build_report(config, config_path)
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None, requires_safety_checker=False)
    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    targets = family_spec(config.model.family).lora_target_modules[config.lora.targets]
    torch.manual_seed(0)
    unet.add_adapter(peft.LoraConfig(r=4, lora_alpha=4.0, target_modules=list(targets["unet"])))
    peft.inject_adapter_in_model(peft.LoraConfig(r=4, lora_alpha=4.0, target_modules=list(targets["text_encoder"])), text_encoder)
    unet.train()
    text_encoder.train()
    params = [p for module in (unet, text_encoder) for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    items = [item for item in report.items if item.bucket == (64, 64)]
    captions = read_captions(items, config.concepts)
    with torch.no_grad():
        latents = [
            vae.encode(to_tensor(transform(open_rgb(item.path), item.bucket, _centre(item)))[None]).latent_dist.mode()[0]
            * vae.config.scaling_factor
            for item in items
        ]
    generator = torch.Generator().manual_seed(0)
    timings = []
    for step in range(steps):
        start = time.perf_counter()
        picks = [(step * 2 + offset) % len(items) for offset in range(2)]
        batch = torch.stack([latents[i] for i in picks])
        ids = tokenizer([captions.of(items[i])[0] for i in picks], padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids
        noise = torch.randn(batch.shape, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (2,), generator=generator)
        noisy = scheduler.add_noise(batch, noise, timesteps)
        prediction = unet(noisy, timesteps, encoder_hidden_states=text_encoder(ids)[0]).sample
        loss = torch.nn.functional.mse_loss(prediction, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        timings.append(time.perf_counter() - start)
    return statistics.mean(timings[1:])


def _centre(item):
    from tui_trainer.train.dataset import Augment, choose_crop

    left, top = choose_crop((item.width, item.height), item.bucket, 0.0, random.Random(0))
    return Augment(left, top, False)


def machine() -> str:
    """Short description of this machine."""
    import os

    return f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__} ({torch.get_num_threads()} thread)"


def record(path: Path, rows: list[str], figure: str = FIGURE) -> None:
    """Put `rows` into the Markdown table of `path`, replacing rows whose figure starts with `figure` and keeping
    the others."""
    header = "| figure | value | reference | ratio | goal | machine |\n|---|---|---|---|---|---|\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n" + header
    lines = [line for line in text.splitlines() if not line.startswith(f"| {figure}")]
    last_row = max(index for index, line in enumerate(lines) if line.startswith("|"))
    lines[last_row + 1 : last_row + 1] = rows
    atomic_write_text(path, "\n".join(lines) + "\n")
    print(f"recorded in {path}", file=sys.stderr)


def table_row(steps: int, rounds: int, threads: int) -> str:
    """Time alternating rounds of ours and the bare loop; print and return the Markdown row."""
    torch.set_num_threads(threads)

    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.devkit.tiny_models import save_tiny_pipeline

    root = Path(tempfile.mkdtemp(prefix="tt-step-bench-"))
    model = save_tiny_pipeline(root / "sd15")
    data = make_dataset(root / "data", ((64, 64, 8),))
    config_path = root / "config.toml"
    config_path.write_text(CONFIG.format(model=model, workspace=root / "ws", data=data, steps=steps))
    ours(config_path)  # warm-up: fills the latent cache, loads every module once
    ours_times, bare_times = [], []
    for _ in range(rounds):
        ours_times.append(ours(config_path))
        bare_times.append(bare(model, config_path, steps))
    ours_s, bare_s = statistics.median(ours_times), statistics.median(bare_times)
    ratio = ours_s / bare_s
    print(f"ours {ours_s * 1000:.1f} ms/step  bare {bare_s * 1000:.1f} ms/step  ratio {ratio:.3f} (goal {GOAL})")
    print(f"  rounds ours {[round(t * 1000, 1) for t in ours_times]} bare {[round(t * 1000, 1) for t in bare_times]}")
    when = time.strftime("%Y-%m-%d")
    return (f"| {FIGURE}, {steps} steps ({when}) | {ours_s * 1000:.1f} ms/step | bare loop {bare_s * 1000:.1f} ms/step "
            f"| {ratio:.2f} | {GOAL} | {machine()} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="steps per timed run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating ours / bare rounds (median kept)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--record", type=Path, help="record the figures in this Markdown file (docs/benchmarks.md)")
    args = parser.parse_args()
    row = table_row(args.steps, args.rounds, args.threads)
    if args.record:
        record(args.record, [row])
    return 0


if __name__ == "__main__":
    sys.exit(main())
