"""Run every benchmark and rewrite docs/benchmarks.md with one table.

    python benchmarks/run_all.py [--output docs/benchmarks.md] [--quick] [--note TEXT]

Each figure is measured side by side with its reference in the same run, by the measuring functions of
scan.py, step_overhead.py, estimate.py and tui.py (run those alone to refresh one group). --quick uses
fewer images, steps and repeats (for a smoke run; do not commit its figures).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import estimate as estimate_bench  # noqa: E402
import gpu_check  # noqa: E402
import scan as scan_bench  # noqa: E402
import step_overhead as step_bench  # noqa: E402
import tui as tui_bench  # noqa: E402
import vs_diffusers_example as vs_example  # noqa: E402

from tui_trainer.atomic import atomic_write_text  # noqa: E402

HEADER = "| figure | value | reference | ratio | goal | machine |\n|---|---|---|---|---|---|\n"

NOTES = """\
How each figure is measured (run one group alone with the script named):

- **scan** (`benchmarks/scan.py`): 10,000 32-48 px PNGs with `.txt` captions, page cache warm. Each figure is
  its best of 5 interleaved rounds: every round runs each figure once in turn, with the garbage collector reset
  (untimed) before each run, so a change in the machine's load hits all figures alike and no figure pays for
  another's garbage. Cold scan = no cache against an `imagesize.get` loop; warm scans against an `os.stat`
  loop over the images. Goals (issue 3): cold >= 1.0 x, warm >= 0.5 x. The scan lists caption files but never
  opens one: it notes which caption file belongs to each image from the folder listing (cached while the
  folder's mtime is unchanged; adding, removing or renaming a file changes it), and the trainer reads caption
  text once when it starts (`tui_trainer.data.read_captions`). So a warm scan is: load the cache file (or the
  remembered result), stat each folder and each image, build the result; it used to stat every caption too
  (a caption edited in place changes only its own mtime), which capped it at 0.5 x. An image the cache does
  not know is opened once: size and mtime come from `fstat` on the open file (no `os.stat` of the path), the
  format check, header and tail from one `pread` of the whole file up to 64 KiB, or two (first 64 and last 16
  bytes) above; JPEG sizes still come from imagesize (EXIF orientation), given those bytes or the open file
  instead of the path. That is 4 system calls per image against `imagesize.get`'s 7 (`open` with its `fstat`,
  `ioctl` and two `lseek`, then `read`, `close`); the rest of a cold scan is Python: the folder listing (~2 us
  per directory entry, two per captioned image), the result (a `Path` per image, ~1 us) and the cache write.
  The cache keeps one entry per folder: its listing, with each image's caption file name, and the images'
  (size, mtime, width, height, reason) as columns aligned with the names, so loading it builds a few tuples
  instead of one per image (~0.3 us an image) and a warm scan walks them with `zip` instead of a dictionary
  look-up per image; a folder listed again keeps the facts of the images still in it. The remembered result
  is checked against the folders and images of that entry (one `os.stat` each), not a list of (path, size,
  mtime) per file. Tried and dropped: pausing the garbage collector during a scan (it looked like a fifth of a
  cold scan, but with the collector reset before each run it saved nothing cold and cost warm: the gain was
  collections moved onto other figures), building `Path`s from pathlib's internals by hand (~0.3 us an image,
  not measurable above the noise), `os.listdir` instead of `os.scandir` for the listing (~4 ms of a 210 ms
  cold scan), skipping the fsync of the cache file (~3 ms a save); before that, `os.stat` with `dir_fd` (2.9 us
  against 2.4 us a call), `DirEntry.stat()` from a fresh `os.scandir` (3.5 us: on Linux one more `stat` call
  each) and a thread pool for the cold scan (slower: the parsing between system calls holds the GIL).
- **step overhead** (`benchmarks/step_overhead.py`): a whole `tui-trainer train` run's seconds per step (from its
  `step` events, so start-up, caching and saving are left out) against a hand-written loop doing the same LoRA
  forward, backward, clip and AdamW step on the same tiny SD1.5 model and latents; 1 CPU thread, median of 3
  alternating rounds. The one overhead found and removed: calling `Module.train()` every step (it walks every
  submodule, ~18 ms on the tiny UNet).
