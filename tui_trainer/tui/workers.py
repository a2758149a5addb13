"""One error policy for the TUI's workers: a worker that raises tells the user (an error notification naming what
failed) and never ends the app; the node that started it still gets WorkerState.ERROR to tidy up after it."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from textual.dom import DOMNode
from textual.worker import Worker

ERROR_TIMEOUT_S = 20
"""Seconds a worker's error notification stays up."""


def start_worker(node: DOMNode, work: Callable[[], Any] | Awaitable[Any], *, what: str, group: str = "default",
                 thread: bool = False, exclusive: bool = False) -> Worker:
    """Run `work` (a function, in a thread with `thread`; or an awaitable) as a worker of `node`. When it raises, the
    user sees "<what> failed" with the error (thread-safe: App.notify posts a message)."""
    app = node.app

    def report(error: Exception) -> None:
        app.notify(f"{type(error).__name__}: {error}", title=f"{what} failed", severity="error", timeout=ERROR_TIMEOUT_S)

    if inspect.isawaitable(work):
        awaitable = work

        async def run() -> Any:
            try:
                return await awaitable
            except Exception as error:
                report(error)
                raise
    else:
        function = work

        def run() -> Any:
            try:
                return function()
            except Exception as error:
                report(error)
                raise

    return node.run_worker(run, name=what, group=group, thread=thread, exclusive=exclusive, exit_on_error=False)
