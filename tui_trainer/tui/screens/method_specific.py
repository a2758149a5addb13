"""The chosen method's own settings: LoRA, embedding, inpainting (finetune has none)."""

from __future__ import annotations

from collections.abc import Iterable

from textual.widget import Widget
from textual.widgets import Static

from tui_trainer.config.enums import Method
from tui_trainer.tui.outline import SECTION_TITLES
from tui_trainer.tui.screens.section import Group, SectionPane

METHOD_GROUPS: dict[Method, tuple[Group, ...]] = {
    Method.LORA: (Group("LoRA", "lora"),),
    Method.EMBEDDING: (Group("Embedding", "embedding"),),
    Method.INPAINT: (Group("LoRA", "lora"), Group("Inpainting", "inpaint")),
    Method.FINETUNE: (),
}
"""Sections each method uses."""

METHOD_TITLES: dict[Method, str] = {
    Method.LORA: "LoRA", Method.EMBEDDING: "Embedding", Method.INPAINT: "Inpaint", Method.FINETUNE: "Finetune",
}


class MethodPane(SectionPane):
    """Shows the groups of the current method; rebuilds when the method changes."""

    SECTION = "method"
    TITLE = SECTION_TITLES[SECTION]
    REBUILD_ON = frozenset({"method"})

    @property
    def title(self) -> str:
        return METHOD_TITLES[self.document.config.method]

    def groups(self) -> Iterable[Group]:
        return METHOD_GROUPS[self.document.config.method]

    def extra_widgets(self) -> Iterable[Widget]:
        if not METHOD_GROUPS[self.document.config.method]:
            yield Static("Full finetune has no extra settings: choose which parts train, and their learning "
                         "rates, in Scheduler & LRs.", classes="note")
