"""The VRAM estimator: exact bytes on a real (tiny) model, monotonic behaviour, suggestions, warnings, speed."""

from __future__ import annotations

import dataclasses
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tui_trainer.config import config_from_dict
from tui_trainer.config.enums import Family, LoraTargets, Method, OptimizerName
from tui_trainer.estimate import Estimate, GpuInfo, estimate
from tui_trainer.estimate.vram import BREAKDOWN_KEYS, OPTIMIZER_STATES
from tui_trainer.models.families import family_spec

GIB = 1024**3


def make_config(**sections):
    """A valid TrainConfig from section overrides, e.g. training={"batch_size": 2}."""
    data = {"method": "lora", "model": {"family": "sd15", "base_model": "some/model"}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return config_from_dict(data)


def _tiny_lora_step(optimizer_name: OptimizerName):
    """Build the tiny SD1.5 model, add LoRA to UNet and text encoder, take one optimizer step by hand.

    Returns (config, measured spec, real bytes per breakdown key).
    """
    import peft
    import torch

    from tui_trainer.devkit.tiny_models import build_tiny_pipeline
    from tui_trainer.train.counting import measured_spec
    from tui_trainer.train.optim import build_optimizer

    config = make_config(
        model={"unet_dtype": "float32", "text_encoder_dtype": "float32", "vae_dtype": "float32", "train_dtype": "float32"},
        training={"resolution": "64", "cache_latents": False, "cache_text_encoder_outputs": False},
        optimizer={"name": optimizer_name.value, "settings": {"sgd": {"momentum": 0.9}}},
        lora={"rank": 4, "targets": "attention+mlp"},
        text_encoder={"train": True},
    )
    pipe = build_tiny_pipeline("sd15")
    parts = {"unet": pipe.unet, "text_encoder": pipe.text_encoder, "vae": pipe.vae}
    spec = measured_spec(family_spec(Family.SD15), parts)
    for module in parts.values():
        module.requires_grad_(False)
    targets = spec.lora_target_modules[LoraTargets.ATTENTION_MLP]
    pipe.unet.add_adapter(peft.LoraConfig(r=4, target_modules=list(targets["unet"])))
    peft.inject_adapter_in_model(peft.LoraConfig(r=4, target_modules=list(targets["text_encoder"])), pipe.text_encoder)
    trained = [p for module in parts.values() for p in module.parameters() if p.requires_grad]
    optimizer = build_optimizer(config, [{"params": trained, "lr": 1e-4}])
    if hasattr(optimizer, "train"):
        optimizer.train()  # schedule-free optimizers step only in train mode

    torch.manual_seed(0)
    ids = torch.randint(0, 100, (1, 77))
    hidden = pipe.text_encoder(ids)[0]
    latents = pipe.vae.encode(torch.randn(1, 3, 64, 64)).latent_dist.sample()
    prediction = pipe.unet(latents, torch.tensor([10]), encoder_hidden_states=hidden).sample
    prediction.pow(2).mean().backward()
    optimizer.step()

    def nbytes(tensors):
        """Bytes of distinct non-scalar tensors (bitsandbytes shares one quantile map between parameters)."""
        distinct = {t.data_ptr(): t for t in tensors if isinstance(t, torch.Tensor) and t.dim() > 0}
        return sum(t.numel() * t.element_size() for t in distinct.values())

    trained_ids = {id(p) for p in trained}
    frozen = [p for module in parts.values() for p in module.parameters() if id(p) not in trained_ids]
    state = [value for per_param in optimizer.state.values() for value in per_param.values()]
    real = {
        "weights": nbytes(frozen),
        "trainable": nbytes(trained),
        "gradients": nbytes(p.grad for p in trained),
        "optimizer": nbytes(state),
    }
    return config, spec, real


@pytest.mark.parametrize("optimizer_name", list(OptimizerName))
def test_estimate_matches_real_tensor_bytes_on_the_tiny_model(optimizer_name):
    """Weights, trainable, gradient and optimizer-state bytes are within 2% of the real tensors' bytes."""
    config, spec, real = _tiny_lora_step(optimizer_name)
    result = estimate(config, spec=spec)
    for key, real_bytes in real.items():
        if real_bytes == 0:
            assert result.breakdown[key] == 0, key
        else:
            assert result.breakdown[key] == pytest.approx(real_bytes, rel=0.02), key


def test_sd15_lora_numbers():
    """Real SD1.5 sizes: fp16 UNet resident, text encoder cached out, rank-16 attention+mlp adapters in fp32."""
    config = make_config(model={"unet_dtype": "float16", "vae_dtype": "float32"},
                         training={"cache_latents": True, "cache_text_encoder_outputs": True},
                         lora={"rank": 16, "targets": "attention+mlp"})
    result = estimate(config)
    assert result.breakdown["weights"] == 859_520_964 * 2
    assert result.breakdown["trainable"] == 16 * 374_016 * 4
    assert result.breakdown["gradients"] == result.breakdown["trainable"]
    assert result.breakdown["optimizer"] == 2 * result.breakdown["trainable"]
    assert result.parts["text_encoder"].resident is False and result.parts["vae"].resident is False
    assert result.parts["unet"].bytes == 859_520_964 * 2
    assert set(result.breakdown) == set(BREAKDOWN_KEYS)
    assert result.total_bytes == sum(result.breakdown.values())
    assert result.peak_phase == "training_step"


def test_finetune_counts_the_whole_part_as_trainable():
    config = make_config(method="finetune", model={"unet_dtype": "float32"}, optimizer={"name": "adamw"},
                         workspace={"output_format": "diffusers"})
    result = estimate(config)
    assert result.breakdown["trainable"] == 859_520_964 * 4
    assert result.breakdown["optimizer"] == 2 * 859_520_964 * 4
    assert result.breakdown["caches"] == 859_520_964 * 2  # autocast's 16-bit copies of the fp32 weights


def test_embedding_trains_only_the_vectors():
    result = estimate(make_config(method="embedding", model={"family": "sdxl"}, embedding={"num_vectors": 4},
                                  workspace={"output_format": "a1111"}))
    assert result.breakdown["trainable"] == 4 * (768 + 1280) * 4
    assert result.parts["text_encoder"].resident and result.parts["text_encoder_2"].resident


def test_budget_fits_and_json_shape():
    gpu = GpuInfo(0, "RTX 3060", 12 * GIB, 11 * GIB, 1 * GIB, (8, 6), "550.00")
    result = estimate(make_config(), gpu)
    assert result.budget_bytes == 11 * GIB and result.fits is True
    assert estimate(make_config(), target_bytes=1 * GIB).fits is False
    assert estimate(make_config()).fits is None
    data = result.to_json()
    assert set(data) >= {"total_bytes", "breakdown", "parts", "peak_phase", "gpu", "fits", "suggestions", "warnings"}
    assert set(data["breakdown"]) == set(BREAKDOWN_KEYS)
    assert data["gpu"] == {"name": "RTX 3060", "total_bytes": 12 * GIB, "free_bytes": 11 * GIB, "compute_capability": [8, 6]}
    assert set(data["parts"]["unet"]) == {"params", "dtype", "bytes", "resident", "freed"}


def test_suggestions_are_ranked_and_each_saves_what_it_says():
    config = make_config(training={"gradient_checkpointing": False, "cache_latents": False, "batch_size": 4},
                         model={"family": "sdxl"}, lora={"rank": 32})
    result = estimate(config)
    saves = [s.saves_bytes for s in result.suggestions]
    assert saves == sorted(saves, reverse=True) and all(s > 0 for s in saves)
    changes = [s.change for s in result.suggestions]
    assert "training.gradient_checkpointing = true" in changes
    assert "optimizer.name = 'adamw8bit'" in changes
    checkpointed = estimate(make_config(training={"gradient_checkpointing": True, "cache_latents": False, "batch_size": 4},
                                        model={"family": "sdxl"}, lora={"rank": 32}))
    saving = next(s.saves_bytes for s in result.suggestions if s.change == "training.gradient_checkpointing = true")
    assert result.total_bytes - checkpointed.total_bytes == saving


def test_dtype_warnings_follow_compute_capability():
    turing = GpuInfo(0, "T4", 16 * GIB, 15 * GIB, GIB, (7, 5), "550")
    ada = GpuInfo(0, "RTX 4090", 24 * GIB, 23 * GIB, GIB, (8, 9), "550")
    bf16 = make_config(model={"train_dtype": "bfloat16", "unet_dtype": "float8"})
    assert len(estimate(bf16, turing).warnings) == 2
    assert estimate(bf16, ada).warnings == []
    sdxl_fp16_vae = make_config(model={"family": "sdxl", "vae_dtype": "float16"})
    assert any("SDXL VAE" in w for w in estimate(sdxl_fp16_vae).warnings)


def test_phases_outside_the_training_step():
    """Sampling at a large size and latent caching at a huge bucket can be the peak."""
    config = make_config(samples=[{"prompt": "a dog", "width": 2048, "height": 2048}], sampling={"every": 1},
                         model={"vae_dtype": "float32"}, training={"cache_latents": True})
    result = estimate(config)
    assert set(result.phases) >= {"training_step", "latent_caching", "sampling"}
    assert result.peak_phase == "sampling"
    caching = estimate(make_config(training={"cache_latents": True}), largest_bucket=(4096, 4096))
    assert caching.peak_phase == "latent_caching"


def test_eager_attention_costs_more():
    sdpa = estimate(make_config(training={"attention": "sdpa"}))
    eager = estimate(make_config(training={"attention": "eager"}))
    assert eager.breakdown["activations"] > sdpa.breakdown["activations"]


def test_every_family_and_method_estimates():
    for family in Family:
        for method, fmt in ((Method.LORA, "kohya"), (Method.FINETUNE, "diffusers"), (Method.EMBEDDING, "a1111")):
            result = estimate(make_config(method=method.value, model={"family": family.value},
                                          workspace={"output_format": fmt}))
            assert result.total_bytes > 0 and isinstance(result, Estimate)


def test_estimate_is_fast():
    config = make_config(model={"family": "sdxl"}, training={"gradient_checkpointing": False, "batch_size": 2})
    estimate(config)
    calls = 300
    start = time.perf_counter()
    for _ in range(calls):
        estimate(config)
    per_call = (time.perf_counter() - start) / calls
    assert per_call < 0.003  # the goal is < 1 ms (benchmarks/estimate.py); slack here for loaded CI machines


EIGHT_BIT = {name for name, state in OPTIMIZER_STATES.items() if state.eight_bit}

settings_strategy = st.fixed_dictionaries({
    "family": st.sampled_from(list(Family)),
    "method": st.sampled_from(["lora", "finetune", "embedding"]),
    "side": st.integers(32, 256).map(lambda v: v * 8),
    "batch": st.integers(1, 16),
    "rank": st.integers(1, 256),
    "checkpointing": st.booleans(),
    "cache_latents": st.booleans(),
    "cache_text": st.booleans(),
    "optimizer": st.sampled_from(list(OptimizerName)),
    "dtype": st.sampled_from(["float32", "float16", "bfloat16", "float8", "nf4"]),
    "train_text": st.booleans(),
    "attention": st.sampled_from(["sdpa", "eager"]),
    "samples": st.booleans(),
})


def _config(s: dict):
    fmt = {"lora": "kohya", "finetune": "diffusers", "embedding": "a1111"}[s["method"]]
    return make_config(
        method=s["method"],
        model={"family": s["family"].value, "unet_dtype": s["dtype"] if s["method"] != "finetune" else "float32"},
        workspace={"output_format": fmt},
        training={"resolution": str(s["side"]), "batch_size": s["batch"], "gradient_checkpointing": s["checkpointing"],
                  "cache_latents": s["cache_latents"], "cache_text_encoder_outputs": s["cache_text"],
                  "attention": s["attention"]},
        optimizer={"name": s["optimizer"].value},
        lora={"rank": s["rank"]},
        text_encoder={"train": s["train_text"]},
        samples=[{"prompt": "x"}] if s["samples"] else [],
        sampling={"every": 1 if s["samples"] else 0},
    )


def _total(s: dict, **changes) -> int:
    return estimate(_config({**s, **changes})).total_bytes


@settings(max_examples=150, deadline=None)
@given(settings_strategy, st.integers(1, 8), st.integers(1, 64))
def test_more_batch_resolution_or_rank_never_lowers_the_estimate(s, extra_batch, extra_side):
    assert _total(s, batch=min(256, s["batch"] + extra_batch)) >= _total(s)
    assert _total(s, side=min(4096, s["side"] + 8 * extra_side)) >= _total(s)
    if s["optimizer"] not in EIGHT_BIT:
        # bitsandbytes keeps 32-bit state for tensors under 4096 elements, so a rank step that lifts a LoRA
        # tensor over that line can shrink its state: exact, and the only exception.
        assert _total(s, rank=min(1024, s["rank"] * 2)) >= _total(s)


@settings(max_examples=150, deadline=None)
@given(settings_strategy)
def test_checkpointing_eight_bit_optimizers_and_caching_never_raise_the_estimate(s):
    assert _total(s, checkpointing=True) <= _total(s, checkpointing=False)
    assert _total(s, cache_latents=True) <= _total(s, cache_latents=False)
    assert _total(s, cache_text=True) <= _total(s, cache_text=False)
    for plain, eight_bit in ((OptimizerName.ADAMW, OptimizerName.ADAMW8BIT), (OptimizerName.LION, OptimizerName.LION8BIT)):
        assert _total(s, optimizer=eight_bit) <= _total(s, optimizer=plain)


def test_spec_override_is_used():
    spec = family_spec(Family.SD15)
    tiny = dataclasses.replace(spec, parts={**spec.parts, "unet": dataclasses.replace(spec.parts["unet"], params=1000)})
    assert estimate(make_config(), spec=tiny).parts["unet"].params == 1000


def test_a_frozen_text_encoder_in_nf4_is_suggested_when_text_caching_is_the_peak():
    """FLUX.1-dev LoRA with an offloaded bf16 transformer: T5 on the GPU for text caching is the peak; nf4 T5 is the
    first suggestion, and its saving is what the estimate with that change says."""
    from tui_trainer.config import config_from_dict, load_preset

    document = load_preset("flux1-dev-lora").model_dump(mode="json", exclude_none=True)
    document["flow"]["offload"] = {"enabled": True}
    document["parts"]["denoiser"]["dtype"] = "bfloat16"
    result = estimate(config_from_dict(document))
    assert result.peak_phase == "text_caching"
    first = result.suggestions[0]
    assert first.change == "parts.text_encoder_2.dtype = 'nf4'"
    document["parts"]["text_encoder_2"] = {**document["parts"].get("text_encoder_2", {}), "dtype": "nf4"}
    assert first.saves_bytes == result.total_bytes - estimate(config_from_dict(document)).total_bytes > 4 * 2**30
