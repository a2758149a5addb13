"""One schema field: label, an editor chosen from its type, the reason when the value is rejected."""

from __future__ import annotations

import types
import typing
from enum import Enum
from typing import Any

from pydantic import BaseModel, ValidationError
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input, Label, Select, Static, Switch

from tui_trainer.config.enums import SAMPLERS
from tui_trainer.config.errors import problems_from_validation
from tui_trainer.tui.widgets.ordered_input import OrderedInput

CHOICES: dict[str, tuple[str, ...]] = {"sampler": tuple(SAMPLERS)}
"""Plain-string fields that take one of a fixed list of values, by field name."""

LABELS: dict[str, str] = {
    "cfg": "CFG scale",
    "ema": "EMA",
    "dir": "Folder",
    "vae": "VAE",
    "gradient_accumulation": "Grad accum",
    "gradient_checkpointing": "Grad checkpoint",
    "cache_text_encoder_outputs": "Cache TE out",
    "dataloader_workers": "Loader workers",
    "vae_dtype": "VAE dtype",
    "zero_terminal_snr": "Zero term SNR",
    "bucket_max_aspect": "Bucket max AR",
    "bucket_remainder": "Bucket rest",
    "normalize_masked_area": "Norm mask area",
    "unmasked_probability": "Unmasked prob",
    "cache_dir": "Cache folder",
    "min_snr_gamma": "Min-SNR gamma",
    "use_bias_correction": "Bias correction",
    "safeguard_warmup": "Safe warmup",
    "caption_source": "Captions from",
    "caption_dropout": "Caption drop",
    "flip_probability": "Flip prob",
}
"""Labels that are not just the field name with spaces."""


def label_for(name: str) -> str:
    """'batch_size' -> 'Batch size'."""
    return LABELS.get(name) or name.replace("_", " ").capitalize()


def _members(annotation: Any) -> list[Any]:
    if isinstance(annotation, (types.UnionType,)) or typing.get_origin(annotation) is typing.Union:
        return [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    return [annotation]


def is_optional(annotation: Any) -> bool:
    """Whether None is allowed (an absent key)."""
    return type(None) in typing.get_args(annotation)


def base_types(annotation: Any) -> list[Any]:
    """The non-None types of an annotation, with Annotated stripped."""
    return [typing.get_args(arg)[0] if typing.get_origin(arg) is typing.Annotated else arg for arg in _members(annotation)]


def enum_of(annotation: Any) -> type[Enum] | None:
    """The Enum class of an enum (or optional enum) annotation."""
    for arg in base_types(annotation):
        if isinstance(arg, type) and issubclass(arg, Enum):
            return arg
    return None


def is_editable(annotation: Any) -> bool:
    """Whether a field is a scalar the form edits (not a sub-table or a list)."""
    for arg in base_types(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel) or typing.get_origin(arg) is list:
            return False
    return True


def format_value(value: Any) -> str:
    """Text shown in an Input for a value (absent = empty)."""
    if value is None:
        return ""
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def _parse_number(text: str, kinds: list[Any]) -> int | float:
    if int in kinds:
        try:
            return int(text)
        except ValueError:
            if float not in kinds:
                raise ValueError(f"{text!r} is not an integer") from None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def parse_text(text: str, annotation: Any) -> Any:
    """Turn typed text into a value of the field's type; raise ValueError with the reason."""
    stripped = text.strip()
    kinds = base_types(annotation)
    if not stripped and is_optional(annotation):
        return None
    if int in kinds or float in kinds:
        if not stripped:
            raise ValueError("a number is required")
        return _parse_number(stripped, kinds)
    return text


class FieldEditor(Widget):
    """Edits one field of a pydantic section model and reports valid values or the reason they are rejected."""

    class Changed(Message):
        """The user edited the field: `reason` is None when `value` is valid."""

        def __init__(self, editor: FieldEditor, value: Any, reason: str | None) -> None:
            super().__init__()
            self.editor = editor
            self.key = editor.key
            self.value = value
            self.reason = reason

        @property
        def control(self) -> FieldEditor:
            return self.editor

    def __init__(self, key: str, owner: BaseModel, name: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.key = key
        self.owner = owner
        self.name_in_model = name
        self.field = type(owner).model_fields[name]
        self.value = getattr(owner, name)
        self.reason: str | None = None

    @property
    def help_text(self) -> str:
        """The field's docstring from the schema."""
        return f"{label_for(self.name_in_model)} ({self.key}): {self.field.description or ''}"

    def compose(self) -> ComposeResult:
        with Horizontal(classes="field-row"):
            yield Label(label_for(self.name_in_model), classes="field-label")
            yield self._make_editor()
            if bool in base_types(self.field.annotation):
                yield Label(self._switch_text(bool(self.value)), classes="switch-state")
        yield Static("", classes="field-reason")

    @staticmethod
    def _switch_text(on: bool) -> str:
        return "on" if on else "off"

    def _make_editor(self) -> Widget:
        annotation = self.field.annotation
        enum = enum_of(annotation)
        if bool in base_types(annotation):
            return Switch(bool(self.value), classes="field-editor")
        if enum is not None or self.name_in_model in CHOICES:
            values = [member.value for member in enum] if enum else list(CHOICES[self.name_in_model])
            return Select(
                [(value, value) for value in values],
                value=format_value(self.value) if self.value is not None else Select.NULL,
                allow_blank=is_optional(annotation),
                prompt="(default)",
                compact=True,
                classes="field-editor",
            )
        return OrderedInput(format_value(self.value), placeholder="(default)" if is_optional(annotation) else "",
                            compact=True, classes="field-editor")

    @property
    def editor(self) -> Widget:
        """The Input, Select or Switch inside."""
        return self.query_one(".field-editor")

    def check(self, value: Any) -> str | None:
        """The reason `value` is rejected for this field, or None."""
        probe = self.owner.model_copy()
        try:
            setattr(probe, self.name_in_model, value)
        except ValidationError as error:
            reasons = [p.message for p in problems_from_validation(type(self.owner), error, "") if p.key == self.name_in_model]
            return reasons[0] if reasons else None
        return None

    def _submit(self, value: Any, reason: str | None) -> None:
        if reason is None and value == self.value and self.reason is None:
            return
        if reason != self.reason:
            self.reason = reason
            self.set_class(reason is not None, "-invalid")
            self.query_one(".field-reason", Static).update(reason or "")
        if reason is None:
            self.value = value
        self.post_message(self.Changed(self, value, reason))

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        try:
            value = parse_text(event.value, self.field.annotation)
        except ValueError as error:
            self._submit(None, str(error))
            return
        self._submit(value, self.check(value))

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        raw = None if event.value is Select.NULL else event.value
        enum = enum_of(self.field.annotation)
        value = enum(raw) if enum is not None and raw is not None else raw
        self._submit(value, self.check(value))

    def on_switch_changed(self, event: Switch.Changed) -> None:
        event.stop()
        self.query_one(".switch-state", Label).update(self._switch_text(event.value))
        self._submit(event.value, self.check(event.value))

    def set_value(self, value: Any) -> None:
        """Show `value` (changed elsewhere) without reporting it back."""
        self.value = value
        if self.reason is not None:
            self.reason = None
            self.set_class(False, "-invalid")
            self.query_one(".field-reason", Static).update("")
        editor = self.editor
        if isinstance(editor, Switch):
            editor.value = bool(value)
        elif isinstance(editor, Select):
            editor.value = Select.NULL if value is None else format_value(value)
        elif isinstance(editor, Input):
            editor.value = format_value(value)
