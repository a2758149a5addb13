"""Config errors that name the file, the dotted key, the bad value and what is allowed."""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass
from typing import Any

from annotated_types import Ge, Gt, Le, Lt, MultipleOf
from pydantic import BaseModel, ValidationError


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a config file."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        return f"{where}{self.key}: {self.message}" if self.key else f"{where}{self.message}"


class ConfigError(Exception):
    """A config that cannot be used; `problems` lists every reason."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


def dotted_key(loc: tuple[Any, ...]) -> str:
    """('concepts', 0, 'path') -> 'concepts[0].path'."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def model_class_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation like `X`, `X | None` or `list[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = model_class_in(arg)
        if found is not None:
            return found
    return None


def _walk(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, Any]:
    """The model holding the last key of `loc`, and that key's FieldInfo (or None)."""
    model: type[BaseModel] | None = root
    field = None
    keys = [part for part in loc if not isinstance(part, int)]
    for position, part in enumerate(keys):
        if model is None:
            return None, None
        field = model.model_fields.get(part)
        if field is None:
            return model, None
        if position < len(keys) - 1:
            model = model_class_in(field.annotation)
    return model, field


def _bounds(field: Any) -> str:
    symbols = {Gt: ("> ", "gt"), Ge: (">= ", "ge"), Lt: ("< ", "lt"), Le: ("<= ", "le")}
    parts = []
    metadata = list(getattr(field, "metadata", []))
    for arg in typing.get_args(field.annotation) if field is not None else ():
        for item in getattr(arg, "__metadata__", ()):
            metadata += list(getattr(item, "metadata", [item]))
    for item in metadata:
        for kind, (symbol, attr) in symbols.items():
            if isinstance(item, kind):
                parts.append(f"{symbol}{getattr(item, attr):g}")
        if isinstance(item, MultipleOf):
            parts.append(f"a multiple of {item.multiple_of}")
    return " and ".join(parts)


def _allowed_enum(field: Any) -> str:
    annotation = field.annotation if field is not None else None
    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and hasattr(candidate, "__members__"):
            return ", ".join(member.value for member in candidate)
    return ""


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "a list ([[...]] tables)",
    "model": "a table",
    "dict": "a table",
}


def _type_word(error_type: str) -> str | None:
    for prefix, word in _TYPE_WORDS.items():
        if error_type.startswith(prefix + "_") or error_type == prefix + "_type":
            return word
    return None


def problems_from_validation(root: type[BaseModel], error: ValidationError, file: str) -> list[ConfigProblem]:
    """Turn a pydantic ValidationError into ConfigProblems with plain messages."""
    problems: list[ConfigProblem] = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        kind = item["type"]
        value = item.get("input")
        model, field = _walk(root, loc)
        key = dotted_key(loc)
        if kind == "extra_forbidden":
            valid = list(model.model_fields) if model is not None else []
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            hint = f"; did you mean '{dotted_key(loc[:-1] + (close[0],))}'?" if close else ""
            message = f"unknown key{hint} Valid keys here: {', '.join(valid)}" if not close else f"unknown key{hint}"
        elif kind == "missing":
            message = "is required but missing"
        elif kind == "enum":
            message = f"{value!r} is not allowed; allowed: {_allowed_enum(field)}"
        elif kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "multiple_of"}:
            message = f"{value!r} is out of range; allowed: {_bounds(field)}"
        elif kind in {"string_too_short"}:
            message = "must not be empty"
        elif kind == "string_pattern_mismatch":
            message = f"{value!r} is not allowed; allowed characters: letters, digits, '.', '_', '-' (no spaces)"
        elif kind == "output_format":
            key = dotted_key(loc + ("output_format",))
            message = f"{item['msg']}"
        elif kind == "value_error":
            message = str(item["msg"]).removeprefix("Value error, ")
        elif _type_word(kind):
            message = f"{value!r} has the wrong type; expected {_type_word(kind)}"
        else:
            message = f"{value!r}: {item['msg']}"
        problems.append(ConfigProblem(file, key, message))
    return problems

