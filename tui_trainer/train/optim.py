"""Optimizers and learning-rate schedules: one registry table each, every optimizer reading its own settings."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from tui_trainer.config.enums import OptimizerName, SchedulerName
from tui_trainer.config.schema import TrainConfig


class OptimizerUnavailable(Exception):
    """The chosen optimizer's package is not installed."""


@dataclass(frozen=True)
class OptimizerSpec:
    """Where an optimizer class lives and how its settings become constructor arguments."""

    module: str
    attr: str
    kwargs: Callable[[Any], dict[str, Any]]
    pip: str
    """What to install when the module is missing."""


OPTIM_EXTRA = "pip install 'tui-trainer[optim]'"

OPTIMIZERS: dict[OptimizerName, OptimizerSpec] = {
    OptimizerName.ADAMW: OptimizerSpec(
        "torch.optim", "AdamW",
        # fused: one kernel for all parameters (CPU and GPU); torch's default on the CPU is a Python loop over them
        lambda s: {"betas": (s.beta1, s.beta2), "eps": s.eps, "weight_decay": s.weight_decay, "fused": True}, "pip install torch",
    ),
    OptimizerName.ADAMW8BIT: OptimizerSpec(
        "bitsandbytes.optim", "AdamW8bit",
        lambda s: {"betas": (s.beta1, s.beta2), "eps": s.eps, "weight_decay": s.weight_decay}, "pip install bitsandbytes",
    ),
    OptimizerName.ADAFACTOR: OptimizerSpec(
        "transformers.optimization", "Adafactor",
        lambda s: {"relative_step": s.relative_step, "scale_parameter": s.scale_parameter,
                   "warmup_init": s.warmup_init, "weight_decay": s.weight_decay}, "pip install transformers",
    ),
    OptimizerName.PRODIGY: OptimizerSpec(
        "prodigyopt", "Prodigy",
        lambda s: {"betas": (s.beta1, s.beta2), "d_coef": s.d_coef, "weight_decay": s.weight_decay,
                   "use_bias_correction": s.use_bias_correction, "safeguard_warmup": s.safeguard_warmup}, OPTIM_EXTRA,
    ),
    OptimizerName.LION: OptimizerSpec(
        "lion_pytorch", "Lion", lambda s: {"betas": (s.beta1, s.beta2), "weight_decay": s.weight_decay}, OPTIM_EXTRA,
    ),
    OptimizerName.LION8BIT: OptimizerSpec(
        "bitsandbytes.optim", "Lion8bit",
        lambda s: {"betas": (s.beta1, s.beta2), "weight_decay": s.weight_decay}, "pip install bitsandbytes",
    ),
    OptimizerName.SGD: OptimizerSpec(
        "torch.optim", "SGD",
        lambda s: {"momentum": s.momentum, "nesterov": s.nesterov, "weight_decay": s.weight_decay}, "pip install torch",
    ),
    OptimizerName.SCHEDULE_FREE_ADAMW: OptimizerSpec(
        "schedulefree", "AdamWScheduleFree",
        lambda s: {"betas": (s.beta1, s.beta2), "weight_decay": s.weight_decay, "warmup_steps": s.warmup_steps}, OPTIM_EXTRA,
    ),
}
"""Every optimizer: module, class, settings -> keyword arguments, and how to install it."""


def optimizer_class(name: OptimizerName) -> type[torch.optim.Optimizer]:
    """Import an optimizer class; a missing package raises OptimizerUnavailable naming what to install."""
    spec = OPTIMIZERS[name]
    try:
        return getattr(importlib.import_module(spec.module), spec.attr)
    except ImportError as error:
        raise OptimizerUnavailable(
            f"optimizer {name.value!r} needs the package {spec.module.split('.')[0]!r} ({error}); {spec.pip}"
        ) from None


def build_optimizer(config: TrainConfig, param_groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """The configured optimizer over `param_groups` (each with its own "lr" and "name")."""
    name = config.optimizer.name
    kwargs = OPTIMIZERS[name].kwargs(config.optimizer.settings_for(name))
    lr: float | None = config.optimizer.learning_rate
    if name is OptimizerName.ADAFACTOR and kwargs["relative_step"]:
        lr = None
        param_groups = [{**group, "lr": None} for group in param_groups]
    return optimizer_class(name)(param_groups, lr=lr, **kwargs)


def warmup_steps(warmup: int | float, total_steps: int) -> int:
    """Warmup in steps: an int is steps, a float in (0, 1) a fraction of all steps."""
    return warmup if isinstance(warmup, int) else round(warmup * total_steps)


def _diffusers_schedule(name: str) -> Callable[..., Any]:
    def build(optimizer: torch.optim.Optimizer, config: TrainConfig, warmup: int, total: int) -> Any:
        from diffusers.optimization import get_scheduler

        return get_scheduler(
            name, optimizer, num_warmup_steps=warmup, num_training_steps=total,
            num_cycles=config.scheduler.cycles, power=float(config.scheduler.cycles),
        )

    return build


def _adafactor_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, warmup: int, total: int) -> Any:
    from transformers.optimization import AdafactorSchedule

    return AdafactorSchedule(optimizer, initial_lr=config.optimizer.learning_rate)


SCHEDULES: dict[SchedulerName, Callable[..., Any]] = {
    SchedulerName.CONSTANT: _diffusers_schedule("constant_with_warmup"),
    SchedulerName.LINEAR: _diffusers_schedule("linear"),
    SchedulerName.COSINE: _diffusers_schedule("cosine"),
    SchedulerName.COSINE_WITH_RESTARTS: _diffusers_schedule("cosine_with_restarts"),
    SchedulerName.POLYNOMIAL: _diffusers_schedule("polynomial"),
    SchedulerName.ADAFACTOR: _adafactor_schedule,
}
"""LR schedule builders: diffusers' get_scheduler, plus Adafactor's own relative-step schedule."""

DECAYING = frozenset({SchedulerName.LINEAR, SchedulerName.COSINE, SchedulerName.COSINE_WITH_RESTARTS, SchedulerName.POLYNOMIAL})


def _with_floor(factor: Callable[[int], float], floor: float, warmup: int) -> Callable[[int], float]:
    return lambda step: factor(step) if step < warmup else floor + (1 - floor) * factor(step)


def build_lr_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """The configured LR schedule over `total_steps` optimizer steps, with min_lr_factor as a floor after warmup."""
    warmup = warmup_steps(config.scheduler.warmup, total_steps)
    scheduler = SCHEDULES[config.scheduler.name](optimizer, config, warmup, total_steps)
    floor = config.scheduler.min_lr_factor
    if floor > 0 and config.scheduler.name in DECAYING:
        # diffusers' schedules have no LR floor; rescale their LambdaLR factors into [floor, 1] after warmup.
        scheduler.lr_lambdas = [_with_floor(factor, floor, warmup) for factor in scheduler.lr_lambdas]
    return scheduler
