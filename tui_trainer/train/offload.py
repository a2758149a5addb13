"""Block offload of a flow transformer's frozen weights to CPU RAM while LoRA trains (`[flow.offload]`).

Built on diffusers' group offloading pieces: `ModuleGroup` moves a group's tensors (pinned copies and a CUDA stream
when asked) and `HookRegistry` runs a hook around each block's forward. Its own hooks are made for inference; reading
diffusers/hooks/group_offloading.py (0.42) and the CPU checks in tests/test_offload.py showed what training needs:

- Autograd keeps the frozen weights a block's backward reads (often the Parameter objects themselves); offloading
  them after the forward leaves the backward reading CPU tensors. So gradient checkpointing is required: each block's
  backward reruns its forward, which brings its weights back.
- diffusers onloads a group only in its first block's forward, but the backward reruns the blocks last first: here
  every block brings its group back when it is not on the device.
- diffusers never offloads a block rerun in the backward (torch's checkpoint stops the rerun before the hook's
  post-forward), so by the end of every backward the whole transformer would be on the GPU again. Here a group goes
  back to RAM as soon as the gradient of its first block's inputs is ready, i.e. when its backward is done.
- Only frozen tensors move. diffusers moves all of a group's parameters, LoRA adapters included, and with a stream
  puts its initial pinned copies back at every offload (the training updates would be lost). The adapters and the
  weights outside the blocks (embedders, norms, final layer) stay on the device.
- bitsandbytes nf4 weights keep their quantisation state (absmax) beside the packed data; diffusers moves only the
  data, so it is moved here too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.group_offloading import GroupOffloadingConfig, GroupOffloadingHook, GroupOffloadingType, ModuleGroup

from tui_trainer.config.enums import Method
from tui_trainer.config.schema import TrainConfig
from tui_trainer.train.errors import TrainError

OFFLOAD_HOOK = "group_offloading"
"""diffusers' registry name of a group-offloading hook. With one present, `ModelMixin.to()` leaves the model where it
is (so accelerate's prepare does not put every block back on the GPU) and `.device` reports the onload device."""
PASS_HOOK = "tui_trainer_offload_pass"
"""The transformer's own hook: it tells a forward pass from the reruns of the backward."""
CPU = torch.device("cpu")


@dataclass(eq=False)
class OffloadGroup:
    """`blocks_per_group` consecutive blocks of one block list, and their frozen tensors."""

    name: str
    blocks: list[torch.nn.Module]
    group: ModuleGroup
    quantized: list[Any] = field(default_factory=list)
    """bitsandbytes Params4bit among the tensors (their quant_state moves with them)."""
    onloaded: bool = True
    prefetched: bool = False
    """Copied on the side stream and not yet waited for."""


def _place_quant_states(member: OffloadGroup, device: torch.device) -> None:
    for param in member.quantized:
        param.quant_state.to(device)


class BlockOffload:
    """The offloaded groups of one transformer: where each one is, and the order the forward runs them in."""

    def __init__(self, groups: list[OffloadGroup], onload_device: torch.device, stream: Any = None, prefetch: bool = False):
        self.groups = groups
        self.onload_device = onload_device
        self.stream = stream
        self.prefetch = prefetch
        """Copy the next group (the previous one in the backward) while this one computes."""
        self.in_forward = False
        self.order: list[OffloadGroup] = []
        """Groups in the order the first forward ran them (for prefetching); complete after that forward."""
        self.order_known = False
        self.first_blocks = {id(member.blocks[0]): member for member in groups}

    def onload(self, member: OffloadGroup, prefetch: bool = False) -> None:
        """Bring a group's tensors to the device (on the side stream, not waited for, when `prefetch`)."""
        if member.onloaded:
            if member.prefetched and not prefetch:
                self.stream.synchronize()
                member.prefetched = False
            return
        member.group.onload_()
        _place_quant_states(member, self.onload_device)
        member.onloaded = True
        member.prefetched = prefetch and self.stream is not None
        if self.stream is not None and not prefetch:
            self.stream.synchronize()

    def release(self, member: OffloadGroup) -> None:
        """Send a group's tensors back to (pinned) CPU RAM."""
        if not member.onloaded:
            return
        if member.prefetched:
            self.stream.synchronize()
            member.prefetched = False
        member.group.offload_()
        _place_quant_states(member, CPU)
        member.onloaded = False

    def enter(self, member: OffloadGroup) -> None:
        """A block of `member` is about to run: its group on the device, and the next one on its way (with a stream)."""
        if self.in_forward and not self.order_known and member not in self.order:
            self.order.append(member)
        self.onload(member)
        if not self.prefetch or not self.order_known or member not in self.order:
            return
        index = self.order.index(member) + (1 if self.in_forward else -1)
        if 0 <= index < len(self.order):
            self.onload(self.order[index], prefetch=True)

    def checkpoint(self, block: torch.nn.Module, *args: Any) -> Any:
        """The transformer's gradient checkpointing function: torch's, with a group's first block handing the group
        back to RAM once the gradient of its inputs is ready (its backward done)."""
        member = self.first_blocks.get(id(block))
        if member is not None:
            args = _release_after_backward(self, member, args)
        return torch.utils.checkpoint.checkpoint(block.__call__, *args, use_reentrant=False)


class _ReleaseAfterBackward(torch.autograd.Function):
    """Identity on a block's inputs whose backward sends the block's group back to RAM."""

    @staticmethod
    def forward(ctx: Any, offload: BlockOffload, member: OffloadGroup, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.offload, ctx.member = offload, member
        return tuple(tensor.view_as(tensor) for tensor in tensors)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:
        ctx.offload.release(ctx.member)
        return (None, None, *grads)


def _release_after_backward(offload: BlockOffload, member: OffloadGroup, args: tuple[Any, ...]) -> tuple[Any, ...]:
    positions = [index for index, arg in enumerate(args) if isinstance(arg, torch.Tensor) and arg.requires_grad]
    if not positions:
        return args  # nothing flows back into this group: the next forward sends it back
    passed = _ReleaseAfterBackward.apply(offload, member, *(args[index] for index in positions))
    replaced = list(args)
    for index, tensor in zip(positions, passed, strict=True):
        replaced[index] = tensor
    return tuple(replaced)


class _BlockHook(GroupOffloadingHook):
    """Around one block: its group on the device before it runs; after a forward's last block of the group, back to
    RAM (in the backward, `_ReleaseAfterBackward` does that)."""

    def __init__(self, offload: BlockOffload, member: OffloadGroup, config: GroupOffloadingConfig):
        super().__init__(member.group, config=config)
        self.offload, self.member = offload, member

    def initialize_hook(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        self.offload.enter(self.member)
        return args, kwargs

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        if self.offload.in_forward and module is self.member.blocks[-1]:
            self.offload.release(self.member)
        return output


class _PassHook(ModelHook):
    """On the transformer: marks its forward passes (block reruns outside one belong to the backward)."""

    def __init__(self, offload: BlockOffload):
        super().__init__()
        self.offload = offload

    def pre_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        self.offload.in_forward = True
        return args, kwargs

    def post_forward(self, module: torch.nn.Module, output: Any) -> Any:
        self.offload.in_forward = False
        self.offload.order_known = True
        return output


class _MoveIsMeantToStay(logging.Filter):
    """diffusers warns at every `.to(device)` of a group-offloaded model that it stays where it is; the trainer's own
    calls (accelerate's prepare, sampling's device moves) mean exactly that."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is group offloaded and moving it" not in record.getMessage()


MOVE_FILTER = _MoveIsMeantToStay()
MOVE_LOGGERS = ("diffusers.models.modeling_utils", "diffusers.pipelines.pipeline_utils")


def _unique(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return list({id(tensor): tensor for tensor in tensors}.values())


def _place(tensor: torch.Tensor, device: torch.device) -> None:
    tensor.data = tensor.data.to(device)
    if getattr(tensor, "quant_state", None) is not None:
        tensor.quant_state.to(device)


def block_lists(transformer: torch.nn.Module) -> dict[str, torch.nn.ModuleList]:
    """The transformer's block lists: its ModuleList / Sequential children of the blocks diffusers names repeated (FLUX.1's
    double- and single-stream blocks, Z-Image's layers and refiners, Qwen-Image's blocks), which its forward checkpoints."""
    kinds = set(getattr(transformer, "_repeated_blocks", None) or ())
    return {name: child for name, child in transformer.named_children()
            if isinstance(child, (torch.nn.ModuleList, torch.nn.Sequential)) and len(child)
            and (not kinds or all(type(block).__name__ in kinds for block in child))}


def apply_block_offload(transformer: torch.nn.Module, onload_device: torch.device, blocks_per_group: int = 1,
                        use_stream: bool = False) -> BlockOffload:
    """Keep the frozen weights of the transformer's blocks in CPU RAM, `blocks_per_group` blocks at a time on
    `onload_device` while they run (forward and backward); everything else of it goes to `onload_device`.

    On a CUDA device the groups copy from pinned CPU copies on a side stream, and offloading only drops the GPU copy
    (frozen weights never change): only host-to-GPU copies happen. `use_stream` also prefetches the next group.
    Needs gradient checkpointing on (enable_gradient_checkpointing); replaces its checkpointing function."""
    if not getattr(transformer, "gradient_checkpointing", False):
        raise ValueError("block offload needs the transformer's gradient checkpointing on")
    lists = block_lists(transformer)
    if not lists:
        raise ValueError(f"{type(transformer).__name__} has no block list to offload")
    if use_stream and onload_device.type != "cuda":
        raise ValueError(f"use_stream needs a CUDA device, not {onload_device}")
    stream = torch.cuda.Stream(onload_device) if onload_device.type == "cuda" else None
    config = GroupOffloadingConfig(onload_device=onload_device, offload_device=CPU, offload_type=GroupOffloadingType.BLOCK_LEVEL,
                                   non_blocking=stream is not None, record_stream=False, low_cpu_mem_usage=False,
                                   num_blocks_per_group=blocks_per_group, stream=stream)
    groups, moved = [], set()
    for list_name, blocks in lists.items():
        for start in range(0, len(blocks), blocks_per_group):
            chunk = list(blocks[start:start + blocks_per_group])
            params = _unique([param for block in chunk for param in block.parameters() if not param.requires_grad])
            buffers = _unique([buffer for block in chunk for buffer in block.buffers()])
            for tensor in params + buffers:
                _place(tensor, CPU)
            group = ModuleGroup(
                modules=[], offload_device=CPU, onload_device=onload_device, offload_leader=chunk[-1], onload_leader=chunk[0],
                parameters=params, buffers=buffers, non_blocking=stream is not None, stream=stream,
            )
            name = f"{list_name}_{start}_{start + len(chunk) - 1}"
            groups.append(OffloadGroup(name, chunk, group, [p for p in params if hasattr(p, "quant_state")]))
            moved |= {id(tensor) for tensor in params + buffers}
    for tensor in [*transformer.parameters(), *transformer.buffers()]:
        if id(tensor) not in moved:
            _place(tensor, onload_device)
    offload = BlockOffload(groups, onload_device, stream, prefetch=use_stream)
    for member in groups:
        offload.release(member)
        for block in member.blocks:
            registry = HookRegistry.check_if_exists_or_initialize(block)
            if registry.get_hook(OFFLOAD_HOOK) is not None:
                raise ValueError(f"{type(block).__name__} already has a group-offloading hook")
            registry.register_hook(_BlockHook(offload, member, config), OFFLOAD_HOOK)
    HookRegistry.check_if_exists_or_initialize(transformer).register_hook(_PassHook(offload), PASS_HOOK)
    for logger in MOVE_LOGGERS:
        logging.getLogger(logger).addFilter(MOVE_FILTER)
    transformer.enable_gradient_checkpointing(gradient_checkpointing_func=offload.checkpoint)
    return offload


def offload_transformer(transformer: torch.nn.Module, config: TrainConfig, device: torch.device,
                        warn: Callable[[str], None]) -> BlockOffload | None:
    """Apply `[flow.offload]` to the loaded transformer (after its adapters are added); None when it is off, or when
    training on the CPU, which has no GPU memory to save (warned once)."""
    settings = config.flow.offload
    if not settings.enabled:
        return None
    if config.method is not Method.LORA or not config.training.gradient_checkpointing:
        raise TrainError("flow.offload needs method 'lora' and training.gradient_checkpointing = true",
                         "run `tui-trainer config validate CONFIG` for the reasons")
    if device.type != "cuda":
        warn(f"flow.offload: training on the {device.type}, there is no GPU memory to offload from; training without it")
        return None
    return apply_block_offload(transformer, device, settings.blocks_per_group, settings.use_stream)
