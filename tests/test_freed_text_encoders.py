"""Flow families free their text encoders once the text outputs are cached: the samples' prompts are encoded ahead
and give the same images, the estimate leaves the encoders out of RAM and sampling VRAM, and runs that still need
them (captions that change, a finetune, no text cache) keep them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui_trainer.config.enums import Family

FREEING = (Family.FLUX1_DEV, Family.FLUX1_SCHNELL, Family.CHROMA, Family.Z_IMAGE, Family.QWEN_IMAGE)


def test_the_families_that_free_are_the_flow_families_and_each_encodes_its_samples_ahead():
    from tui_trainer.models.families import family_spec
    from tui_trainer.train.families import train_family

    freeing = {family for family in Family if family_spec(family).frees_cached_text_encoders}
    assert freeing == set(FREEING)
    assert {family for family in Family if train_family(family).sample_text is not None} == freeing


@pytest.mark.parametrize("family", FREEING, ids=lambda family: family.value)
def test_samples_from_prompts_encoded_ahead_equal_the_pipelines_own(family: Family, tmp_path: Path, one_thread):
    """The same PNG pixels whether the pipeline reads the prompts or gets them encoded before the encoders were freed
    (cfg 3 with a negative prompt: the negative embeddings are used where the pipeline guides)."""
    import contextlib
    import gc
    import weakref

    import numpy as np
    import torch
    from PIL import Image

    from tui_trainer.config import config_from_dict
    from tui_trainer.devkit.tiny_families import save_tiny_model
    from tui_trainer.train.loading import load_model
    from tui_trainer.train.sampling import encode_sample_prompts, make_samples

    config = config_from_dict({
        "method": "lora",
        "model": {"family": family.value, "base_model": str(save_tiny_model(tmp_path / "model", family)), "train_dtype": "float32"},
        "training": {"resolution": "64"},
        "samples": [{"prompt": "red, circle", "negative_prompt": "blurry", "steps": 2, "cfg": 3.0, "seed": 4},
                    {"prompt": "blue, square", "steps": 2, "seed": 5}],
    })
    model = load_model(config, None)
    device, keep = torch.device("cpu"), lambda module: module
    before = make_samples(model, config, tmp_path / "with", 1, device, keep, contextlib.nullcontext)

    texts = encode_sample_prompts(model, config, device, contextlib.nullcontext)
    encoders = [weakref.ref(module) for module in model.text_encoders.values()]
    model.free_text_encoders()
    gc.collect()
    assert encoders and all(encoder() is None for encoder in encoders)

    after = make_samples(model, config, tmp_path / "freed", 1, device, keep, contextlib.nullcontext, texts=texts)
    assert [path.name for path in after] == [path.name for path in before]
    for old, new in zip(before, after, strict=True):
        assert np.array_equal(np.asarray(Image.open(old)), np.asarray(Image.open(new)))
    assert not np.array_equal(np.asarray(Image.open(after[0])), np.asarray(Image.open(after[1])))


def _preset(name: str, **changes):
    from tui_trainer.config import config_from_dict, load_preset

    document = load_preset(name).model_dump(mode="json", exclude_none=True)
    document["concepts"] = [{"name": "photos", "path": "photos"}]
    for key, value in changes.items():
        table, field = key.split("__")
        document[table][field] = value
    return config_from_dict(document)


@pytest.mark.parametrize(("config", "frees"), [
    (lambda: _preset("flux1-dev-lora"), True),
    (lambda: _preset("z-image-lora-8gb"), True),
    (lambda: _preset("flux1-dev-lora", training__cache_text_encoder_outputs=False), False),
    (lambda: _preset("flux1-dev-finetune"), False),
    (lambda: _preset("sdxl-lora"), False),
], ids=["flux-lora", "z-image-lora", "no-text-cache", "finetune-saves-them", "sdxl"])
def test_which_runs_free_their_text_encoders(config, frees: bool):
    from tui_trainer.models.families import config_frees_text_encoders

    assert config_frees_text_encoders(config()) is frees


def test_captions_that_change_keep_the_text_encoders():
    from tui_trainer.models.families import config_frees_text_encoders

    config = _preset("flux1-dev-lora")
    config.concepts[0].shuffle_tags = True
    assert config_frees_text_encoders(config) is False


def test_the_estimate_leaves_freed_text_encoders_out_of_ram_and_sampling():
    """FLUX.1-dev LoRA: the training step's RAM and the samples' VRAM drop by exactly CLIP-L + T5's bytes."""
    from tui_trainer.config.schema import SampleConfig
    from tui_trainer.estimate import estimate

    freed = _preset("flux1-dev-lora")
    freed.samples, freed.sampling.every = [SampleConfig(prompt="a cat")], 100
    kept = freed.model_copy(deep=True)
    kept.concepts[0].shuffle_tags = True
    freed_estimate, kept_estimate = estimate(freed), estimate(kept)
    text_bytes = sum(kept_estimate.parts[name].bytes for name in ("text_encoder", "text_encoder_2"))
    assert text_bytes > 9 * 2**30  # T5-XXL in bfloat16
    for phase, kind in (("training_step", "ram_bytes"), ("latent_caching", "ram_bytes"), ("sampling", "vram_bytes")):
        assert getattr(kept_estimate.phases[phase], kind) - getattr(freed_estimate.phases[phase], kind) == text_bytes
    assert freed_estimate.phases["text_caching"] == kept_estimate.phases["text_caching"]
    assert [name for name, part in freed_estimate.parts.items() if part.freed] == ["text_encoder", "text_encoder_2"]
    assert not any(part.freed for part in kept_estimate.parts.values())
