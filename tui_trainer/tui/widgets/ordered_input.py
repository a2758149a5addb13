"""A text field where keys act in the order they were typed, also when they arrive together.

Textual's Input inserts a typed character as soon as its key event reaches the field, but a key bound to an
action (backspace, ctrl+u and arrows, bound by the field; Tab, bound by the app; PageDown, bound by the editor)
acts only after its event has bubbled up to the app. When keys queue up, because several arrive in one read
over a slow SSH link or because the app was busy when they came, the characters typed after a bound key are
handled before it: `end ctrl+u 3 2` left an empty field, and `tab 8` typed the 8 into the field being left.
Textual issue #6605 (a fix for the field's own keys is proposed upstream in pull request #6631).
"""

from __future__ import annotations

from typing import Any

from textual import events
from textual.widgets import Input


class OrderedInput(Input):
    """An Input that runs the action bound to a key when the key reaches it, in order with typed characters.

    Its cursor blinks as the app says (`TrainerApp.cursor_blink`; off in snapshot tests). Made in an app's compose.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cursor_blink = getattr(self.app, "cursor_blink", True)

    async def _on_key(self, event: events.Key) -> None:
        # The binding the app would run once the key bubbled up: the first in the focus chain (this field's own
        # bindings come first; bindings of printable keys above a field are never used). Priority bindings were
        # tried before the key was forwarded here.
        if not event.is_printable:
            active = self.screen.active_bindings.get(event.key)
            if (active is not None and active.enabled and not active.binding.priority
                    and await self.app.run_action(active.binding.action, active.node)):
                event.stop()
                event.prevent_default()
                return
        await super()._on_key(event)
