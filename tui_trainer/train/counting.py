"""Count parameters and adapter-able layer shapes of real torch modules (train side: imports torch lazily).

The family registry's numbers come from these functions applied to the published architectures on
torch's meta device; the tests re-derive them, and `measured_spec` builds a FamilySpec from any model
(e.g. the tiny devkit one) so the estimator can run on it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable

from tui_trainer.models.families import BNB_MIN_8BIT_NUMEL, FamilySpec, LayerShape, PartSpec


def parameter_count(module) -> int:
    """Number of parameters of a torch module."""
    return sum(parameter.numel() for parameter in module.parameters())


def matches_target(module_name: str, targets: Iterable[str]) -> bool:
    """peft's rule for a list of target names: the module's name equals one or ends with '.' + one."""
    return any(module_name == target or module_name.endswith("." + target) for target in targets)


def adapter_layer_shapes(module, targets: Iterable[str]) -> tuple[LayerShape, ...]:
    """(in features x kernel area, out features, count) of every Linear / Conv2d peft would adapt."""
    import torch

    targets = tuple(targets)
    shapes: Counter[tuple[int, int]] = Counter()
    for name, layer in module.named_modules():
        if not matches_target(name, targets):
            continue
        if isinstance(layer, torch.nn.Linear):
            shapes[(layer.in_features, layer.out_features)] += 1
        elif isinstance(layer, torch.nn.Conv2d):
            kernel_area = layer.kernel_size[0] * layer.kernel_size[1]
            shapes[(layer.in_channels // layer.groups * kernel_area, layer.out_channels)] += 1
    return tuple(LayerShape(fan_in, fan_out, count) for (fan_in, fan_out), count in sorted(shapes.items()))


def small_tensor_params(module, limit: int = BNB_MIN_8BIT_NUMEL) -> int:
    """Parameters in tensors with fewer than `limit` elements."""
    return sum(p.numel() for p in module.parameters() if p.numel() < limit)


def factored_state_elements(module) -> int:
    """Adafactor's second-moment elements: row + column factors of >= 2-D tensors, full size of the others."""
    return sum(p.numel() // p.shape[-1] + p.numel() // p.shape[-2] if p.dim() >= 2 else p.numel() for p in module.parameters())


def linear_weight_params(module) -> int:
    """Parameters in nn.Linear weights."""
    import torch

    return sum(layer.weight.numel() for layer in module.modules() if isinstance(layer, torch.nn.Linear))


def measured_part(part: PartSpec, module) -> PartSpec:
    """`part` with every count and adapter layer shape measured from `module`."""
    layers = {
        targets: adapter_layer_shapes(module, names) for targets, names in part.lora_target_modules.items()
    }
    return dataclasses.replace(
        part,
        params=parameter_count(module),
        small_tensor_params=small_tensor_params(module),
        factored_state_elements=factored_state_elements(module),
        linear_weight_params=linear_weight_params(module),
        lora_layers=layers,
    )


def measured_spec(spec: FamilySpec, modules: dict) -> FamilySpec:
    """`spec` with the parts named in `modules` (part name -> torch module) measured from those modules."""
    parts = {name: measured_part(part, modules[name]) if name in modules else part for name, part in spec.parts.items()}
    return dataclasses.replace(spec, parts=parts)

