"""[wandb]: Weights & Biases as a second logger beside TensorBoard: scalars, sample images and the config.

Offline (files in the run folder's wandb/, `wandb sync` uploads them later) unless an API key is set
(WANDB_API_KEY, or `wandb login`) or WANDB_MODE says otherwise. wandb is an optional extra: without it the run
goes on with a warning.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tui_trainer.config import TrainConfig, config_to_dict
from tui_trainer.runs.events import Event, SampleEvent
from tui_trainer.runs.layout import RunDir

WANDB_FOLDER = "wandb"


def _has_api_key() -> bool:
    """Whether wandb can authenticate: WANDB_API_KEY, or a netrc entry for api.wandb.ai (`wandb login`)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text(encoding="utf-8")
    except OSError:
        return False


def wandb_mode() -> str:
    """WANDB_MODE when set, else online with an API key and offline without one."""
    return os.environ.get("WANDB_MODE") or ("online" if _has_api_key() else "offline")


class WandbLogger:
    """One wandb run per training run: `log` takes scalars (the monitor's tracker), the listener call takes samples."""

    def __init__(self, config: TrainConfig, run: RunDir, warn: Callable[[str], None]):
        self.run_handle: Any = None
        try:
            import wandb
        except ImportError:
            warn("wandb.enabled is set but wandb is not installed; pip install 'tui-trainer[wandb]'")
            return
        self.wandb = wandb
        folder = run.path / WANDB_FOLDER
        folder.mkdir(exist_ok=True)
        settings = config.wandb
        self.run_handle = wandb.init(
            project=settings.project, entity=settings.entity, name=run.name, id=run.name, resume="allow",
            dir=str(run.path), config=config_to_dict(config), mode=wandb_mode(), reinit="create_new",
        )

    def log(self, scalars: dict[str, float], step: int) -> None:
        """Scalars of a step."""
        if self.run_handle is not None:
            self.run_handle.log(scalars, step=step)

    def __call__(self, event: Event) -> None:
        """Samples become images, with their prompts as captions (scalars come through `log`)."""
        if self.run_handle is None or not isinstance(event, SampleEvent):
            return
        images = [self.wandb.Image(path, caption=prompt) for path, prompt in zip(event.paths, event.prompts, strict=False)]
        self.run_handle.log({"samples": images}, step=event.step)

    def finish(self) -> None:
        """End the wandb run (flushes offline files)."""
        if self.run_handle is not None:
            self.run_handle.finish()
            self.run_handle = None
