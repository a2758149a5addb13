"""Measure the training-step memory of the real architectures on the CPU, to calibrate the VRAM estimator.

A TorchDispatchMode counts the bytes of every tensor storage created inside a step (forward, backward)
and keeps the peak: the CPU analogue of torch.cuda.max_memory_allocated() minus the resident weights.
Run: python benchmarks/activation_profile.py MODEL [SIDES] [MODES]; MODEL sd15|sd2|sdxl|pixart|cascade_lite|vae,\nSIDES latent sides like 32,48 (image sides for vae), MODES lora,trained,inference (slow: minutes, GBs of RAM).
Prints the peak bytes per latent pixel per sample; docs/vram.md records the numbers the estimator uses.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tui_trainer.models.architectures import PIXART_ALPHA_1024, SD15_UNET, SD21_UNET, SD_VAE, SDXL_UNET, STABLE_CASCADE_C_LITE



class LiveBytes(TorchDispatchMode):
    """Bytes of storages created under this mode (not views of `resident` tensors) still alive; `peak` is the high-water mark."""

    def __init__(self, resident=()) -> None:
        super().__init__()
        self.resident = {tensor.untyped_storage().data_ptr() for tensor in resident}
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def _sweep(self) -> None:
        for key in [key for key, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._sweep()
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                storage = tensor.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.live and key not in self.resident:
                    self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


def build_denoiser(name: str):
    """The real architecture `name`, random-initialised in bfloat16, with its conditioning inputs."""
    import diffusers

    torch.manual_seed(0)
    if name in ("sd15", "sd2", "sdxl"):
        config = {"sd15": SD15_UNET, "sd2": SD21_UNET, "sdxl": SDXL_UNET}[name]
        model = diffusers.UNet2DConditionModel(**config).to(torch.bfloat16)
        width = model.config.cross_attention_dim

        def inputs(batch, side):
            extra = {}
            if name == "sdxl":
                extra = {"added_cond_kwargs": {"text_embeds": torch.randn(batch, 1280), "time_ids": torch.randn(batch, 6)}}
            return {"sample": torch.randn(batch, 4, side, side), "timestep": torch.tensor([500] * batch),
                    "encoder_hidden_states": torch.randn(batch, 77, width), **extra}

        return model, inputs, ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]
    if name == "pixart":
        model = diffusers.PixArtTransformer2DModel(**PIXART_ALPHA_1024).to(torch.bfloat16)

        def inputs(batch, side):
            return {"hidden_states": torch.randn(batch, 4, side, side), "timestep": torch.tensor([500] * batch),
                    "encoder_hidden_states": torch.randn(batch, 120, 4096),
                    "added_cond_kwargs": {"resolution": torch.tensor([[1024.0, 1024.0]] * batch),
                                          "aspect_ratio": torch.tensor([[1.0]] * batch)}}

        return model, inputs, ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]
    if name == "cascade_lite":
        model = diffusers.StableCascadeUNet(**STABLE_CASCADE_C_LITE).to(torch.bfloat16)

        def inputs(batch, side):
            return {"sample": torch.randn(batch, 16, side, side), "timestep_ratio": torch.rand(batch),
                    "clip_text_pooled": torch.randn(batch, 1, 1280), "clip_text": torch.randn(batch, 77, 1280),
                    "clip_img": torch.zeros(batch, 1, 768)}

        return model, inputs, ["to_q", "to_k", "to_v", "to_out.0", "channelwise.0", "channelwise.4"]
    raise SystemExit(f"unknown model {name}")


def step_peak(model, inputs, lora_targets, *, side: int, batch: int, checkpointing: bool, trained: bool) -> int:
    """Peak bytes created during one bf16-autocast forward+backward at latent side `side`."""
    from peft import LoraConfig, inject_adapter_in_model

    model.requires_grad_(trained)
    if not trained and not hasattr(model, "_profile_lora"):
        inject_adapter_in_model(LoraConfig(r=16, target_modules=lora_targets), model)
        model._profile_lora = True
    for parameter_name, parameter in model.named_parameters():
        parameter.requires_grad_(trained or "lora_" in parameter_name)
    if checkpointing:
        model.enable_gradient_checkpointing()
    else:
        model.disable_gradient_checkpointing()
    model.train()
    feed = inputs(batch, side)
    tracker = LiveBytes([*model.parameters(), *model.buffers()])
    with tracker, torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**feed).sample
        out.float().pow(2).mean().backward()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    return tracker.peak - grads


def autoencoder_peaks(side: int) -> dict[str, int]:
    """Peak bytes created by one bf16 no-grad encode and decode of a side x side image with the SD VAE."""
    import diffusers

    config = {k: v for k, v in SD_VAE.items() if k != "sample_size"}
    vae = diffusers.AutoencoderKL(**config).to(torch.bfloat16).eval()
    resident = [*vae.parameters(), *vae.buffers()]
    image = torch.randn(1, 3, side, side, dtype=torch.bfloat16)
    latents = torch.randn(1, 4, side // 8, side // 8, dtype=torch.bfloat16)
    peaks = {}
    for phase, run in (("encode", lambda: vae.encode(image).latent_dist.sample()),
                       ("decode", lambda: vae.decode(latents).sample)):
        tracker = LiveBytes([*resident, image, latents])
        with tracker, torch.no_grad():
            run()
        peaks[phase] = tracker.peak
    return peaks


def inference_peak(model, inputs, side: int) -> int:
    """Peak bytes created by one no-grad bf16 forward at batch 2 (classifier-free guidance)."""
    feed = inputs(2, side)
    tracker = LiveBytes([*model.parameters(), *model.buffers()])
    with tracker, torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(**feed)
    return tracker.peak


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "sd15"
    sides = [int(s) for s in (sys.argv[2].split(",") if len(sys.argv) > 2 else ["32", "48"])]
    modes = sys.argv[3].split(",") if len(sys.argv) > 3 else ["lora"]
    if name == "vae":
        for side in sides:
            peaks = autoencoder_peaks(side)
            print(json.dumps({"model": "sd_vae", "image_side": side, **peaks,
                              **{f"{k}_bytes_per_pixel": round(v / side**2, 1) for k, v in peaks.items()}}), flush=True)
        return
    model, inputs, targets = build_denoiser(name)
    if "inference" in modes:
        for side in sides:
            peak = inference_peak(model, inputs, side)
            print(json.dumps({"model": name, "inference_batch": 2, "latent_side": side, "peak_bytes": peak}), flush=True)
    for trained in [mode == "trained" for mode in modes if mode in ("lora", "trained")]:
        for checkpointing in (False, True):
            for side in sides:
                start = time.perf_counter()
                peak = step_peak(model, inputs, targets, side=side, batch=1, checkpointing=checkpointing, trained=trained)
                print(json.dumps({"model": name, "trained": trained, "checkpointing": checkpointing, "latent_side": side,
                                  "peak_bytes": peak, "bytes_per_latent_pixel": round(peak / side**2),
                                  "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
