"""`tui-trainer train CONFIG`: the training recipe (setup -> train -> save) writing the run directory.

Shape of a torchtune recipe: setup() calls _setup_model / _setup_data / _setup_caches / _setup_optimizer,
train() runs the epochs, save() writes the model. The method module (train/methods/) decides what trains
and how it is saved; the family module (train/families/) decides how captions condition the denoiser,
what it learns to predict, and how pixels become latents.
Randomness lives in explicit places only: the seeded torch generator `noise_rng` (noise, timesteps),
the per-item RNGs of the data pipeline (derived from seed, epoch, batch index) and the global torch RNG
(adapter init, dropout), seeded once at setup.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import math
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import torch

from tui_trainer.atomic import atomic_write_text
from tui_trainer.config import TrainConfig, dump_config, parse_config, resolve_path, with_absolute_paths
from tui_trainer.models.families import config_frees_text_encoders
from tui_trainer.models.problems import load_checked_config
from tui_trainer.data import build_report, plan_epoch, read_captions
from tui_trainer.data.report import cache_dir_of
from tui_trainer.config.enums import AttentionBackend, MixedPrecision, TrainDtype, WeightDtype
from tui_trainer.runs.commands import Command, consume_command, pending_commands
from tui_trainer.runs.events import BackupEvent, EndEvent, ResumeEvent, SampleEvent, SaveEvent, StartEvent, StepEvent
from tui_trainer.runs.layout import RunDir, create_run_dir
from tui_trainer.runs.status import RunState
from tui_trainer.train.backup import Backup, backup_name, check_backup, list_backups, newest_backup, prune_backups, rng_state, set_rng_state, write_backup
from tui_trainer.train.caching import LatentCache, TextCache, fill_latent_cache, latent_variants, module_identity
from tui_trainer.train.control import Control, Moment, stop_signals
from tui_trainer.train.dataset import EpochBatches, TrainingBatch
from tui_trainer.train.distributed import RANK_ENV, Processes, is_main_process, process_group_kwargs
from tui_trainer.train.errors import ModelLoadError, TrainError
from tui_trainer.train.ema import averaged, build_ema
from tui_trainer.train.families import train_family
from tui_trainer.train.loading import compute_dtype, input_dtype, load_model
from tui_trainer.train.loop import image_conditions, placed_encoder
from tui_trainer.train.masks import loss_weights
from tui_trainer.train.methods import SavedFile, backup_state, method_hook, method_module, restore_state
from tui_trainer.train.model_parts import TEXT_ENCODER_PARTS, part_configs
from tui_trainer.train.monitor import TENSORBOARD_FLUSH_S, RunMonitor, SilentMonitor, StepTimer, chain_trackers, tensorboard_scalars
from tui_trainer.train.notify import notifier_for
from tui_trainer.train.offload import offload_transformer
from tui_trainer.train.optim import OptimizerUnavailable, build_lr_scheduler, build_optimizer
from tui_trainer.train.resume import config_changes, dataset_fingerprint, plan_paths
from tui_trainer.train.sampling import encode_sample_prompts, make_samples, sampling_problem
from tui_trainer.train.saving import kohya_metadata
from tui_trainer.train.validation import ValidationBatch, build_validation_set, evaluating, measure, validation_due
from tui_trainer.train.wandb_logger import WandbLogger

SMOOTHING = 0.9
"""Weight of the history in the smoothed (exponential moving average, bias-corrected) loss."""

NAN_HINT = (
    "lower optimizer.learning_rate, keep training.clip_grad_norm on, or train in bfloat16/float32 rather than float16; "
    "then resume from the last good backup with `tui-trainer resume RUN_DIR`"
)

END_STATES: dict[str, RunState] = {"completed": RunState.FINISHED, "stopped": RunState.STOPPED}
"""Final status of a run that ended without an error, by its end reason."""

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

    def __init__(self, config: TrainConfig, config_path: str | Path | None, run: RunDir, monitor: RunMonitor, *, resume: bool = False):
        self.config = config
        self.config_path = config_path
        self.run = run
        self.monitor = monitor
        self.method = method_module(config.method)
        self.captions, self.unet_inputs, self.mask_source = (method_hook(self.method, name) for name in ("captions", "unet_inputs", "mask_source"))
        self.global_step = 0
        self.epoch = 0
        self.bad_paths: set[str] = set()
        self.warned_sampling: set[str] = set()
        self.active: dict[str, bool] = {}
        self.latent_cache: LatentCache | None = None
        self.text_cache: TextCache | None = None
        self.sample_texts: list[dict[str, Any]] | None = None
        """The samples' prompt arguments, encoded before the text encoders were freed (None: the pipeline encodes)."""
        self.ema: Any = None
        self.started_at = time.time()
        self.cache_dir = cache_dir_of(config, config_path)
        self.resume = resume
        self.batch_index = 0
        self.smoothing = [0.0, 0.0]
        self.control: Control | None = None
        self.processes: Processes | None = None
        self.shares: list[float] = []
        """This process's share of each batch of the epoch (its images x processes / the batch's images)."""
        self.end_fields: dict[str, Any] = {}
        self.validation: list[ValidationBatch] = []
        """The held-out batches of the validation loss (empty = no validation)."""
        self.wandb: WandbLogger | None = None
        self.validated_at: int | None = None
        """The step of the last validation loss."""

    def setup(self) -> None:
        """Everything before the first step: accelerator, data report, model + method, caches, optimizer."""
        from accelerate.utils import set_seed

        problems = self.method.check(self.config)
        if problems:
            raise TrainError("; ".join(problems), "fix the config and start again")
        self.accelerator = self._setup_accelerator()
        self.device = self.accelerator.device
        self.processes = Processes(self.accelerator.process_index, self.accelerator.num_processes, self.config.distributed.timeout_minutes)
        self.report = self._setup_data()
        resumed = self._setup_resume() if self.resume else None
        set_seed(self.config.training.seed)
        self.noise_rng = torch.Generator(device=self.device).manual_seed(self.config.training.seed)
        self.processes.enter("model loading")
        self._setup_model()
        self._emit_start()
        self._setup_validation()
        self._setup_caches()
        self.processes.enter("model set-up (DDP)")
        self._setup_optimizer()
        accelerator = self.accelerator
        self.control = Control(self.config, self.run, is_main=accelerator.is_main_process, num_processes=accelerator.num_processes, device=self.device)
        if resumed is not None:
            self.load_checkpoint(*resumed)

    def _setup_accelerator(self) -> Any:
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        training = self.config.training
        mixed = self.config.distributed.mixed_precision or MIXED_PRECISION[self.config.model.train_dtype]
        if mixed is MixedPrecision.FP16 and not torch.cuda.is_available():
            self.monitor.warning("float16 mixed precision needs a CUDA GPU; using bfloat16 on the CPU")
            mixed = MixedPrecision.BF16
        model = self.config.model
        weights = [part.dtype for part in part_configs(self.config).values()] + [model.vae_dtype]
        if not torch.cuda.is_available() and WeightDtype.FLOAT16 in weights:
            self.monitor.warning("float16 weights need a CUDA GPU; they are stored as bfloat16 on the CPU")
        if self.config.model.train_dtype is TrainDtype.TF32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        project = ProjectConfiguration(project_dir=str(self.run.path), logging_dir=str(self.run.tensorboard_dir))
        accelerator = Accelerator(
            mixed_precision=mixed.value, cpu=not torch.cuda.is_available(),
            log_with="tensorboard" if training.tensorboard else None, project_config=project,
            kwargs_handlers=[process_group_kwargs(self.config.distributed.timeout_minutes)],
        )
        if training.tensorboard:
            accelerator.init_trackers("scalars", init_kwargs={"tensorboard": {"flush_secs": TENSORBOARD_FLUSH_S}})
            if accelerator.is_main_process:
                self.monitor.tracker = tensorboard_scalars(accelerator.get_tracker("tensorboard", unwrap=True))
        if self.config.wandb.enabled and accelerator.is_main_process:
            self.wandb = WandbLogger(self.config, self.run, self.monitor.warning)
            self.monitor.tracker = chain_trackers(self.monitor.tracker, self.wandb.log)
            self.monitor.listeners.append(self.wandb)
        return accelerator

    def _setup_data(self) -> Any:
        """The dataset report and the training items' captions (read here, once); their problems as warnings."""
        report = build_report(self.config, self.config_path)
        for skipped in report.skipped:
            self.monitor.warning(f"skipped {_describe(skipped)}", path=str(getattr(skipped, "path", skipped)))
        for warning in report.warnings:
            self.monitor.warning(str(warning))
        if report.errors:
            raise TrainError("; ".join(str(error) for error in report.errors), "run `tui-trainer buckets CONFIG` to see the dataset report")
        if not report.items or not report.total_steps:
            raise TrainError("the dataset has no usable images", "add images to an enabled concept (see `tui-trainer buckets CONFIG`)")
        self.item_captions = read_captions(report.items, self.config.concepts)
        for warning in self.item_captions.warnings:
            self.monitor.warning(warning.message, paths=warning.paths)
        return report

    def _setup_model(self) -> None:
        self.monitor.status(RunState.LOADING, step=0)
        self.monitor.line(f"loading {self.config.model.base_model}")
        self.model = load_model(self.config, self.config_path)
        self.steps = train_family(self.config.model.family)
        self.conditioning = self.steps.conditioning
        self.parts = self.method.prepare(self.model, self.config)
        training = self.config.training
        ATTENTION[training.attention](self.model.unet)
        if training.gradient_checkpointing:
            self.model.unet.enable_gradient_checkpointing()
            for part in self.parts:
                if part.name in TEXT_ENCODER_PARTS:
                    part.module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.offload = offload_transformer(self.model.unet, self.config, self.device, self.monitor.warning)
        trained = {part.name for part in self.parts}
        for name in ("unet", *self.model.text_encoders):
            if name not in trained:
                self.model.part(name).to(self.device)
        self.model.vae.to(self.device)
        # pixels -> latents; the VAE's device and dtype are looked up here, once, not at every step
        self.encode = placed_encoder(self.steps.encode, self.model.vae)
        self.input_dtype = input_dtype(self.config.parts.denoiser.dtype, compute_dtype(self.config))

    def _emit_start(self) -> None:
        report, training = self.report, self.config.training
        self.monitor.emit(StartEvent(
            config_hash=config_hash(self.config), run=self.run.name, method=self.config.method.value,
            family=self.config.model.family.value, base_model=self.config.model.base_model, seed=training.seed,
            device=str(self.device), mixed_precision=self.accelerator.mixed_precision,
            num_processes=self.accelerator.num_processes, epochs=training.epochs, total_images=report.total_images,
            batches_per_epoch=report.batches_per_epoch, steps_per_epoch=report.steps_per_epoch,
            total_steps=report.total_steps, effective_batch=report.effective_batch, buckets=_plain(report.buckets),
            trainable_params={part.name: part.num_params for part in self.parts},
        ), f"run {self.run.name}: {report.total_images} images, {report.steps_per_epoch} steps/epoch, "
           f"{report.total_steps} steps on {self.device}")

    def _setup_validation(self) -> None:
        """The held-out batches, encoded once while the VAE is on the device (validation.every > 0)."""
        if not self.config.validation.every:
            return
        if not self.report.validation_items:
            self.monitor.warning("validation.every is set but no enabled concept has type = \"validation\"; no validation loss")
            return
        self.validation = build_validation_set(
            self.config, self.report.validation_items, self.encode, self.monitor.warning,
            self.mask_source(self.config),
        )

    def validate(self) -> None:
        """The validation loss of this step (every process computes it; the main one reports it)."""
        if not self.validation:
            return
        self.validated_at = self.global_step
        modules = [self.model.unet, *self.model.text_encoders.values()]
        with evaluating(modules):
            event = measure(self.validation, self.config, self.device, self.global_step, self.epoch + 1, self._validation_loss)
        self.monitor.validation(event)

    def _validation_loss(self, batch: TrainingBatch, latents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        conditioning = self._text(self.captions(self.config, batch.captions), False)
        conditioning |= image_conditions(self.model.family, batch, self.device)
        return self.steps.loss(
            self.model, latents, conditioning, self.config.training, generator, self.input_dtype, self.accelerator.autocast,
            self.unet_inputs(self.model, batch, latents), None,
        )

    def _setup_caches(self) -> None:
        """Text outputs first (the text encoders then leave the GPU), then latents, so the two never share it."""
        training = self.config.training
        trains_text = any(part.name in TEXT_ENCODER_PARTS for part in self.parts)
        if training.cache_text_encoder_outputs and not trains_text:
            self.monitor.status(RunState.CACHING, step=0)
            encoders = "".join(module_identity(module) for module in self.model.text_encoders.values())
            length = getattr(self.model.noise_scheduler, "max_sequence_length", None)
            encoders += f"|{length} tokens" if length else ""  # flow families pad captions to it: another length, another entry
            self.text_cache = TextCache(self.cache_dir, encoders, self._encode_text_frozen)
            self.processes.enter("text caching")
            self._precache_text()
        if training.cache_latents:
            self._cache_latents()

    def _cache_latents(self) -> None:
        training, concepts = self.config.training, self.config.concepts
        processes = self.processes
        processes.enter("latent caching")
        self.monitor.status(RunState.CACHING, step=0)
        vae = self.model.vae
        if any(concept.crop_jitter for concept in concepts):
            self.monitor.warning("crop_jitter with cache_latents: each image keeps one random crop for the whole run")
        cache = LatentCache(self.cache_dir, module_identity(vae))
        variants = latent_variants(self.report.items, concepts, training.seed)
        if processes.several:
            self.monitor.line(f"caching latents: {len(variants)} split over {processes.count} processes (progress of this one)")
        # Each process encodes its own share into the shared cache folder, then all read every latent from it.
        bad = fill_latent_cache(
            cache, variants[processes.rank :: processes.count], self.encode,
            training.batch_size, lambda done, total, hits: self.monitor.cache_progress("latents", done, total, hits),
            self._skip,
        )
        processes.barrier()
        self.bad_paths |= processes.union(bad)
        self.latent_cache = cache
        vae.to("cpu")
        self.encode = placed_encoder(self.steps.encode, vae)

    def _precache_text(self) -> None:
        """Encode every caption up front when captions have no randomness, then free the text encoders where the family
        can (models.families.frees_text_encoders) or move them off the GPU."""
        concepts = self.config.concepts
        if any(c.shuffle_tags or c.tag_dropout or c.caption_dropout for c in concepts):
            return
        captions = sorted({caption for item in self.report.items for caption in self.item_captions.of(item)}
                          | {caption for held_out in self.validation for caption in held_out.batch.captions})
        step = max(1, self.config.training.batch_size)
        for start in range(0, len(captions), step):
            self.text_cache.get(captions[start : start + step])
            done = min(start + step, len(captions))
            self.monitor.cache_progress("text", done, len(captions), 0)
        self.text_cache.encode = None
        if config_frees_text_encoders(self.config) and self._encode_sample_prompts():
            self.model.free_text_encoders()
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.monitor.line("text encoders freed: the captions' and the samples' text outputs are cached")
            return
        for module in self.model.text_encoders.values():
            module.to("cpu")

    def _encode_sample_prompts(self) -> bool:
        """The samples' prompt arguments made now, while the text encoders are loaded; False (keep them) if that fails."""
        if not self.config.samples or sampling_problem(self.config):
            return True
        try:
            self.sample_texts = encode_sample_prompts(
                self.model, self.config, self.device, self.accelerator.autocast, lambda texts: self.captions(self.config, texts),
            )
        except Exception as error:  # samples are a convenience: keep the encoders for them rather than end the run
            self.monitor.line(traceback.format_exc().rstrip())
            self.monitor.warning(f"the samples' prompts could not be encoded ahead ({type(error).__name__}: {error}); "
                                 "the text encoders stay in RAM for the samples")
            return False
        return True

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
        self.ema = build_ema(self.config, [param for part in self.parts for param in part.params])

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

    def _plan(self, epoch: int) -> list[list[Any]]:
        """Every process's batches of one epoch, in plan order."""
        return plan_epoch(self.report, epoch, self.config.training.seed, self.report.effective_batch, self.report.remainder)

    def _batches(self, epoch: int) -> list[list[Any]]:
        """This process's slice of each batch of the epoch, without images found unreadable, and its share of each
        (self.shares). Every process takes part in every batch that has images, as DDP's all-reduce needs: one
        whose slice is empty takes one of the batch's images with share 0 (it adds no gradient)."""
        processes = self.processes
        self.bad_paths = processes.union(self.bad_paths)
        slices, self.shares = [], []
        for batch in self._plan(epoch):
            usable = [item for item in batch if str(item.path) not in self.bad_paths]
            mine = usable[processes.rank :: processes.count]
            self.shares.append(len(mine) * processes.count / len(usable) if usable else 0.0)
            slices.append(mine or usable[processes.rank % len(usable) :][:1])
        return slices

    def _loader(self, dataset: EpochBatches, start: int = 0) -> Any:
        """The epoch's batches from index `start` on (a resumed run starts inside an epoch)."""
        workers = self.config.training.dataloader_workers
        indices = range(start, len(dataset))
        if self.latent_cache is not None or workers == 0 or len(indices) < 2:
            return (dataset[index] for index in indices)
        # A DataLoader without its own generator draws its worker seed from the global torch RNG, which a
        # resumed run would then replay differently.
        return torch.utils.data.DataLoader(
            dataset, batch_size=None, sampler=indices, num_workers=min(workers, len(indices)),
            pin_memory=self.device.type == "cuda", generator=torch.Generator(),
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

    def _micro_step(self, batch: TrainingBatch, scale: float, sync: bool, trains_text: bool) -> torch.Tensor:
        latents = batch.latents.to(self.device) if batch.latents is not None else self.encode(batch.pixels)
        with contextlib.ExitStack() as stack:
            if not sync:
                for part in self.parts:
                    stack.enter_context(self.accelerator.no_sync(part.module))
            conditioning = self._text(self.captions(self.config, batch.captions), trains_text)
            conditioning |= image_conditions(self.model.family, batch, self.device)
            loss = self.steps.loss(
                self.model, latents, conditioning, self.config.training, self.noise_rng, self.input_dtype, self.accelerator.autocast,
                self.unet_inputs(self.model, batch, latents), self._loss_weights(batch, latents),
            )
            self.accelerator.backward(loss * scale)
        return loss.detach()

    def _loss_weights(self, batch: TrainingBatch, latents: torch.Tensor) -> torch.Tensor | None:
        """Masked training's element weights, or None."""
        training = self.config.training
        if not training.masked_training or batch.masks is None:
            return None
        return loss_weights(batch.masks.to(self.device), tuple(latents.shape[-2:]), training, self.noise_rng)

    def _optimizer_step(self) -> None:
        clip = self.config.training.clip_grad_norm
        if clip is not None and self.accelerator.sync_gradients:
            params = [param for part in self.parts for param in part.params if param.grad is not None]
            self.accelerator.clip_grad_norm_(params, clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.step()
        if not self.accelerator.optimizer_step_was_skipped:
            self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def train(self) -> str:
        """Run the epochs from the current position (a resume's backup, else the start); returns why training ended."""
        training, total = self.config.training, self.report.total_steps
        self.monitor.status(RunState.TRAINING, step=self.global_step, total_steps=total)
        self.optimizer.train()
        timer = StepTimer()
        timer.tick()
        if self.global_step == 0 and self.config.sampling.before_training and self.config.samples:
            self.sample()
        if self.global_step == 0 and self.config.validation.before_training:
            self.validate()
        if self.global_step >= total:
            return "completed"
        self.processes.enter(f"the step after step {self.global_step}")
        for epoch in range(self.epoch, training.epochs):
            self.epoch = epoch
            batches = self._batches(epoch)
            dataset = EpochBatches(
                batches, epoch, training.seed, self.config.concepts, self.item_captions, self.latent_cache, self.mask_source(self.config)
            )
            accumulation = training.gradient_accumulation
            losses: list[torch.Tensor] = []
            trains_text = self._activate_parts(epoch)
            for batch in self._loader(dataset, self.batch_index):
                index = batch.index
                for path, reason in batch.skipped:
                    self._skip(path, reason)
                window_start = index - index % accumulation
                window = min(accumulation, len(batches) - window_start)
                sync = index == window_start + window - 1
                if batch.captions:
                    losses.append(self._micro_step(batch, self.shares[index] / window, sync, trains_text))
                elif self.processes.several and batch.skipped:
                    raise TrainError(
                        f"every image of process {self.processes.rank}'s part of batch {index} became unreadable "
                        f"({', '.join(path for path, _ in batch.skipped)}); the other processes cannot go on without it",
                        f"fix or remove those images, then `tui-trainer resume {self.run.path}`",
                    )
                if not sync or not losses:
                    continue
                self._optimizer_step()
                self.global_step += 1
                self.processes.enter(f"the step after step {self.global_step}")
                self.batch_index = index + 1
                timer.tick()
                loss = float(torch.stack(losses).mean())
                losses = []
                self._emit_step(epoch, loss, self._smooth(loss), timer, total)
                stop = self._after_step(loss, epoch_ended=self.batch_index == len(batches))
                if stop or self.global_step >= total:
                    if self.config.validation.every and self.validated_at != self.global_step:
                        self.validate()  # the curve ends where training does
                    return stop or "completed"
                trains_text = self._activate_parts(epoch)
            self.batch_index = 0
        return "completed"

    def _smooth(self, loss: float) -> float:
        """The bias-corrected moving average of the loss, this step's loss included."""
        smoothed, weight = self.smoothing
        self.smoothing = [SMOOTHING * smoothed + (1 - SMOOTHING) * loss, SMOOTHING * weight + (1 - SMOOTHING)]
        return self.smoothing[0] / self.smoothing[1]

    def _after_step(self, loss: float, epoch_ended: bool) -> str | None:
        """Act on command files, cadences, signals and a non-finite loss, like every other process; returns
        "stopped" when training ends here."""
        decision = self.control.decide(Moment(self.global_step, self.epoch + 1, epoch_ended), math.isfinite(loss))
        if decision.bad_loss:
            raise TrainError(f"the loss is {loss} at step {self.global_step}; stopped without a backup of the bad weights", NAN_HINT)
        for command in decision.actions:
            if command is Command.STOP:
                self.end_fields = {"signal": self.control.signal} if self.control.signal else {"command": command.value}
                self.control.done(command)
                return "stopped"
            failure = None
            self.processes.enter(f"{command.value} at step {self.global_step}")
            try:
                STEP_ACTIONS[command](self)
            except TrainError as error:
                failure = error
            if self.control.any([failure is not None])[0]:
                raise failure or TrainError(f"{command.value} failed in the main process", "see the main process's error event")
            self.control.done(command)
        if validation_due(self.config, self.global_step, self.epoch + 1, epoch_ended):
            self.validate()
        return None

    def on_signal(self, signum: int) -> None:
        """SIGTERM / SIGINT: once training runs, stop cleanly after this step; before that, interrupt."""
        if self.control is None:
            raise KeyboardInterrupt
        self.control.request_stop(signum)

    def _emit_step(self, epoch: int, loss: float, smoothed: float, timer: StepTimer, total: int) -> None:
        per_step = timer.seconds_per_step
        self.monitor.step(StepEvent(
            step=self.global_step, total_steps=total, epoch=epoch + 1, epochs=self.config.training.epochs,
            loss=loss, smoothed_loss=smoothed,
            lr={group["name"]: group["lr"] for group in self.optimizer.param_groups},
            it_per_s=1 / per_step if per_step else None, s_per_step=per_step,
            eta_s=per_step * (total - self.global_step) if per_step else None,
            vram_bytes=torch.cuda.memory_reserved(self.device) if self.device.type == "cuda" else None,
        ))

    def save(self, periodic: bool = False) -> list[SavedFile]:
        """Write the trained model in the configured format (periodic: with the step in its name, then train on);
        one `save` event per file."""
        self.monitor.status(RunState.SAVING, step=self.global_step)
        self.optimizer.eval()
        config = self.config
        folder = resolve_path(self.config_path, config.workspace.output_path) if config.workspace.output_path else self.run.output_dir
        stem = config.save.filename_prefix or config.workspace.run_name
        if periodic:
            stem = f"{stem}-step-{self.global_step:06d}"
        metadata = kohya_metadata(
            config, self.run.config_file.read_text(encoding="utf-8"),
            num_train_images=self.report.total_images, steps=self.global_step, epoch=self.epoch + 1,
            training_started_at=round(self.started_at), training_finished_at=round(time.time()),
        )
        saved = []
        if self.accelerator.is_main_process:
            with averaged(self.ema):
                saved = self.method.save(self.model, self.parts, config, folder, stem, metadata, self.accelerator.unwrap_model)
        for item in saved:
            if item.warning:
                self.monitor.warning(item.warning, path=str(item.path))
            self.monitor.emit(SaveEvent(path=str(item.path), format=item.format, step=self.global_step), f"saved {item.format} {item.path}")
        if periodic:
            self.optimizer.train()
            self.monitor.status(RunState.TRAINING, step=self.global_step)
        return saved

    def sample(self) -> None:
        """Write the configured samples of this step (main process) and a `sample` event."""
        problem = sampling_problem(self.config) or ("" if self.config.samples else "the config has no [[samples]]")
        if problem:
            if problem not in self.warned_sampling:
                self.monitor.warning(f"no samples: {problem}")
                self.warned_sampling.add(problem)
            return
        if not self.accelerator.is_main_process:
            return
        self.monitor.status(RunState.SAMPLING, step=self.global_step)
        try:
            with averaged(self.ema) if self.config.sampling.use_ema else contextlib.nullcontext():
                paths = make_samples(
                    self.model, self.config, self.run.samples_dir, self.global_step, self.device,
                    self.accelerator.unwrap_model, self.accelerator.autocast, lambda texts: self.captions(self.config, texts),
                    self.sample_texts,
                )
        except OSError as error:
            raise TrainError(f"writing samples failed: {error}", "free disk space, then resume from the last backup") from error
        except Exception as error:  # a sampling bug or OOM must not end a long run: training goes on without samples
            self.monitor.line(traceback.format_exc().rstrip())
            self.monitor.warning(f"sampling at step {self.global_step} failed: {type(error).__name__}: {error}")
            self.monitor.status(RunState.TRAINING, step=self.global_step)
            return
        self.monitor.emit(SampleEvent(
            step=self.global_step, paths=[str(path) for path in paths], prompts=[sample.prompt for sample in self.config.samples],
        ), f"{len(paths)} samples of step {self.global_step} in {self.run.samples_dir}")
        self.monitor.status(RunState.TRAINING, step=self.global_step)

    def _position(self) -> tuple[int, int, list[list[str]]]:
        """(epoch, batch index) of the next batch, and the batches left in that epoch as image paths."""
        epoch, index = self.epoch, self.batch_index
        plan = self._plan(epoch)
        if index >= len(plan):
            epoch, index, plan = epoch + 1, 0, self._plan(epoch + 1)
        return epoch, index, plan_paths(plan[index:])

    def save_checkpoint(self) -> None:
        """Back up this step (main process; once per step), drop backups beyond backup.rolling_count; a `backup` event."""
        if not self.accelerator.is_main_process or check_backup(self.run.backups_dir / backup_name(self.global_step), hashes=False) is None:
            return
        started = time.perf_counter()
        epoch, index, remaining = self._position()
        state = {
            "step": self.global_step, "epoch": epoch, "batch_index": index, "remaining_batches": remaining,
            "dataset": dataset_fingerprint(self.report.items, self.item_captions), "config_hash": config_hash(self.config),
            "bad_paths": sorted(self.bad_paths), "smoothing": self.smoothing, "started_at": self.started_at,
            "optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None, "rng": rng_state({"noise": self.noise_rng}),
        }
        trainable = backup_state(self.method, self.parts, self.accelerator.unwrap_model)
        try:
            backup = write_backup(self.run.backups_dir, self.global_step, trainable, state, dump_config(self.config))
        except OSError as error:
            previous = list_backups(self.run.backups_dir)
            where = f"the backup of step {previous[-1].step}" if previous else "the start (no backup yet)"
            raise TrainError(
                f"backup of step {self.global_step} failed: {error}",
                f"free disk space, then `tui-trainer resume {self.run.path}` continues from {where}",
            ) from error
        removed = prune_backups(self.run.backups_dir, self.config.backup.rolling_count)
        self.monitor.emit(BackupEvent(
            step=self.global_step, path=str(backup.path),
            bytes=sum(file.stat().st_size for file in backup.path.iterdir()), seconds=round(time.perf_counter() - started, 3),
            removed=[str(path) for path in removed],
        ), f"backup of step {self.global_step}: {backup.path}")

    def _setup_resume(self) -> tuple[Backup, dict[str, torch.Tensor], dict[str, Any], list[str]] | None:
        """The newest complete backup, checked against this config and dataset before the model is loaded."""
        for command in pending_commands(self.run):
            consume_command(self.run, command)
            self.monitor.warning(f"ignored commands/{command.value} left from before the resume")
        backup = newest_backup(self.run.backups_dir, lambda path, why: self.monitor.warning(f"passed over {path}: {why}"))
        if backup is None:
            self.monitor.warning(f"{self.run.backups_dir} holds no complete backup; training starts at step 0")
            return None
        trainable, state, config_text = backup.load()
        refused, changed = config_changes(parse_config(config_text, str(backup.path / "config.toml")), self.config)
        if refused:
            raise TrainError(
                f"cannot resume from {backup.path}: the config changed in ways the backup cannot follow: " + "; ".join(refused),
                "undo these changes, or start a new run with `tui-trainer train CONFIG`",
            )
        if state["dataset"] != dataset_fingerprint(self.report.items, self.item_captions):
            raise TrainError(f"cannot resume from {backup.path}: the dataset changed (images added, removed, resized or recaptioned)",
                             "restore the dataset as it was, or start a new run")
        if plan_paths(self._plan(state["epoch"])[state["batch_index"]:]) != state["remaining_batches"]:
            raise TrainError(f"cannot resume from {backup.path}: the epoch's remaining batches differ from the backup's",
                             "restore the dataset and config as they were, or start a new run")
        return backup, trainable, state, changed

    def load_checkpoint(self, backup: Backup, trainable: dict[str, torch.Tensor], state: dict[str, Any], changed: list[str]) -> None:
        """Continue exactly where `backup` left off: weights, optimizer, LR schedule, EMA, every RNG, the place in the epoch."""
        restore_state(self.method, self.parts, trainable, self.accelerator.unwrap_model)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if any("learning_rate" in key or key.startswith("scheduler.") for key in changed):
            self._apply_new_learning_rates()
        if self.ema is not None:
            # diffusers' EMAModel keeps loaded averages where they are: put them beside their parameters.
            averages = state["ema"]["shadow_params"]
            state["ema"]["shadow_params"] = [average.to(param.device) for average, param in zip(averages, self.ema.params, strict=True)]
            self.ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"], {"noise": self.noise_rng})
        self.global_step, self.epoch, self.batch_index = state["step"], state["epoch"], state["batch_index"]
        self.bad_paths |= set(state["bad_paths"])
        self.smoothing, self.started_at = list(state["smoothing"]), state["started_at"]
        if changed and self.accelerator.is_main_process:
            atomic_write_text(self.run.config_file, dump_config(self.config))
        self.monitor.emit(ResumeEvent(
            step=self.global_step, epoch=self.epoch + 1, batch_index=self.batch_index, backup=str(backup.path),
            changed=changed, total_steps=self.report.total_steps,
        ), f"resumed from {backup.path} at step {self.global_step}" + (f"; changed: {', '.join(changed)}" if changed else ""))
        if self.global_step >= self.report.total_steps:
            self.monitor.warning(f"nothing left to train: step {self.global_step} of {self.report.total_steps}; raise training.epochs to go on")

    def _apply_new_learning_rates(self) -> None:
        """The config's learning rates as the schedule's base, and this step's rates from them (the backup had the old)."""
        scheduler = self.lr_scheduler
        scheduler.base_lrs = [part.learning_rate for part in self.parts]
        for group, base, factor in zip(self.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
            group["initial_lr"] = base
            group["lr"] = base * factor(scheduler.last_epoch)

    def cleanup(self) -> None:
        """End trackers (flushes TensorBoard) and forget accelerate's process-wide state."""
        from accelerate.state import AcceleratorState, GradientState

        accelerator = getattr(self, "accelerator", None)
        if accelerator is not None:
            accelerator.end_training()
        if self.wandb is not None:
            self.wandb.finish()
        # accelerate keeps one state per process and refuses another mixed precision later; a process that
        # trains more than once (tests, benchmarks, in-process resume) starts each run fresh.
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


STEP_ACTIONS: dict[Command, Callable[[TrainRecipe], Any]] = {
    Command.SAMPLE: TrainRecipe.sample,
    Command.BACKUP: TrainRecipe.save_checkpoint,
    Command.SAVE: lambda recipe: recipe.save(periodic=True),
}
"""What each step-end action runs (a stop ends the loop instead)."""


def _console(run: RunDir, console: TextIO | None) -> TextIO | None:
    """`console`, unless it is the run's train.log itself (a detached trainer's stdout): no line twice."""
    try:
        same = os.path.samestat(os.fstat(console.fileno()), os.stat(run.log_file))
    except (AttributeError, OSError, ValueError):
        return console
    return None if same else console


def _describe(skipped: Any) -> str:
    path, reason = getattr(skipped, "path", None), getattr(skipped, "reason", None)
    return f"{path}: {reason}" if path is not None and reason else str(skipped)


def train_config(
    config: TrainConfig, config_path: str | Path | None, config_text: str, *, console: TextIO | None = None,
    run: RunDir | None = None, resume: bool = False,
) -> tuple[int, RunDir]:
    """Train `config` in a new run directory, or in the existing `run` (from its newest backup with `resume`);
    returns (exit code, run dir). Errors become `error` events; only the main process writes the run directory.
    A stop (command file, SIGTERM, SIGINT) and the end both back up and save; SIGHUP is ignored.

    Progress lines go to train.log, and also to `console` when given.
    """
    if run is None:
        run = create_run_dir(resolve_path(config_path, config.workspace.dir), config.workspace.run_name, config_text)
    monitor = RunMonitor(run, console=_console(run, console)) if is_main_process() else SilentMonitor(run, os.environ.get(RANK_ENV, "?"))
    monitor.status(RunState.STARTING, step=0)
    notifier = notifier_for(config.notify, run, monitor.warning) if is_main_process() else None
    if notifier is not None:
        monitor.listeners.append(notifier)
    recipe = TrainRecipe(config, config_path, run, monitor, resume=resume)
    code, state, reason = 1, RunState.FAILED, "error"
    try:
        with stop_signals(recipe.on_signal):
            recipe.setup()
            reason = recipe.train()
            recipe.processes.enter("the final backup and save")
            recipe.save_checkpoint()
            recipe.save()
            recipe.accelerator.wait_for_everyone()
        code, state = 0, END_STATES[reason]
    except (TrainError, ModelLoadError, OptimizerUnavailable) as error:
        monitor.error(str(error), getattr(error, "hint", ""), step=recipe.global_step)
    except torch.OutOfMemoryError as error:
        monitor.error(f"CUDA out of memory: {error}".splitlines()[0], oom_hint(config), step=recipe.global_step)
    except KeyboardInterrupt:
        code, state, reason = 130, RunState.STOPPED, "interrupted"
    except Exception as error:  # every failure must reach events.jsonl, not only stderr
        monitor.line(traceback.format_exc().rstrip())
        stalled = recipe.processes.failure(error) if recipe.processes is not None else None
        if stalled is not None:
            monitor.error(str(stalled), stalled.hint, step=recipe.global_step)
        else:
            monitor.error(f"{type(error).__name__}: {error}", "see train.log for the traceback", step=recipe.global_step)
    finally:
        recipe.cleanup()
        monitor.emit(EndEvent(reason=reason, step=recipe.global_step, **recipe.end_fields), f"end: {reason} at step {recipe.global_step}")
        monitor.status(state, step=recipe.global_step)
        monitor.close()
    return code, run


def train_file(config_path: str | Path, *, console: TextIO | None = None) -> tuple[int, RunDir]:
    """Load, check and train a config file (ConfigError when it is invalid; no run dir is made then)."""
    config = with_absolute_paths(load_checked_config(config_path), config_path)
    return train_config(config, config_path, dump_config(config), console=console)
