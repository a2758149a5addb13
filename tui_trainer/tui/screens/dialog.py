"""The base of every dialog: a modal screen over the current one, with the dialog's own keys in its footer."""

from __future__ import annotations

from typing import TypeVar

from textual.app import ComposeResult
from textual.screen import ModalScreen
from textual.widgets import Footer

ResultType = TypeVar("ResultType")


class Dialog(ModalScreen[ResultType]):
    """Subclasses compose their body in `compose_body`; the footer under it lists the dialog's keys (the footer of
    the screen underneath would still show that screen's keys, which do nothing while the dialog is open)."""

    def __init__(self) -> None:
        super().__init__(classes="dialog")

    def compose(self) -> ComposeResult:
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        """The dialog's widgets (styled by the `.dialog-body` rules of app.tcss)."""
        raise NotImplementedError
