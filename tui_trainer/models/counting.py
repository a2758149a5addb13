"""Count parameters and adapter-able layer shapes of real torch modules (train side: imports torch lazily).

The family registry's numbers come from these functions applied to the published architectures on
torch's meta device; the tests re-derive them, and `measured_spec` builds a FamilySpec from any model
(e.g. the tiny devkit one) so the estimator can run on it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable

from tui_trainer.models.families import FamilySpec, LayerShape, PartSpec


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


def measured_part(part: PartSpec, module) -> PartSpec:
    """`part` with its parameter count and adapter layer shapes measured from `module`."""
    layers = {
        targets: adapter_layer_shapes(module, names) for targets, names in part.lora_target_modules.items()
    }
    return dataclasses.replace(part, params=parameter_count(module), lora_layers=layers)


def measured_spec(spec: FamilySpec, modules: dict) -> FamilySpec:
    """`spec` with the parts named in `modules` (part name -> torch module) measured from those modules."""
    parts = {name: measured_part(part, modules[name]) if name in modules else part for name, part in spec.parts.items()}
    return dataclasses.replace(spec, parts=parts)

