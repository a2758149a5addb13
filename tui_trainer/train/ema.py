"""Exponential moving average of the trained weights (diffusers' EMAModel), for any method."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from tui_trainer.config.schema import TrainConfig


class PartsEMA:
    """One EMA over every trainable parameter of every trained part."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        from diffusers.training_utils import EMAModel  # imported here: the module takes seconds to import

        self.params = params
        self.model = EMAModel(params, decay=decay, foreach=True)

    def step(self) -> None:
        """Move the average toward the current weights (after each optimizer step)."""
        self.model.step(self.params)

    @contextlib.contextmanager
    def averaged(self) -> Iterator[None]:
        """The averaged weights in place of the trained ones for the duration (saving, sampling)."""
        self.model.store(self.params)
        self.model.copy_to(self.params)
        try:
            yield
        finally:
            self.model.restore(self.params)

    def state_dict(self) -> dict:
        """Averages and step count, for backups."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore a backup's averages."""
        self.model.load_state_dict(state)


def build_ema(config: TrainConfig, params: list[torch.nn.Parameter]) -> PartsEMA | None:
    """The EMA of a run, or None when training.ema is off."""
    return PartsEMA(params, config.training.ema_decay) if config.training.ema else None


def averaged(ema: PartsEMA | None) -> contextlib.AbstractContextManager:
    """`ema.averaged()`, or a no-op without an EMA."""
    return ema.averaged() if ema is not None else contextlib.nullcontext()
