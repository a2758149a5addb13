"""benchmarks/gpu_check.py: the dry run lists configs with our estimates and the real architectures' counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402

from tui_trainer.estimate import estimate  # noqa: E402
from tui_trainer.models.families import spec_for_model  # noqa: E402

TWO = ("sd15-lora-512-bs4", "sd15-embedding-512-bs4")


def test_dry_run_lists_two_configs_with_their_estimates_and_meta_counts(tmp_path):
    """The script, run as a user would, prints and records our estimate and the full-size parameter counts."""
    jsonl = tmp_path / "dry.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--only", ",".join(TWO),
                           "--jsonl", str(jsonl)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {row["name"]: row for row in map(json.loads, jsonl.read_text().splitlines())}
    assert set(rows) == set(TWO)
    for name in TWO:
        config = gpu_check.check_config(gpu_check.CHECKS_BY_NAME[name])
        expected = estimate(config)
        assert rows[name]["estimate"]["total_bytes"] == expected.total_bytes
        assert rows[name]["estimate"]["phases"] == {
            phase: {"vram_bytes": memory.vram_bytes, "ram_bytes": memory.ram_bytes} for phase, memory in expected.phases.items()}
        assert f"{name}: preset" in done.stdout and f"estimate {expected.total_bytes / 2**30:.2f} GiB" in done.stdout
        params = rows[name]["params"]
        assert set(params) == set(spec_for_model(config.model.family).parts)
        assert all(count["built"] == count["registry"] > 1_000_000 for count in params.values())
    assert params["unet"]["built"] == 859_520_964
    assert "planned" in done.stdout.splitlines()[-1]


def test_check_config_applies_overrides_and_steps():
    config = gpu_check.check_config(gpu_check.CHECKS_BY_NAME["sdxl-lora-1024-bs1-nogc"], steps=5)
    assert (config.training.batch_size, config.training.gradient_checkpointing, config.training.max_steps) == (1, False, 5)
    assert gpu_check.dataset_images(config, 5) == (1024, 1024, 5)


def test_phase_bytes_reads_the_estimators_phases():
    from tui_trainer.estimate.vram import PhaseMemory

    assert gpu_check.phase_bytes(PhaseMemory(5, 6)) == {"vram_bytes": 5, "ram_bytes": 6}


def test_missing_family_is_pending_and_default_set_fits_the_budget():
    unknown = gpu_check.Check("hunyuan-lora", "hunyuan_image", "hunyuan-lora", {}, 40, 2.0, default=False)
    assert "hunyuan_image" in gpu_check.pending_reason(unknown)
    assert gpu_check.pending_reason(gpu_check.CHECKS_BY_NAME["z-image-lora-1024"]) is None
    assert gpu_check.pending_reason(gpu_check.CHECKS_BY_NAME["sd15-lora-512-bs4"]) is None
    assert gpu_check.default_set_planned_s() <= gpu_check.DEFAULT_BUDGET_S


def _train_row(name, estimate_bytes, used, step_s):
    return {"name": name, "mode": "train", "ok": True, "gpu": "NVIDIA H100", "torch": "2.11", "cuda": "13.0",
            "estimate": {"total_bytes": estimate_bytes, "peak_phase": "training_step", "ram_bytes": None,
                         "phases": {"training_step": {"vram_bytes": estimate_bytes, "ram_bytes": None}}},
            "peak_allocated": used // 2, "peak_reserved": used, "device_used_peak": used, "host_rss_peak": 2**30,
            "phases": {"training_step": {"allocated": used // 2}}, "s_per_step": step_s}


def test_table_gives_ratios_and_flags_estimates_off_goal():
    rows = [_train_row("a", 2 * 2**30, 2 * 2**30, 0.5), {"name": "a", "mode": "bare", "ok": True, "s_per_step": 0.25},
            _train_row("b", 3 * 2**30, 2 * 2**30, 1.0), {"name": "c", "mode": "train", "ok": False, "skipped": "pending: x"}]
    lines = gpu_check.table(rows, 6).splitlines()
    row_a, row_b, row_c = (next(line for line in lines if line.startswith(f"| {n} |")) for n in "abc")
    cells_a = [cell.strip() for cell in row_a.split("|")]
    assert cells_a[6] == "1.00" and cells_a[7] == "2.00" and cells_a[11] == "2.00" and cells_a[12] == ""
    assert "1.50" in row_b and "outside 0.95-1.1" in row_b
    assert "pending: x" in row_c and "NVIDIA H100" in lines[0]


def test_table_replaces_only_its_section(tmp_path):
    text = "# Benchmarks\n\nbefore\n"
    once = gpu_check.replace_table(text, "T1")
    twice = gpu_check.replace_table(once + "after\n", "T2")
    assert twice.startswith(text.rstrip("\n")) and "T2" in twice and "T1" not in twice and twice.endswith("after\n")
    assert gpu_check.gpu_section(twice).startswith(gpu_check.SECTION_BEGIN) and "T2" in gpu_check.gpu_section(twice)




def test_offload_row_trains_full_size_flux_with_offload_and_notes_the_copy_estimate():
    check = gpu_check.CHECKS_BY_NAME["flux1-dev-lora-offload-bf16-1024"]
    config = gpu_check.check_config(check)
    assert gpu_check.pending_reason(check) is None
    assert (config.flow.offload.enabled, config.flow.offload.use_stream, config.training.gradient_checkpointing) == (True, True, True)
    estimated = gpu_check.estimate_row(config)
    assert estimated["offload"]["block_bytes"] == 2 * (19 * 339_831_296 + 38 * 141_591_808)
    assert estimated["offload"]["gpu_bytes"] == 2 * 2 * 339_831_296
    row = _train_row(check.name, estimated["total_bytes"], estimated["total_bytes"], 4.0) | {"offloaded_groups": 57}
    row["estimate"] = estimated
    line = next(line for line in gpu_check.table([row], 6).splitlines() if line.startswith(f"| {check.name} |"))
    assert "offload: 57 groups, est 1.27 GiB of blocks on the GPU, copies 44.10 GiB = 2.37 s/step" in line