- **vs diffusers example** (`benchmarks/vs_diffusers_example.py`, issue 24): our trainer and diffusers'
  `examples/text_to_image/train_text_to_image_lora.py` train the same UNet LoRA (rank 4, attention projections,
  64 px, batch 2, float32, AdamW 1e-4, clip 1.0, TensorBoard on, 1 thread) on the tiny SD1.5 model saved as a
  diffusers folder and the same 8 images. Each run is a new process timed by one torch optimizer-step hook:
  start-up = process start to the end of the first step; step = mean of the later steps. One warm-up of each,
  then 5 rounds in rotated order; medians. Ours uncached encodes latents and text every step, as the example
  does; ours cached reads both from its warm cache. Goals: start-up < 5 s and <= 0.70 x, uncached step
  <= 0.95 x, cached step <= 0.70 x. Found in the profiles and fixed: the VAE's device and dtype looked up at
  every uncached step (diffusers walks every submodule for each: 0.7 ms a step) and torch AdamW's Python loop
  over the parameters on the CPU (fused AdamW: ~0.6 ms a step). Before and after them, 3 rounds each on
  2026-12-07 at a load of 0.1-0.8: uncached step 34.7 -> 32.6 ms (1.05 -> 0.92 x), cached 26.9 -> 25.4 ms
  (0.81 -> 0.72 x), start-up 0.85 x both times (its last fix, diffusers.training_utils out of start-up, came
  before); the example's own step read 33.1 and 35.5 ms in those runs, so part of the ratios' change is noise. Not ours, and paid by the example too: about
  80% of start-up is importing torch, diffusers, transformers and peft; diffusers alone imports `torch._dynamo`
  (0.76 s), and with bitsandbytes installed diffusers and peft both import it at once, whose `torch.compile`
  wrappers import torch's compiler (0.9 s); our own modules take 0.13 s. Tried for that 0.9 s and dropped:
  loading bitsandbytes lazily (`importlib.util.LazyLoader`: peft's import asks for `bitsandbytes.nn` at
  once) and telling diffusers it is absent (peft imports it all the same). What caching leaves of a step is the
  UNet's forward and backward and the optimizer, the same as the example's; the VAE and text-encoder passes
  and data loading it saves are about a fifth of the example's step on this tiny model, so the cached goal of
  0.70 x is out of reach here.
  To reproduce: the example needs torchvision and `datasets`, which this project's venv must not get.
  `--make-example-venv DIR` builds a throwaway venv (this venv's packages through a `.pth` file, plus torchvision matching torch and
  `datasets`) and uses it; `--example-python PYTHON` names one made another way. On this machine the only
  torchvision for torch 2.13 is built against CUDA torch and cannot load its C++ ops beside torch+cpu, so
  the venv gets a start-up hook that defines the two operator schemas torchvision needs to import (the
  transforms the example uses never call them). The example is given with `--example PATH` or downloaded for
  the installed diffusers release; these figures used a copy of its `check_min_version("0.30.0.dev0")`
  revision (the download needs internet, which this machine lacks):
  `python benchmarks/vs_diffusers_example.py --example PATH --make-example-venv /tmp/exvenv --record docs/benchmarks.md`.
- **estimate** (`benchmarks/estimate.py`): mean milliseconds per `estimate()` call, suggestions included (each is
  one more estimate of a changed plan), median of 5 rounds of 2,000 calls; the goal is the TUI's per-keystroke
  budget of 1 ms.
