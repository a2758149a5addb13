"""Base of the section panes: a scrolling column of field groups generated from the schema."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widget import Widget

from tui_trainer.models.families import field_applies
from tui_trainer.tui.document import ConfigDocument
from tui_trainer.tui.widgets.field_group import FieldGroup, editable_fields

@dataclass(frozen=True)
class Group:
    """Fields `names` (all when None) of the section model at dotted `prefix` ('' = the top level)."""

    title: str
    prefix: str
    names: tuple[str, ...] | None = None


def with_rest(model: type[BaseModel], prefix: str, groups: tuple[Group, ...], title: str = "More") -> tuple[Group, ...]:
    """`groups`, plus a group of the fields of `model` they do not list (so new schema fields always show)."""
    listed = {name for group in groups if group.prefix == prefix for name in group.names or ()}
    rest = tuple(name for name in model.model_fields if name not in listed)
    return (*groups, Group(title, prefix, rest)) if rest else groups


class SectionPane(VerticalScroll):
    """One config section. Subclasses list GROUPS or override `groups`; `config_changed` reacts to edits."""

    SECTION: ClassVar[str]
    TITLE: ClassVar[str]
    GROUPS: ClassVar[tuple[Group, ...]] = ()
    REBUILD_ON: ClassVar[frozenset[str]] = frozenset()
    """Keys whose change re-generates this pane's groups (e.g. the method for its specifics); model.family always does."""

    def __init__(self, document: ConfigDocument) -> None:
        super().__init__(id=f"section-{self.SECTION}", classes="section-pane")
        self.document = document
        self.built = False

    async def build(self) -> None:
        """Compose the fields the first time the pane is shown (keeps start-up fast)."""
        if not self.built:
            self.built = True
            await self.recompose()

    @property
    def title(self) -> str:
        """Sidebar and border title."""
        return self.TITLE

    def groups(self) -> Iterable[Group]:
        """The groups shown for the current config."""
        return self.GROUPS

    def compose(self) -> ComposeResult:
        if not self.built:
            return
        yield from self.extra_widgets()
        family = self.document.config.model.family
        for group in self.groups():
            owner = self.document.node(f"{group.prefix}.x")[0] if group.prefix else self.document.config
            names = [name for name in editable_fields(type(owner), group.names)
                     if field_applies(family, f"{group.prefix}.{name}".lstrip("."))]
            if names:
                yield FieldGroup(group.title, group.prefix, owner, names)

    def extra_widgets(self) -> Iterable[Widget]:
        """Widgets above the field groups."""
        return ()

    async def config_changed(self, key: str) -> bool:
        """Called after every accepted edit anywhere in the config; True when the pane was rebuilt."""
        if (key not in self.REBUILD_ON and key != "model.family") or not self.built:
            return False
        focused = self.screen.focused
        refocus = focused is not None and focused in self.walk_children()
        await self.recompose()
        editors = self.query(f"#field-{key.replace('.', '-')} .field-editor")
        if refocus and editors:
            editors.first().focus()
        return True
