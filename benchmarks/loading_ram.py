"""Host RAM while loading an nf4 transformer: quantised as it is read against read whole, then quantised.

    python benchmarks/loading_ram.py [--record docs/benchmarks.md]

The model is a FLUX.1 transformer at its real widths (3072 hidden, 24 heads, T5 width 4096) with 1 double and
2 single blocks (687M parameters), saved as a diffusers folder in float32 and in bfloat16. Each load runs in a
new process with a bfloat16 compute dtype; the figure is its peak anonymous memory (RssAnon, sampled every 2 ms)
above what it held after its imports: the memory it allocated, not the file pages it read through mmap (those
are page cache, which the kernel reclaims). "Read whole" is diffusers' from_pretrained followed by
train.loading.quantize_nf4 (the trainer's path for a single file); "streamed" is train.loading.load_nf4_model
(its path for a diffusers folder or repo id). Goal: streamed <= read whole from either file dtype.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_overhead import record  # noqa: E402

FIGURE = "loading RAM:"
GOAL = "<= 1.0"
GIB = 2**30
WIDE_FLUX = dict(num_layers=1, num_single_layers=2, attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                 pooled_projection_dim=768, guidance_embeds=True)

CHILD = """
import json, sys, threading, time, torch
from pathlib import Path
import diffusers, bitsandbytes
from tui_trainer.train.loading import load_nf4_model, quantize_nf4

def anon_bytes():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("RssAnon:")) * 1024

folder, how = Path(sys.argv[1]), sys.argv[2]
before, peak, loading = anon_bytes(), [0], [True]

def sample():
    while loading[0]:
        peak[0] = max(peak[0], anon_bytes())
        time.sleep(0.002)

sampler = threading.Thread(target=sample)
sampler.start()
if how == "streamed":
    model = load_nf4_model(folder, torch.bfloat16)
else:
    model = diffusers.FluxTransformer2DModel.from_pretrained(folder, torch_dtype=torch.bfloat16)
    quantize_nf4(model, torch.bfloat16)
loading[0] = False
sampler.join()
held = sum(t.numel() * t.element_size() for t in model.state_dict().values())
print(json.dumps({"peak_bytes": max(peak[0], anon_bytes()) - before, "model_bytes": held}))
"""


def save_models(root: Path) -> dict[str, Path]:
    """The wide FLUX.1 transformer saved in float32 and bfloat16 (same weights)."""
    import torch
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(**WIDE_FLUX)
    folders = {}
    for dtype in ("float32", "bfloat16"):
        folders[dtype] = root / dtype
        model.to(getattr(torch, dtype)).save_pretrained(folders[dtype])
    return folders


def peak(folder: Path, how: str) -> dict[str, int]:
    """One load in a new process: its peak anonymous memory above its imports, and the loaded model's bytes."""
    result = subprocess.run([sys.executable, "-c", CHILD, str(folder), how], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def table_rows() -> list[str]:
    """Load each file dtype both ways; print and return the Markdown rows."""
    import torch

    when = time.strftime("%Y-%m-%d")
    machine = f"{platform.machine()}, torch {torch.__version__}"
    rows = []
    with tempfile.TemporaryDirectory(prefix="tt-loading-ram-") as root:
        for dtype, folder in save_models(Path(root)).items():
            whole, streamed = peak(folder, "whole"), peak(folder, "streamed")
            ratio = streamed["peak_bytes"] / whole["peak_bytes"]
            print(f"{dtype} files: streamed +{streamed['peak_bytes'] / GIB:.2f} GiB, read whole +{whole['peak_bytes'] / GIB:.2f} GiB "
                  f"({ratio:.2f} x); the nf4 model holds {streamed['model_bytes'] / GIB:.2f} GiB")
            rows.append(f"| {FIGURE} peak allocated, nf4 FLUX.1-width transformer (687M params, nf4 "
                        f"{streamed['model_bytes'] / GIB:.2f} GiB) from {dtype} files, streamed ({when}) | "
                        f"{streamed['peak_bytes'] / GIB:.2f} GiB | read whole, then quantised {whole['peak_bytes'] / GIB:.2f} GiB | "
                        f"{ratio:.2f} | {GOAL} | {machine} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", type=Path, help="record the figures in this Markdown file (docs/benchmarks.md)")
    args = parser.parse_args()
    rows = table_rows()
    if args.record:
        record(args.record, rows, FIGURE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
