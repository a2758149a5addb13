"""Block offload of a flow transformer (train/offload.py), on the CPU.

With no GPU here the onload and offload devices are both the CPU, so these tests cannot show GPU memory or speed
(benchmarks/gpu_check.py's offload row measures those). What they do show: the hooks are where diffusers looks for
them, training with them gives the same losses and LoRA as without, and -- with every offloaded tensor's data replaced
by NaNs until it is onloaded again, a stand-in for "it is in another memory" -- no forward or backward ever reads an
offloaded weight and no LoRA update is lost.
"""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_out", "ff.net.2"]


def _transformer(layers: int = 2, nf4: bool = False, fp8: bool = False):
    import peft
    import torch
    from diffusers import FluxTransformer2DModel

    from tui_trainer.devkit.tiny_families import TINY_FLUX
    from tui_trainer.train.loading import quantize_nf4

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(**{**TINY_FLUX, "num_layers": layers, "num_single_layers": layers},
                                         pooled_projection_dim=32, guidance_embeds=True)
    if nf4:
        quantize_nf4(transformer, torch.float32)
        transformer.to("cpu")
    if fp8:
        transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.float32)
    transformer.requires_grad_(False)
    transformer.add_adapter(peft.LoraConfig(r=4, lora_alpha=4, target_modules=TARGETS, init_lora_weights=False))
    for param in transformer.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    transformer.enable_gradient_checkpointing()
    return transformer


