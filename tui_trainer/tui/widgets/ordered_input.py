"""A text field whose editing keys act in the order they were typed, also when keys arrive together.

Textual's Input inserts a typed character as soon as its key event reaches the field, but runs the field's own
bindings (backspace, ctrl+u, ctrl+w, arrows, home/end...) only after the key has bubbled up to the app. When
several keys arrive in one read, which is common over a slow SSH link (keys typed ahead while the terminal
lags), the characters after an editing key are inserted before it acts: `end ctrl+u 3 2` leaves an empty field
instead of `32`. Textual issue #6605 (fix proposed upstream in pull request #6631, not released as of 8.2.8).
"""

from __future__ import annotations

from textual import events
from textual.widgets import Input


class OrderedInput(Input):
    """An Input that runs its own key bindings when the key reaches it, in order with typed characters."""

    async def _on_key(self, event: events.Key) -> None:
        # Priority bindings (the app's and screens') were checked before the key was forwarded here, and the
        # focused widget's bindings come first in the chain the app would search, so this runs what the app
        # would have run, only without the detour.
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            if not binding.priority and await self.app.run_action(binding.action, self):
                event.stop()
                event.prevent_default()
                return
        await super()._on_key(event)
