"""`tui-trainer train CONFIG`: the training recipe (setup -> train -> save) writing the run directory.

Shape of a torchtune recipe: setup() calls _setup_model / _setup_data / _setup_caches / _setup_optimizer,
train() runs the epochs, save() writes the model. The method module (train/methods/) decides what trains
and how it is saved; the family tables (loop.CONDITIONING) decide how captions condition the UNet.
Randomness lives in explicit places only: the seeded torch generator `noise_rng` (noise, timesteps),
the per-item RNGs of the data pipeline (derived from seed, epoch, batch index) and the global torch RNG
(adapter init, dropout), seeded once at setup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

import torch

from tui_trainer.config import ConfigError, TrainConfig, check_paths, dump_config, load_config, resolve_path, with_absolute_paths
from tui_trainer.data import build_report, plan_epoch
from tui_trainer.data.report import cache_dir_of
from tui_trainer.config.enums import AttentionBackend, MixedPrecision, TrainDtype
from tui_trainer.runs.layout import RunDir, create_run_dir
from tui_trainer.runs.status import RunState
from tui_trainer.train.caching import LatentCache, TextCache, fill_latent_cache, latent_variants, module_identity
from tui_trainer.train.dataset import EpochBatches
from tui_trainer.train.loading import TEXT_ENCODER_PARTS, ModelLoadError, compute_dtype, input_dtype, load_model
from tui_trainer.train.loop import conditioning_for, denoise_loss, encode_latents
from tui_trainer.train.methods import SavedFile, method_module
from tui_trainer.train.monitor import RunMonitor, StepTimer
from tui_trainer.train.optim import OptimizerUnavailable, build_lr_scheduler, build_optimizer
from tui_trainer.train.saving import kohya_metadata

SMOOTHING = 0.9
"""Weight of the history in the smoothed (exponential moving average, bias-corrected) loss."""

MIXED_PRECISION: dict[TrainDtype, MixedPrecision] = {
    TrainDtype.FLOAT32: MixedPrecision.NO,
    TrainDtype.TF32: MixedPrecision.NO,
    TrainDtype.FLOAT16: MixedPrecision.FP16,
    TrainDtype.BFLOAT16: MixedPrecision.BF16,
}

ATTENTION: dict[AttentionBackend, Any] = {
    AttentionBackend.SDPA: lambda unet: None,
    AttentionBackend.XFORMERS: lambda unet: unet.enable_xformers_memory_efficient_attention(),
    AttentionBackend.EAGER: lambda unet: unet.set_default_attn_processor(),
}
"""How each attention backend is switched on (diffusers uses SDPA by default)."""


class TrainError(Exception):
    """A run cannot go on; `hint` says what to do."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


def config_hash(config: TrainConfig) -> str:
    """sha256 of the canonical TOML of a config (formatting and comments do not change it)."""
    return hashlib.sha256(dump_config(config).encode()).hexdigest()


def _plain(value: Any) -> Any:
    """Dataclasses and tuples -> JSON-ready dicts and lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def oom_hint(config: TrainConfig) -> str:
    """What to change after a CUDA out-of-memory error: the VRAM estimator's suggestions, biggest saving first."""
    from tui_trainer.estimate import estimate

    suggestions = sorted(estimate(config).suggestions, key=lambda s: -s.saves_bytes)
    if not suggestions:
        return "lower training.batch_size or training.resolution"
    return "; ".join(f"{s.change} (saves {s.saves_bytes / 2**30:.1f} GiB)" for s in suggestions[:4])


