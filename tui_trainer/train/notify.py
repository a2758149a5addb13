"""[notify]: the trainer tells the user's services (apprise URLs) when a run finishes, fails, stops, samples or backs up.

URLs may hold `${ENV_VAR}` placeholders; they are filled in from the environment only to send, and every
message this module writes (warning events, log lines) has those values masked, so no secret reaches the run
folder. A notification that cannot be sent is a warning, never a failed run.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tui_trainer.config.enums import NotifyOn
from tui_trainer.config.schema import NotifyConfig
from tui_trainer.runs.events import BackupEvent, EndEvent, ErrorEvent, Event, SampleEvent
from tui_trainer.runs.layout import RunDir

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MASK = "****"
END_MOMENTS: dict[str, NotifyOn] = {"completed": NotifyOn.FINISHED, "error": NotifyOn.FAILED, "stopped": NotifyOn.STOPPED,
                                    "interrupted": NotifyOn.STOPPED}
"""End reason -> the moment it notifies."""
NOTIFY_TYPES: dict[NotifyOn, str] = {NotifyOn.FINISHED: "success", NotifyOn.FAILED: "failure", NotifyOn.STOPPED: "warning",
                                     NotifyOn.SAMPLE: "info", NotifyOn.BACKUP: "info"}
"""apprise's notify type (icon and colour on most services) of each moment."""


@dataclass
class Target:
    """One configured URL: its index in notify.urls, the apprise plugin and how it is named in messages."""

    index: int
    plugin: Any
    shown: str


def expand(template: str, environ: dict[str, str]) -> tuple[str, list[str], list[str]]:
    """`template` with ${VAR} filled in from `environ`: (url, the values filled in, the variables missing)."""
    values, missing = [], []

    def fill(match: re.Match[str]) -> str:
        value = environ.get(match.group(1))
        if value is None:
            missing.append(match.group(1))
            return match.group(0)
        values.append(value)
        return value

    return PLACEHOLDER.sub(fill, template), values, missing


class _Captured(logging.Handler):
    """apprise's log records of one send, kept here instead of reaching stderr (train.log)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class Notifier:
    """Listens to a run's events and sends the configured moments; `warn` reports what could not be sent."""

    def __init__(self, config: NotifyConfig, run: RunDir, warn: Callable[[str], None], environ: dict[str, str] | None = None):
        self.config, self.run, self.warn = config, run, warn
        self.secrets: list[str] = []
        self.targets: list[Target] = []
        self.error: ErrorEvent | None = None
        try:
            import apprise
        except ImportError:
            warn("notify: apprise is not installed, so no notification is sent; pip install 'tui-trainer[notify]'")
            return
        self.apprise = apprise
        environ = dict(os.environ if environ is None else environ)
        for index, template in enumerate(config.urls):
            url, values, missing = expand(template, environ)
            self.secrets += [value for value in values if value]
            if missing:
                warn(f"notify.urls[{index}]: environment variable {', '.join(missing)} is not set; this URL is skipped")
                continue
            plugin = self._quietly(lambda url=url: apprise.Apprise.instantiate(url))[0]
            if plugin is None:
                warn(f"notify.urls[{index}]: apprise cannot read {self.mask(template)!r}; see https://github.com/caronc/apprise/wiki")
                continue
            shown = self.mask(plugin.url(privacy=True))
            if not PLACEHOLDER.search(template) and plugin.url(privacy=True) != plugin.url():
                warn(f"notify.urls[{index}] ({shown}) holds its token as written, so the run folder's config.toml has it; "
                     "put the token in an environment variable and write ${NAME} in its place")
            self.targets.append(Target(index, plugin, shown))

    def mask(self, text: str) -> str:
        """`text` with every value read from the environment replaced by ****."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text

    def _quietly(self, call: Callable[[], Any]) -> tuple[Any, list[str]]:
        """Run `call` with apprise's log records captured (not propagated to stderr); (result, warning messages)."""
        logger = logging.getLogger("apprise")
        captured, propagate = _Captured(), logger.propagate
        logger.addHandler(captured)
        logger.propagate = False
        try:
            return call(), captured.messages
        finally:
            logger.removeHandler(captured)
            logger.propagate = propagate

    def __call__(self, event: Event) -> None:
        """Notify for an event when its moment is in notify.on."""
        if isinstance(event, ErrorEvent):
            self.error = event
        message = self._message(event)
        if message is None or message[0] not in self.config.on:
            return
        moment, title, body, attachments = message
        self.send(moment, title, body, attachments)

    def _message(self, event: Event) -> tuple[NotifyOn, str, str, list[str]] | None:
        run = self.run.name
        if isinstance(event, EndEvent) and event.reason in END_MOMENTS:
            moment = END_MOMENTS[event.reason]
            body = f"{run} {moment.value} at step {event.step}."
            if moment is NotifyOn.FAILED and self.error is not None:
                body += f"\nerror: {self.error.message}" + (f"\nhint: {self.error.hint}" if self.error.hint else "")
            return moment, f"tui-trainer: {run} {moment.value}", body + f"\n{self.run.path}", []
        if isinstance(event, SampleEvent):
            return NotifyOn.SAMPLE, f"tui-trainer: {run} samples of step {event.step}", "\n".join(event.prompts), event.paths
        if isinstance(event, BackupEvent):
            return NotifyOn.BACKUP, f"tui-trainer: {run} backup of step {event.step}", event.path, []
        return None

    def send(self, moment: NotifyOn, title: str, body: str, attachments: list[str]) -> None:
        """Send one notification to every target; each failure is a warning naming the (masked) URL."""
        for target in self.targets:
            attach = None
            if attachments and target.plugin.attachment_support:
                attach = self.apprise.AppriseAttachment(attachments)
            try:
                sent, logged = self._quietly(lambda target=target, attach=attach: target.plugin.notify(
                    body=body, title=title, notify_type=NOTIFY_TYPES[moment], attach=attach))
            except Exception as error:  # a broken service must never end the run
                sent, logged = False, [f"{type(error).__name__}: {error}"]
            if not sent:
                why = "; ".join(logged) or "the service refused it"
                self.warn(self.mask(f"notify.urls[{target.index}]: the {moment.value} notification to {target.shown} "
                                    f"was not sent: {why}"))


def notifier_for(config: NotifyConfig, run: RunDir, warn: Callable[[str], None]) -> Notifier | None:
    """The run's notifier, or None when notify.urls is empty."""
    return Notifier(config, run, warn) if config.urls else None