- **tui** (`benchmarks/tui.py`): `tui-trainer CONFIG` (the sdxl-lora preset) as a new process on a 120x40
  pseudo-terminal (which never answers terminal queries), median of 5. First paint = process start until the
  section list is drawn, against a bare Textual app with one `Static`; editor ready = process start until the
  editor's VRAM total is drawn (config validated, the first section's fields and both panels built). The first
  frame is an opening screen (title bar and section list, plain `Static`s) drawn before the config schema, the
  editor and the core are imported; the editor replaces it about a second later. It now costs about 1.2 x the
  bare app (it was 4.8 x): textual-image and numpy (a quarter second, plus textual-image's three terminal queries
  one after the other, up to 0.3 s in a terminal that does not answer) left start-up: the terminal is asked once,
  all three questions in one write, in a thread while Textual is imported, and textual-image is imported when
  the first sample is shown, with the answers handed to it. The goal of < 500 ms is below what the bare Textual
  app itself takes on this machine on a slow day; the ratio is the figure to watch. Editor ready is what the
  first paint used to be: pydantic's schema build with attribute docstrings, the editor's widgets and the first
  section are its cost; update = one digit typed into the batch-size field until the new VRAM total is drawn,
  against the echo of one character typed into a text field of the same app (median of 10). Loss chart =
  `LossChart.redraw` with 100,000 steps plus rendering every canvas line, headless 120x40, median of 10,
  against textual-plot given every point (its line drawing is Python per braille pixel). Ours draws the
  smoothed loss as the mean per braille pixel column and the raw loss as a min..max band per column with numpy.
"""


def missed_goals(rows: list[str]) -> list[str]:
    """Figures of `rows` that miss a goal: ">= x" / "<= x" goals apply to the ratio, "< N ms" to the value; a goal
    cell may hold several, separated by "; "."""
    missed = []
    for row in rows:
        figure, value, _, ratio, goals = (cell.strip() for cell in row.split("|")[1:6])
        for goal in filter(None, goals.split("; ")):
            bound = float(goal.split()[1])
            measured = float(value.split()[0].replace(",", "")) if goal.endswith("ms") else float(ratio)
            ok = {">=": measured >= bound, "<=": measured <= bound, "<": measured < bound}[goal.split()[0]]
            if not ok:
                missed.append(f"{figure.rsplit(' (', 1)[0]}: {value if goal.endswith('ms') else ratio} (goal {goal})")
    return missed


def load_note(loads: list[float]) -> str:
    """One line on how busy the machine was: the 1-minute load averages sampled during the run against the CPU count."""
    cpus = os.cpu_count() or 1
    busy = "shared and loaded" if max(loads) > 0.75 * cpus else "not otherwise busy"
    return (f"1-minute load average between {min(loads):.1f} and {max(loads):.1f} on {cpus} CPUs while it ran: "
            f"the machine was {busy}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--note", default="", help="a sentence on the machine's state, put in the file's introduction")
    parser.add_argument("--example", type=Path, help="diffusers' train_text_to_image_lora.py (vs_diffusers_example.py)")
    parser.add_argument("--example-python", default=sys.executable, help="interpreter with torchvision and datasets for it")
    args = parser.parse_args()
    images, repeat, steps, rounds, calls, runs = (1000, 2, 10, 1, 200, 2) if args.quick else (10_000, 5, 40, 3, 2000, 5)

    groups = [
        lambda: scan_bench.table_rows(*scan_bench.measure(images, repeat)),
        lambda: [step_bench.table_row(steps, rounds, threads=1)],
        lambda: estimate_bench.table_rows(calls),
        lambda: tui_bench.startup_rows(runs),
        lambda: [tui_bench.chart_row(max(runs, 10))],
        lambda: vs_rows(),
    ]
    example_notes = []

    def vs_rows() -> list[str]:
        rows, notes = vs_example.run(args.example, args.example_python, steps, runs)
        example_notes.append(notes)
        return rows

    started, loads, rows = time.perf_counter(), [os.getloadavg()[0]], []
    for group in groups:
        rows += group()
        loads.append(os.getloadavg()[0])
    minutes = (time.perf_counter() - started) / 60

    text = (
        "# Benchmarks\n\n"
        f"Written by `python benchmarks/run_all.py` in one run of {minutes:.0f} minutes; {load_note(loads)}. "
        + (f"{args.note} " if args.note else "") +
        "Figures on a shared machine are noisy (absolute values vary by up to 2x between runs); each ratio "
        "compares a figure with its reference measured in the same run, so ratios are steadier than values. "
        "No GPU was used: every figure is CPU-only.\n\n"
        + HEADER + "".join(row + "\n" for row in rows)
        + "\nGoals missed in this run:\n\n" + "".join(f"- {line}\n" for line in missed_goals(rows) or ["none"])
        + "\n" + NOTES
    )
    previous = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
    section = gpu_check.gpu_section(previous)
    atomic_write_text(args.output, text + "".join(f"\n{part}" for part in [*example_notes, section] if part))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
