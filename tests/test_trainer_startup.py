"""A trainer process's start-up (train/startup.py): which runs may go without bitsandbytes, and a real
`tui-trainer train` process that trains without it and one that needs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from train_support import write_config

STARTUP_PROBE = """\
import gc, json, sys
from tui_trainer.cli import console_main
sys.argv = ["tui-trainer", "train", sys.argv[1]]
code = console_main()
module = sys.modules.get("bitsandbytes", "not imported")
print("STARTUP " + json.dumps({"code": code, "hidden": module is None, "imported": hasattr(module, "__file__"),
                               "collecting": gc.isenabled(), "frozen": gc.get_freeze_count(),
                               "lomo": sys.modules.get("lomo_optim", "looked up") is None}))
"""
"""The console script's entry in a new process, reporting what start-up left behind."""


def _config(tmp_path: Path, tiny_sd15: Path, dataset: Path, **tables: str):
    from tui_trainer.config import load_config

    return load_config(write_config(tmp_path, tiny_sd15, dataset, **tables))


def _quantised_folder(folder: Path, method: str) -> Path:
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "transformer" / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": method}}))
    return folder


def test_plain_lora_on_a_local_model_needs_no_bitsandbytes(tmp_path, tiny_sd15, tiny_dataset):
    from tui_trainer.train.startup import uses_bitsandbytes

    assert not uses_bitsandbytes(_config(tmp_path, tiny_sd15, tiny_dataset))


@pytest.mark.parametrize("tables", [
    {"optimizer": 'name = "adamw8bit"\nlearning_rate = 0.001'},
    {"optimizer": 'name = "lion8bit"\nlearning_rate = 0.001'},
    {"parts.denoiser": 'dtype = "nf4"'},
    {"parts.text_encoder": 'dtype = "nf4"'},
])
def test_eight_bit_optimizers_and_nf4_parts_need_bitsandbytes(tmp_path, tiny_sd15, tiny_dataset, tables):
    from tui_trainer.train.startup import uses_bitsandbytes

    assert uses_bitsandbytes(_config(tmp_path, tiny_sd15, tiny_dataset, **tables))


def test_the_optimizer_set_matches_the_optimizer_table():
    from tui_trainer.train.optim import OPTIMIZERS
    from tui_trainer.train.startup import BITSANDBYTES_OPTIMIZERS

    assert BITSANDBYTES_OPTIMIZERS == {name for name, spec in OPTIMIZERS.items() if spec.module.startswith("bitsandbytes")}


def test_hidden_packages_are_ones_no_optimizer_needs(monkeypatch):
    from accelerate.utils import is_lomo_available

    from tui_trainer.train.optim import OPTIMIZERS
    from tui_trainer.train.startup import NEVER_USED

    assert not {spec.module.partition(".")[0] for spec in OPTIMIZERS.values()} & set(NEVER_USED)
    monkeypatch.setitem(sys.modules, "lomo_optim", None)
    assert not is_lomo_available(), "accelerate's per-step check sees the hidden package as absent"


def test_a_base_stored_quantised_by_bitsandbytes_keeps_it(tmp_path, monkeypatch):
    import huggingface_hub.constants
    from safetensors.numpy import save_file

    from tui_trainer.train.startup import base_may_be_bitsandbytes_quantized as maybe

    assert maybe(str(_quantised_folder(tmp_path / "bnb", "bitsandbytes_4bit")))
    assert not maybe(str(_quantised_folder(tmp_path / "gguf", "gguf")))
    import numpy as np

    save_file({"blocks.0.weight": np.zeros(4, np.uint8), "blocks.0.weight.absmax": np.zeros(1, np.float32)}, str(tmp_path / "q.safetensors"))
    save_file({"blocks.0.weight": np.zeros(4, np.float32)}, str(tmp_path / "plain.safetensors"))
    assert maybe(str(tmp_path / "q.safetensors")) and not maybe(str(tmp_path / "plain.safetensors"))
    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert maybe("someone/not-downloaded"), "a repo not in the cache may be anything"
    for name, method in (("someone/plain", "gguf"), ("someone/bnb", "bitsandbytes_nf4")):
        repo = cache / f"models--{name.replace('/', '--')}"
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("abc")
        _quantised_folder(repo / "snapshots" / "abc", method)
    assert not maybe("someone/plain") and maybe("someone/bnb")


@pytest.fixture
def tiny_dataset(tmp_path_factory) -> Path:
    from tui_trainer.devkit.datasets import make_dataset

    return make_dataset(tmp_path_factory.mktemp("data"), ((64, 64, 4),))


def _train_in_new_process(config: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", STARTUP_PROBE, str(config)], capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("STARTUP ")]
    assert lines, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("STARTUP "))


@pytest.mark.slow
def test_a_trainer_process_trains_without_bitsandbytes_unless_the_run_uses_it(tmp_path, tiny_sd15, tiny_dataset):
    from diffusers import StableDiffusionPipeline
    from peft.tuners.tuners_utils import BaseTunerLayer

    steps = 'resolution = "64"\nbatch_size = 2\nmax_steps = 2\ngradient_checkpointing = false\ndataloader_workers = 0\ntensorboard = false'
    for name in ("plain", "8bit"):
        (tmp_path / name).mkdir()
    plain = write_config(tmp_path / "plain", tiny_sd15, tiny_dataset, training=steps)
    eight_bit = write_config(tmp_path / "8bit", tiny_sd15, tiny_dataset, training=steps,
                             optimizer='name = "adamw8bit"\nlearning_rate = 0.001')
    without = _train_in_new_process(plain)
    assert without == {"code": 0, "hidden": True, "imported": False, "collecting": True, "frozen": without["frozen"],
                       "lomo": True}
    assert without["frozen"] > 100_000, "the imports' objects are out of the collector's way"
    (lora,) = (tmp_path / "plain" / "ws").glob("runs/*/output/*.safetensors")
    pipeline = StableDiffusionPipeline.from_pretrained(tiny_sd15, safety_checker=None, requires_safety_checker=False)
    pipeline.load_lora_weights(str(lora))
    assert any(isinstance(module, BaseTunerLayer) for module in pipeline.unet.modules())
    with_it = _train_in_new_process(eight_bit)
    assert (with_it["code"], with_it["hidden"], with_it["imported"], with_it["lomo"]) == (0, False, True, True)
