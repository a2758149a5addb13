"""Generate docs/config.md, the full config reference, from the schema's field docstrings."""

from __future__ import annotations

import enum
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from tui_trainer.config.enums import SAMPLERS
from tui_trainer.config.errors import model_class_in
from tui_trainer.config.schema import OPTIMIZER_SETTINGS, TrainConfig

HEADER = """# Config reference

Generated from the schema by `tui-trainer config docs -o docs/config.md`; do not edit by hand
(a test fails when this file is stale).

A config is one TOML file. `version` and `method` come first, then one table per section. An absent key
takes its default; TOML has no null, so "unset" means "leave the key out". Relative paths are relative
to the config file's folder. Unknown keys are errors (with the closest valid key suggested).

Sampler names for `[[samples]].sampler`: {samplers}.
"""


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " \\| ".join(f"`{member.value}`" for member in annotation)
    if isinstance(annotation, type):
        return annotation.__name__
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is typing.Annotated:
        return _type_name(args[0])
    return " or ".join(_type_name(arg) for arg in args)


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    if field.default is None:
        return "absent"
    value = field.default if field.default is not PydanticUndefined else None
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, BaseModel):
        return ""
    return f"`{value!r}`".replace("'", '"').replace("True", "true").replace("False", "false")


def _section(name: str, model: type[BaseModel], lines: list[str]) -> None:
    lines += ["", f"## `{name}`", "", model.__doc__ or "", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for key, field in model.model_fields.items():
        inner = model_class_in(field.annotation)
        if inner is not None:
            nested.append((f"{name}.{key}", inner))
            continue
        lines.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {field.description or ''} |")
    for child_name, child in nested:
        if child_name == "optimizer.settings":
            for opt_name, settings in OPTIMIZER_SETTINGS.items():
                _section(f"optimizer.settings.{opt_name.value}", settings, lines)
        else:
            _section(child_name, child, lines)


def config_reference() -> str:
    """The Markdown text of docs/config.md."""
    lines = [HEADER.format(samplers=", ".join(f"`{name}`" for name in SAMPLERS)).rstrip()]
    lines += ["", "## Top level", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    for key, field in TrainConfig.model_fields.items():
        if model_class_in(field.annotation) is None:
            lines.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {field.description or ''} |")
    for key, field in TrainConfig.model_fields.items():
        inner = model_class_in(field.annotation)
        if inner is not None:
            title = f"[[{key}]]" if typing.get_origin(field.annotation) is list else key
            _section(title, inner, lines)
    return "\n".join(lines) + "\n"
