"""What the processes of a multi-process run do together, and what happens when one of them stops answering.

Every collective (DDP's gradient all-reduce, the per-step decision, barriers) waits at most
distributed.timeout_minutes; the error that follows names the phase the run was in, so a stalled or dead
process is an `error` event instead of a silent hang.
"""

from __future__ import annotations

import os
import re
import time
from datetime import timedelta
from typing import Any

from tui_trainer.train.errors import TrainError

RANK_ENV = "RANK"
"""Set by `accelerate launch` (and torchrun) in every process it starts."""

STALL_ENV = "TUI_TRAINER_TEST_STALL"
"""Test hook, "RANK:PHASE": process RANK sleeps when it enters a phase whose name starts with PHASE."""
STALL_S = 600.0

PROCESS_GROUP_FAILURE = re.compile(r"timed out|timeout|connection (closed|reset|refused)|pair closure|broken pipe|peer", re.IGNORECASE)
"""How gloo and NCCL word a collective that another process never joined (they raise a bare RuntimeError)."""


def in_launched_process() -> bool:
    """Whether this process is one of several started by `accelerate launch`."""
    return RANK_ENV in os.environ


def is_main_process() -> bool:
    """Rank 0, or the only process (known before accelerate is set up)."""
    return os.environ.get(RANK_ENV, "0") == "0"


def process_group_kwargs(timeout_minutes: float) -> Any:
    """accelerate's kwargs handler that sets the process group's collective timeout."""
    from accelerate.utils import InitProcessGroupKwargs

    return InitProcessGroupKwargs(timeout=timedelta(minutes=timeout_minutes))


class Processes:
    """This process's place in the run: its rank, the process count and the phase all processes are in."""

    def __init__(self, rank: int, count: int, timeout_minutes: float):
        self.rank = rank
        self.count = count
        self.timeout_minutes = timeout_minutes
        self.phase = "start-up"
        rank_to_stall, _, self._stall_prefix = os.environ.get(STALL_ENV, "").partition(":")
        self._stalls = rank_to_stall == str(rank)

    @property
    def several(self) -> bool:
        """Whether other processes train beside this one."""
        return self.count > 1

    def enter(self, phase: str) -> None:
        """Name the phase that the next collectives belong to."""
        self.phase = phase
        if self._stalls and phase.startswith(self._stall_prefix):
            time.sleep(STALL_S)

    def barrier(self) -> None:
        """Wait until every process has finished the current phase."""
        if self.several:
            import torch.distributed

            torch.distributed.barrier()

    def union(self, values: set[str]) -> set[str]:
        """`values` of every process together."""
        if not self.several:
            return values
        import torch.distributed

        gathered: list[Any] = [None] * self.count
        torch.distributed.all_gather_object(gathered, sorted(values))
        return {value for part in gathered for value in part}

    def failure(self, error: BaseException) -> TrainError | None:
        """The clear error of a collective that another process never joined, or None for any other error."""
        if not self.several or not isinstance(error, RuntimeError) or not PROCESS_GROUP_FAILURE.search(str(error)):
            return None
        return TrainError(
            f"process {self.rank} of {self.count} waited in vain for the others during {self.phase} "
            f"(collective timeout {self.timeout_minutes:g} min): another process stalled or died ({str(error).strip()[:200]})",
            "see train.log for the other processes' errors; raise distributed.timeout_minutes if that phase is just slow "
            "(a long sampling or backup on the main process), then resume from the last backup",
        )
