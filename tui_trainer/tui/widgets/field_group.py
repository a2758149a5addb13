"""A titled group of field editors generated from one section model of the schema."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel
from textual.app import ComposeResult
from textual.containers import Vertical

from tui_trainer.tui.widgets.field_editor import FieldEditor, is_editable


def editable_fields(model: type[BaseModel], names: Sequence[str] | None = None) -> list[str]:
    """The scalar fields of `model` (all, or those in `names`, in that order)."""
    chosen = names if names is not None else list(model.model_fields)
    return [name for name in chosen if is_editable(model.model_fields[name].annotation)]


class FieldGroup(Vertical):
    """Field editors for the fields of `owner`, keyed under the dotted `prefix`."""

    def __init__(self, title: str, prefix: str, owner: BaseModel, names: Sequence[str] | None = None,
                 *, id: str | None = None) -> None:
        super().__init__(id=id, classes="field-group")
        self.border_title = title
        self.prefix = prefix
        self.owner = owner
        self.names = editable_fields(type(owner), names)

    def compose(self) -> ComposeResult:
        for name in self.names:
            key = f"{self.prefix}.{name}" if self.prefix else name
            yield FieldEditor(key, self.owner, name, id="field-" + key.replace(".", "-"))