class TrainRecipe:
    """One training run of any method on any family."""

    def __init__(self, config: TrainConfig, config_path: str | Path | None, run: RunDir, monitor: RunMonitor):
        self.config = config
        self.config_path = config_path
        self.run = run
        self.monitor = monitor
        self.method = method_module(config.method)
        self.global_step = 0
        self.epoch = 0
        self.bad_paths: set[str] = set()
        self.active: dict[str, bool] = {}
        self.latent_cache: LatentCache | None = None
        self.text_cache: TextCache | None = None
        self.started_at = time.time()
        self.cache_dir = cache_dir_of(config, config_path)

    def setup(self) -> None:
        """Everything before the first step: accelerator, data report, model + method, caches, optimizer."""
        from accelerate.utils import set_seed

        problems = self.method.check(self.config)
        if problems:
            raise TrainError("; ".join(problems), "fix the config and start again")
        self.accelerator = self._setup_accelerator()
        self.device = self.accelerator.device
        self.report = self._setup_data()
        set_seed(self.config.training.seed)
        self.noise_rng = torch.Generator(device=self.device).manual_seed(self.config.training.seed)
        self._setup_model()
        self._emit_start()
        self._setup_caches()
        self._setup_optimizer()

    def _setup_accelerator(self) -> Any:
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        training = self.config.training
        mixed = self.config.distributed.mixed_precision or MIXED_PRECISION[self.config.model.train_dtype]
        if mixed is MixedPrecision.FP16 and not torch.cuda.is_available():
            self.monitor.warning("float16 mixed precision needs a CUDA GPU; using bfloat16 on the CPU")
            mixed = MixedPrecision.BF16
        if self.config.model.train_dtype is TrainDtype.TF32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        project = ProjectConfiguration(project_dir=str(self.run.path), logging_dir=str(self.run.tensorboard_dir))
        accelerator = Accelerator(
            mixed_precision=mixed.value, cpu=not torch.cuda.is_available(),
            log_with="tensorboard" if training.tensorboard else None, project_config=project,
        )
        if training.tensorboard:
            accelerator.init_trackers("scalars")
            self.monitor.tracker = accelerator.log
        return accelerator

    def _setup_data(self) -> Any:
        report = build_report(self.config, self.config_path)
        for skipped in report.skipped:
            self.monitor.warning(f"skipped {_describe(skipped)}", path=str(getattr(skipped, "path", skipped)))
        for warning in report.warnings:
            self.monitor.warning(str(warning))
        if report.errors:
            raise TrainError("; ".join(str(error) for error in report.errors), "run `tui-trainer buckets CONFIG` to see the dataset report")
        if not report.items or not report.total_steps:
            raise TrainError("the dataset has no usable images", "add images to an enabled concept (see `tui-trainer buckets CONFIG`)")
        return report

    def _setup_model(self) -> None:
        self.monitor.status(RunState.LOADING, step=0)
        self.monitor.line(f"loading {self.config.model.base_model}")
        self.model = load_model(self.config, self.config_path)
        self.conditioning = conditioning_for(self.config.model.family)
        self.parts = self.method.prepare(self.model, self.config)
        training = self.config.training
        ATTENTION[training.attention](self.model.unet)
        if training.gradient_checkpointing:
            self.model.unet.enable_gradient_checkpointing()
            for part in self.parts:
                if part.name in TEXT_ENCODER_PARTS:
                    part.module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        trained = {part.name for part in self.parts}
        for name in ("unet", *self.model.text_encoders):
            if name not in trained:
                self.model.part(name).to(self.device)
        self.model.vae.to(self.device)
        self.input_dtype = input_dtype(self.config.model.unet_dtype, compute_dtype(self.config))

    def _emit_start(self) -> None:
        report, training = self.report, self.config.training
        self.monitor.emit(
            "start",
            f"run {self.run.name}: {report.total_images} images, {report.steps_per_epoch} steps/epoch, "
            f"{report.total_steps} steps on {self.device}",
            config_hash=config_hash(self.config), run=self.run.name, method=self.config.method.value,
            family=self.config.model.family.value, base_model=self.config.model.base_model, seed=training.seed,
            device=str(self.device), mixed_precision=self.accelerator.mixed_precision,
            num_processes=self.accelerator.num_processes, epochs=training.epochs, total_images=report.total_images,
            batches_per_epoch=report.batches_per_epoch, steps_per_epoch=report.steps_per_epoch,
            total_steps=report.total_steps, buckets=_plain(report.buckets),
            trainable_params={part.name: part.num_params for part in self.parts},
        )

    def _setup_caches(self) -> None:
        training, concepts = self.config.training, self.config.concepts
        if training.cache_latents:
            self.monitor.status(RunState.CACHING, step=0)
            vae = self.model.vae
            if any(concept.crop_jitter for concept in concepts):
                self.monitor.warning("crop_jitter with cache_latents: each image keeps one random crop for the whole run")
            cache = LatentCache(self.cache_dir, module_identity(vae))
            self.bad_paths |= fill_latent_cache(
                cache, latent_variants(self.report.items, concepts, training.seed), lambda pixels: encode_latents(vae, pixels),
                training.batch_size, lambda done, total, hits: self.monitor.cache_progress("latents", done, total, hits),
                self._skip,
            )
            self.latent_cache = cache
            vae.to("cpu")
        trains_text = any(part.name in TEXT_ENCODER_PARTS for part in self.parts)
        if training.cache_text_encoder_outputs and not trains_text:
            encoders = "".join(module_identity(module) for module in self.model.text_encoders.values())
            self.text_cache = TextCache(self.cache_dir, encoders, self._encode_text_frozen)
            self._precache_text()

    def _precache_text(self) -> None:
        """Encode every caption up front when captions have no randomness, then move the text encoders off the GPU."""
        concepts = self.config.concepts
        if any(c.shuffle_tags or c.tag_dropout or c.caption_dropout for c in concepts):
            return
        captions = sorted({caption for item in self.report.items for caption in item.caption_choices or (item.caption,)})
        step = max(1, self.config.training.batch_size)
        for start in range(0, len(captions), step):
            self.text_cache.get(captions[start : start + step])
            done = min(start + step, len(captions))
            self.monitor.cache_progress("text", done, len(captions), 0)
        for module in self.model.text_encoders.values():
            module.to("cpu")
        self.text_cache.encode = None

    def _setup_optimizer(self) -> None:
        groups = [{"params": part.params, "lr": part.learning_rate, "name": part.name} for part in self.parts]
        optimizer = build_optimizer(self.config, groups)
        self.lr_scheduler = build_lr_scheduler(self.config, optimizer, self.report.total_steps)
        prepared = self.accelerator.prepare(*[part.module for part in self.parts], optimizer)
        *modules, self.optimizer = prepared
        for part, module in zip(self.parts, modules, strict=True):
            part.module = module
            if part.name == "unet":
                self.model.unet = module
            else:
                self.model.text_encoders[part.name] = module

    def _skip(self, path: str, reason: str) -> None:
        if path not in self.bad_paths:
            self.bad_paths.add(path)
            self.monitor.warning(f"skipped unreadable image {path}: {reason}", path=path)

    def _encode_text_frozen(self, captions: list[str]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return self.conditioning(self.model, captions, self.device)

    def _text(self, captions: list[str], trains_text: bool) -> dict[str, torch.Tensor]:
        if self.text_cache is not None:
            return {name: value.to(self.device) for name, value in self.text_cache.get(captions).items()}
        with contextlib.nullcontext() if trains_text else torch.no_grad():
            return self.conditioning(self.model, captions, self.device)

    def _batches(self, epoch: int) -> list[list[Any]]:
        training = self.config.training
        plan = plan_epoch(self.report, epoch, training.seed, self.report.effective_batch, self.report.remainder)
        return [[item for item in batch if str(item.path) not in self.bad_paths] for batch in plan]

    def _loader(self, dataset: EpochBatches) -> Any:
        workers = self.config.training.dataloader_workers
        if self.latent_cache is not None or workers == 0 or len(dataset) < 2:
            return dataset
        return torch.utils.data.DataLoader(
            dataset, batch_size=None, shuffle=False, num_workers=min(workers, len(dataset)),
            pin_memory=self.device.type == "cuda",
        )

    def _activate_parts(self, epoch: int) -> bool:
        """Switch each part's training on or off for this step (only on a change: train() walks every module);
        True when a text encoder trains."""
        trains_text = False
        for part in self.parts:
            active = part.config.trains_at(self.global_step, epoch)
            if self.active.get(part.name) != active:
                for param in part.params:
                    param.requires_grad_(active)
                part.module.train(active)
                self.active[part.name] = active
            trains_text |= active and part.name in TEXT_ENCODER_PARTS
        return trains_text

    def _micro_step(self, batch: dict[str, Any], scale: float, sync: bool, trains_text: bool) -> torch.Tensor:
        latents = batch["latents"].to(self.device) if batch.get("latents") is not None else encode_latents(self.model.vae, batch["pixels"])
        with contextlib.ExitStack() as stack:
            if not sync:
                for part in self.parts:
                    stack.enter_context(self.accelerator.no_sync(part.module))
            conditioning = self._text(batch["captions"], trains_text)
            loss = denoise_loss(self.model, latents, conditioning, self.config.training, self.noise_rng, self.input_dtype, self.accelerator.autocast)
            self.accelerator.backward(loss * scale)
        return loss.detach()

    def _optimizer_step(self) -> None:
        clip = self.config.training.clip_grad_norm
        if clip is not None and self.accelerator.sync_gradients:
            params = [param for part in self.parts for param in part.params if param.grad is not None]
            self.accelerator.clip_grad_norm_(params, clip)
        self.optimizer.step()
        if not self.accelerator.optimizer_step_was_skipped:
            self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def train(self) -> str:
        """Run the epochs; returns why training ended."""
        training, total = self.config.training, self.report.total_steps
        self.monitor.status(RunState.TRAINING, step=self.global_step, total_steps=total)
        self.optimizer.train()
        timer, smoothed, weight = StepTimer(), 0.0, 0.0
        timer.tick()
        for epoch in range(self.epoch, training.epochs):
            self.epoch = epoch
            batches = self._batches(epoch)
            dataset = EpochBatches(batches, epoch, training.seed, self.config.concepts, self.latent_cache)
            accumulation = training.gradient_accumulation
            losses: list[torch.Tensor] = []
            trains_text = self._activate_parts(epoch)
            for batch in self._loader(dataset):
                index = batch["index"]
                for path, reason in batch["skipped"]:
                    self._skip(path, reason)
                window_start = index - index % accumulation
                window = min(accumulation, len(batches) - window_start)
                sync = index == window_start + window - 1
                if batch["captions"]:
                    losses.append(self._micro_step(batch, 1.0 / window, sync, trains_text))
                if not sync or not losses:
                    continue
                self._optimizer_step()
                self.global_step += 1
                timer.tick()
                loss = float(torch.stack(losses).mean())
                losses = []
                weight = SMOOTHING * weight + (1 - SMOOTHING)
                smoothed = SMOOTHING * smoothed + (1 - SMOOTHING) * loss
                self._emit_step(epoch, loss, smoothed / weight, timer, total)
                if self.global_step >= total:
                    return "completed"
                trains_text = self._activate_parts(epoch)
        return "completed"

    def _emit_step(self, epoch: int, loss: float, smoothed: float, timer: StepTimer, total: int) -> None:
        per_step = timer.seconds_per_step
        event = {
            "step": self.global_step, "total_steps": total, "epoch": epoch + 1, "epochs": self.config.training.epochs,
            "loss": loss, "smoothed_loss": smoothed,
            "lr": {group["name"]: group["lr"] for group in self.optimizer.param_groups},
            "it_per_s": 1 / per_step if per_step else None, "s_per_step": per_step,
            "eta_s": per_step * (total - self.global_step) if per_step else None,
        }
        if self.device.type == "cuda":
            event["vram_bytes"] = torch.cuda.memory_reserved(self.device)
        self.monitor.step(event)

    def save(self) -> list[SavedFile]:
        """Write the trained model in the configured format; one `save` event per file."""
        self.monitor.status(RunState.SAVING, step=self.global_step)
        self.optimizer.eval()
        config = self.config
        folder = resolve_path(self.config_path, config.workspace.output_path) if config.workspace.output_path else self.run.output_dir
        stem = config.save.filename_prefix or config.workspace.run_name
        metadata = kohya_metadata(
            config, self.run.config_file.read_text(encoding="utf-8"),
            num_train_images=self.report.total_images, steps=self.global_step, epoch=self.epoch + 1,
            training_started_at=round(self.started_at), training_finished_at=round(time.time()),
        )
        saved = []
        if self.accelerator.is_main_process:
            saved = self.method.save(self.model, self.parts, config, folder, stem, metadata, self.accelerator.unwrap_model)
        for item in saved:
            self.monitor.emit("save", f"saved {item.format} {item.path}", path=str(item.path), format=item.format, step=self.global_step)
        return saved

    def cleanup(self) -> None:
        """End trackers (flushes TensorBoard) and forget accelerate's process-wide state."""
        from accelerate.state import AcceleratorState, GradientState

        accelerator = getattr(self, "accelerator", None)
        if accelerator is not None:
            accelerator.end_training()
        # accelerate keeps one state per process and refuses another mixed precision later; a process that
        # trains more than once (tests, benchmarks, in-process resume) starts each run fresh.
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def _describe(skipped: Any) -> str:
    path, reason = getattr(skipped, "path", None), getattr(skipped, "reason", None)
    return f"{path}: {reason}" if path is not None and reason else str(skipped)


def train_config(config: TrainConfig, config_path: str | Path | None, config_text: str, *, console: TextIO | None = None) -> tuple[int, RunDir]:
    """Train `config` in a new run directory; returns (exit code, run dir). Errors become `error` events.

    Progress lines go to train.log, and also to `console` when given.
    """
    workspace = resolve_path(config_path, config.workspace.dir)
    run = create_run_dir(workspace, config.workspace.run_name, config_text)
    monitor = RunMonitor(run, console=console)
    monitor.status(RunState.STARTING, step=0)
    recipe = TrainRecipe(config, config_path, run, monitor)
    code, state, reason = 1, RunState.FAILED, "error"
    try:
        recipe.setup()
        reason = recipe.train()
        recipe.save()
        code, state = 0, RunState.FINISHED
    except (TrainError, ModelLoadError, OptimizerUnavailable) as error:
        monitor.error(str(error), getattr(error, "hint", ""))
    except torch.OutOfMemoryError as error:
        monitor.error(f"CUDA out of memory: {error}".splitlines()[0], oom_hint(config), step=recipe.global_step)
    except KeyboardInterrupt:
        code, state, reason = 130, RunState.STOPPED, "interrupted"
    except Exception as error:  # every failure must reach events.jsonl, not only stderr
        monitor.line(traceback.format_exc().rstrip())
        monitor.error(f"{type(error).__name__}: {error}", "see train.log for the traceback", step=recipe.global_step)
    finally:
        recipe.cleanup()
        monitor.emit("end", f"end: {reason} at step {recipe.global_step}", reason=reason, step=recipe.global_step)
        monitor.status(state, step=recipe.global_step)
        monitor.close()
    return code, run


def train_file(config_path: str | Path, *, console: TextIO | None = None) -> tuple[int, RunDir]:
    """Load, check and train a config file (ConfigError when it is invalid; no run dir is made then)."""
    config = load_config(config_path)
    problems = check_paths(config, config_path)
    if problems:
        raise ConfigError(problems)
    config = with_absolute_paths(config, config_path)
    return train_config(config, config_path, dump_config(config), console=console)