def _train(transformer, steps: int = 3) -> tuple[list[float], dict]:
    """A few AdamW steps on fixed random inputs; (losses, LoRA weights)."""
    import torch

    params = [param for param in transformer.parameters() if param.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        inputs = {
            "hidden_states": torch.randn(2, 16, 64, generator=generator), "encoder_hidden_states": torch.randn(2, 8, 32, generator=generator),
            "pooled_projections": torch.randn(2, 32, generator=generator), "timestep": torch.rand(2, generator=generator),
            "img_ids": torch.zeros(16, 3), "txt_ids": torch.zeros(8, 3), "guidance": torch.ones(2),
        }
        target = torch.randn(2, 16, 64, generator=generator)
        loss = (transformer(**inputs, return_dict=False)[0].float() - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, {name: param.detach().clone() for name, param in transformer.named_parameters() if param.requires_grad}


@pytest.fixture
def poisoned(monkeypatch):
    """ModuleGroup transfers that hide an offloaded tensor's data behind NaNs until it is onloaded."""
    import torch
    from diffusers.hooks import group_offloading

    hidden: dict[int, torch.Tensor] = {}

    def tensors(group):
        return [*group.parameters, *group.buffers]

    def offload(group):
        for tensor in tensors(group):
            if id(tensor) not in hidden:
                hidden[id(tensor)] = tensor.data
                tensor.data = torch.full_like(tensor.data, math.nan) if tensor.is_floating_point() else torch.zeros_like(tensor.data)

    def onload(group):
        for tensor in tensors(group):
            if id(tensor) in hidden:
                tensor.data = hidden.pop(id(tensor))

    monkeypatch.setattr(group_offloading.ModuleGroup, "_offload_to_memory", offload)
    monkeypatch.setattr(group_offloading.ModuleGroup, "_onload_from_memory", onload)
    return hidden


def test_hooks_sit_in_diffusers_registry_and_only_frozen_block_weights_move():
    import torch
    from diffusers.hooks.group_offloading import _is_group_offload_enabled

    from tui_trainer.train.offload import OFFLOAD_HOOK, apply_block_offload

    transformer = _transformer(layers=3)
    offload = apply_block_offload(transformer, torch.device("cpu"), blocks_per_group=2)
    assert [member.name for member in offload.groups] == [
        "transformer_blocks_0_1", "transformer_blocks_2_2", "single_transformer_blocks_0_1", "single_transformer_blocks_2_2"]
    for member in offload.groups:
        for block in member.blocks:
            assert block._diffusers_hook.get_hook(OFFLOAD_HOOK).member is member
        moved = {id(tensor) for tensor in member.group.parameters}
        assert moved and not any(param.requires_grad for param in member.group.parameters)
        assert all(id(param) in moved for block in member.blocks for param in block.parameters() if not param.requires_grad)
    assert _is_group_offload_enabled(transformer)
    assert transformer._gradient_checkpointing_func == offload.checkpoint
    assert not any(member.onloaded for member in offload.groups)


@pytest.mark.parametrize("blocks_per_group", [1, 2])
def test_training_with_offload_gives_the_same_losses_and_lora(blocks_per_group: int):
    import torch

    from tui_trainer.train.offload import apply_block_offload

    expected_losses, expected = _train(_transformer())
    transformer = _transformer()
    apply_block_offload(transformer, torch.device("cpu"), blocks_per_group=blocks_per_group)
    losses, actual = _train(transformer)
    assert losses == expected_losses
    assert expected.keys() == actual.keys() and all(torch.equal(expected[name], actual[name]) for name in expected)


@pytest.mark.parametrize("blocks_per_group", [1, 2])
def test_no_pass_reads_an_offloaded_weight_and_groups_go_back_after_their_backward(poisoned, blocks_per_group: int):
    import torch

    from tui_trainer.train.offload import apply_block_offload

    expected_losses, expected = _train(_transformer())
    transformer = _transformer()
    offload = apply_block_offload(transformer, torch.device("cpu"), blocks_per_group=blocks_per_group)
    seen = []
    release = offload.release
    offload.release = lambda member: (seen.append((member.name, offload.in_forward, member.onloaded)), release(member))[1]
    losses, actual = _train(transformer)
    assert losses == pytest.approx(expected_losses, rel=1e-5)
    assert all(torch.allclose(expected[name], actual[name], atol=1e-6) for name in expected)
    # every group left the device after its backward too, not only after its forward (diffusers' own hooks keep it)
    released_in_backward = {name for name, forward, onloaded in seen if not forward and onloaded}
    assert released_in_backward >= {member.name for member in offload.groups[1:]}
    assert poisoned, "the offloaded weights were hidden"


def test_without_our_fixes_diffusers_own_hooks_read_offloaded_weights(poisoned):
    """The reason for train/offload.py: diffusers' apply_group_offloading, checkpointing on, 2 blocks a group."""
    import torch
    from diffusers.hooks import apply_group_offloading
    from diffusers.hooks import group_offloading

    def tensors(group):
        found = [tensor for module in group.modules for tensor in [*module.parameters(), *module.buffers()]]
        return found + [*group.parameters, *group.buffers]

    # diffusers' groups hold modules, not tensor lists: hide their tensors the same way
    offload, onload = group_offloading.ModuleGroup._offload_to_memory, group_offloading.ModuleGroup._onload_from_memory
    group_offloading.ModuleGroup._offload_to_memory = lambda group: offload(_AsTensors(tensors(group)))
    group_offloading.ModuleGroup._onload_from_memory = lambda group: onload(_AsTensors(tensors(group)))
    transformer = _transformer()
    apply_group_offloading(transformer, onload_device=torch.device("cpu"), offload_type="block_level", num_blocks_per_group=2)
    losses, weights = _train(transformer, steps=1)
    assert any(not torch.isfinite(weight).all() for weight in weights.values())


class _AsTensors:
    def __init__(self, tensors):
        self.parameters, self.buffers = tensors, []


def test_nf4_blocks_offload_with_their_quant_state():
    import torch

    from tui_trainer.train.offload import apply_block_offload

    transformer = _transformer(nf4=True)
    offload = apply_block_offload(transformer, torch.device("cpu"))
    quantized = [param for member in offload.groups for param in member.quantized]
    assert quantized and all(param.quant_state.absmax.device.type == "cpu" for param in quantized)
    losses, weights = _train(transformer, steps=2)
    assert all(math.isfinite(loss) for loss in losses) and all(torch.isfinite(weight).all() for weight in weights.values())


def _flux_config(folder, *, offload: str = "enabled = true", extra: str = "", family: str = "flux1_dev"):
    """A tiny flow-family LoRA config (FLUX.1-dev unless told): 64 px, 2 steps, checkpointing on, the given [flow.offload]."""
    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.devkit.tiny_families import save_tiny_model
    from tui_trainer.config.enums import Family

    model = save_tiny_model(folder / "model", Family(family))
    data = make_dataset(folder / "data", ((64, 64, 2),))
    path = folder / "config.toml"
    path.write_text(
        f'version = 2\nmethod = "lora"\n{extra}\n[model]\nfamily = "{family}"\nbase_model = "{model}"\ntrain_dtype = "float32"\n'
        f'[workspace]\ndir = "{folder / "ws"}"\nrun_name = "tiny"\noutput_format = "diffusers"\n[[concepts]]\nname = "shapes"\npath = "{data}"\n'
        '[training]\nresolution = "64"\nbatch_size = 2\nmax_steps = 2\ndataloader_workers = 0\ntensorboard = false\n'
        f'[parts.denoiser]\ndtype = "float32"\n[parts.text_encoder]\ndtype = "float32"\n[parts.text_encoder_2]\ndtype = "float32"\n[lora]\nrank = 4\n[flow]\nmax_sequence_length = 16\n[flow.offload]\n{offload}\n'
    )
    return path


def test_on_the_cpu_the_trainer_warns_once_and_trains_without_offload(tmp_path):
    import json

    from tui_trainer.cli import main

    assert main(["train", str(_flux_config(tmp_path))]) == 0
    (run,) = (tmp_path / "ws" / "runs").iterdir()
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    warnings = [event["message"] for event in events if event["type"] == "warning" and "flow.offload" in event["message"]]
    assert warnings == ["flow.offload: training on the cpu, there is no GPU memory to offload from; training without it"]
    assert [event["step"] for event in events if event["type"] == "step"] == [1, 2]
    assert (run / "output" / "tiny" / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.parametrize(("family", "method", "table", "message"), [
    ("flux1_dev", "finetune", "", "flow.offload.enabled: block offload is for method 'lora' (frozen transformer weights); "
                                  "'finetune' trains the weights it would move: use lora, or set it to false"),
    ("z_image", "lora", "[training]\ngradient_checkpointing = false\n",
     "training.gradient_checkpointing: flow.offload needs it true: the backward reruns each block's forward"),
    ("qwen_image", "lora", "[distributed]\nnum_processes = 2\n",
     "flow.offload.enabled: block offload trains on one GPU here; set distributed.num_processes = 1"),
    ("sdxl", "lora", "", "flow.offload.enabled: Stable Diffusion XL has no block offload; it is for the flow families' transformers"),
])
def test_validate_refuses_what_offload_cannot_do(family, method, table, message, tmp_path, capsys):
    from tui_trainer.cli import main

    path = tmp_path / "config.toml"
    path.write_text(f'version = 2\nmethod = "{method}"\n[model]\nfamily = "{family}"\nbase_model = "x/y"\n{table}'
                    "[flow.offload]\nenabled = true\n")
    assert main(["config", "validate", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_a_pipeline_samples_the_same_image_through_offloaded_blocks(poisoned):
    """Sampling during training: no-grad forwards through the hooks, every block onloaded and sent back in turn."""
    import numpy as np
    import torch

    from tui_trainer.devkit.tiny_families import build_tiny_flux
    from tui_trainer.train.offload import apply_block_offload

    def image(pipeline):
        result = pipeline("red, circle", width=64, height=64, num_inference_steps=2, max_sequence_length=16,
                          generator=torch.Generator().manual_seed(1), output_type="np").images[0]
        return np.asarray(result)

    pipeline = build_tiny_flux()
    for module in pipeline.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()  # as from_pretrained leaves them: no dropout
    expected = image(pipeline)
    pipeline.transformer.enable_gradient_checkpointing()
    offload = apply_block_offload(pipeline.transformer, torch.device("cpu"))
    pipeline.to("cpu")
    assert np.array_equal(image(pipeline), expected)
    assert not any(member.onloaded for member in offload.groups)


class _FakeStream:
    """Stands in for the CUDA side stream: counts the waits."""

    def __init__(self):
        self.waits = 0

    def synchronize(self):
        self.waits += 1


@pytest.mark.parametrize("blocks_per_group", [1, 2])
def test_prefetch_brings_the_next_group_early_and_holds_two_groups_at_most(poisoned, blocks_per_group: int):
    """use_stream's order logic on the CPU (the copies themselves need CUDA): from the second step on, the forward
    onloads the group after the running one and the backward the one before it; never more than two groups on."""
    import torch

    from tui_trainer.train.offload import apply_block_offload

    expected_losses, expected = _train(_transformer(layers=3))
    transformer = _transformer(layers=3)
    offload = apply_block_offload(transformer, torch.device("cpu"), blocks_per_group=blocks_per_group)
    offload.stream, offload.prefetch = _FakeStream(), True
    most, prefetched = [0], []
    enter, onload = offload.enter, offload.onload

    def counting_enter(member):
        enter(member)
        most[0] = max(most[0], sum(group.onloaded for group in offload.groups))

    def recording_onload(member, prefetch=False):
        if prefetch and not member.onloaded:
            prefetched.append((offload.in_forward, offload.groups.index(member)))
        onload(member, prefetch)

    offload.enter, offload.onload = counting_enter, recording_onload
    losses, actual = _train(transformer)
    assert losses == pytest.approx(expected_losses, rel=1e-5)
    assert all(torch.allclose(expected[name], actual[name], atol=1e-6) for name in expected)
    groups = len(offload.groups)
    assert [index for forward, index in prefetched if forward] == list(range(1, groups)) * 2  # steps 2 and 3
    assert sorted({index for forward, index in prefetched if not forward}) == list(range(groups - 1))
    assert most[0] == 2 and offload.stream.waits > 0


@pytest.mark.parametrize("family", ["flux1_dev", "chroma", "z_image", "qwen_image"])
def test_the_trainer_with_offload_hooks_on_saves_the_same_lora_and_samples(family, poisoned, tmp_path, monkeypatch):
    """The whole trainer (accelerate's prepare, sampling, backup, save) with the hooks applied on the CPU as on a GPU,
    offloaded tensors hidden behind NaNs: the same LoRA file and sample images as a run without offload."""
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import load_file

    from tui_trainer.cli import main
    from tui_trainer.train import entry
    from tui_trainer.train.offload import apply_block_offload

    applied = []

    def on_the_cpu_as_on_a_gpu(transformer, config, device, warn):
        applied.append(apply_block_offload(transformer, device, config.flow.offload.blocks_per_group))
        return applied[-1]

    samples = '[[samples]]\nprompt = "red, circle"\nsteps = 2\n[sampling]\nevery = 1\nunit = "steps"\n'
    outputs = {}
    for name, offload in (("plain", "enabled = false"), ("offloaded", "enabled = true\nblocks_per_group = 2")):
        if name == "offloaded":
            monkeypatch.setattr(entry, "offload_transformer", on_the_cpu_as_on_a_gpu)
        assert main(["train", str(_flux_config(tmp_path / name, offload=offload, extra=samples, family=family))]) == 0
        (run,) = (tmp_path / name / "ws" / "runs").iterdir()
        lora = load_file(str(run / "output" / "tiny" / "pytorch_lora_weights.safetensors"))
        images = [np.asarray(Image.open(path)) for path in sorted((run / "samples").iterdir())]
        outputs[name] = (lora, images)
    (lora, images), (offloaded_lora, offloaded_images) = outputs["plain"], outputs["offloaded"]
    assert len(applied) == 1 and len(images) == 2 and poisoned
    assert lora.keys() == offloaded_lora.keys() and all(torch.allclose(lora[key], offloaded_lora[key], atol=1e-6) for key in lora)
    assert all(np.abs(a.astype(int) - b.astype(int)).max() <= 1 for a, b in zip(images, offloaded_images, strict=True))


def test_float8_storage_trains_the_same_through_offloaded_blocks(poisoned):
    """parts.denoiser.dtype = float8 (diffusers' layerwise casting hooks inside the offloaded blocks)."""
    import torch

    from tui_trainer.train.offload import apply_block_offload

    expected_losses, expected = _train(_transformer(fp8=True), steps=2)
    transformer = _transformer(fp8=True)
    offload = apply_block_offload(transformer, torch.device("cpu"), blocks_per_group=2)
    assert {param.dtype for member in offload.groups for param in member.group.parameters} >= {torch.float8_e4m3fn}
    losses, actual = _train(transformer, steps=2)
    assert losses == pytest.approx(expected_losses, rel=1e-5)
    assert all(torch.allclose(expected[name], actual[name], atol=1e-6) for name in expected)
