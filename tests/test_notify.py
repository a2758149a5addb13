"""[notify]: apprise json:// notifications reach a real local HTTP server; secrets from the environment never reach the
run folder; a notification that cannot be sent is a warning event."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from train_support import write_config
from tui_trainer.config.enums import NotifyOn
from tui_trainer.config.schema import NotifyConfig
from tui_trainer.runs.events import EndEvent, ErrorEvent, SampleEvent, WarningEvent, read_events
from tui_trainer.runs.layout import create_run_dir

SECRET = "s3cr3t-token-9f2c"


class Received:
    """What the local server was sent: one (path, headers, JSON body) per request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict]] = []
        self.arrived = threading.Event()


@pytest.fixture
def server() -> Iterator[tuple[int, Received]]:
    """A real HTTP server on a free local port that records every POST."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.requests.append((self.path, dict(self.headers), json.loads(body)))
            self.send_response(200)
            self.end_headers()
            received.arrived.set()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1], received
    httpd.shutdown()
    httpd.server_close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def basic_password(headers: dict[str, str]) -> str:
    return base64.b64decode(headers["Authorization"].split()[1]).decode().split(":", 1)[1]


def test_expand_fills_placeholders_and_names_the_missing():
    from tui_trainer.train.notify import expand

    assert expand("ntfy://${A}@host/${B}", {"A": "x"}) == ("ntfy://x@host/${B}", ["x"], ["B"])


def test_sample_notification_attaches_the_image_and_end_carries_the_error(tmp_path: Path, server):
    from tui_trainer.train.notify import Notifier

    port, received = server
    run = create_run_dir(tmp_path / "ws", "tiny", "")
    image = run.samples_dir / "step-000002-0.png"
    image.write_bytes(b"\x89PNG fake image bytes")
    warnings: list[str] = []
    notify = NotifyConfig(urls=[f"json://127.0.0.1:{port}/hook"], on=[NotifyOn.SAMPLE, NotifyOn.FAILED])
    notifier = Notifier(notify, run, warnings.append, environ={})
    notifier(SampleEvent(step=2, paths=[str(image)], prompts=["red circle"]))
    notifier(EndEvent(reason="completed", step=4))  # finished is not in `on`
    notifier(ErrorEvent(message="CUDA out of memory", hint="lower training.batch_size"))
    notifier(EndEvent(reason="error", step=4))
    assert warnings == []
    (path, _, sample), (_, _, failed) = received.requests
    assert path == "/hook"
    assert sample["title"] == f"tui-trainer: {run.name} samples of step 2" and sample["message"] == "red circle"
    (attachment,) = sample["attachments"]
    assert base64.b64decode(attachment["base64"]) == image.read_bytes()
    assert failed["type"] == "failure" and "error: CUDA out of memory" in failed["message"]
    assert "hint: lower training.batch_size" in failed["message"]


def test_unsendable_and_unreadable_urls_are_warnings_without_the_secret(tmp_path: Path):
    from tui_trainer.train.notify import Notifier

    run = create_run_dir(tmp_path / "ws", "tiny", "")
    warnings: list[str] = []
    urls = [f"json://user:${{TOKEN}}@127.0.0.1:{closed_port()}/", "nosuchservice://${TOKEN}", "json://${UNSET_VAR}@host/"]
    notifier = Notifier(NotifyConfig(urls=urls), run, warnings.append, environ={"TOKEN": SECRET})
    notifier(EndEvent(reason="completed", step=3))
    assert len(warnings) == 3, warnings
    unreadable, unset, unsent = warnings
    assert unreadable.startswith("notify.urls[1]: apprise cannot read 'nosuchservice://${TOKEN}'")
    assert unset.startswith("notify.urls[2]: environment variable UNSET_VAR is not set")
    assert unsent.startswith("notify.urls[0]: the finished notification to json://user:****@127.0.0.1")
    assert not any(SECRET in warning for warning in warnings)


def test_a_token_written_into_a_url_is_a_warning_that_does_not_repeat_it(tmp_path: Path, server):
    from tui_trainer.train.notify import Notifier

    port, received = server
    run = create_run_dir(tmp_path / "ws", "tiny", "")
    warnings: list[str] = []
    Notifier(NotifyConfig(urls=[f"json://user:{SECRET}@127.0.0.1:{port}/", f"json://127.0.0.1:{port}/"]), run, warnings.append, environ={})
    (warning,) = warnings
    assert warning.startswith("notify.urls[0] (json://user:****@127.0.0.1") and "write ${NAME} in its place" in warning
    assert SECRET not in warning


@pytest.mark.slow
def test_a_trained_run_notifies_its_finish_and_keeps_the_secret_out_of_its_folder(
    tiny_sd15: Path, tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch,
):
    from tui_trainer.devkit.datasets import make_dataset
    from tui_trainer.train.entry import train_file

    port, received = server
    monkeypatch.setenv("HOOK_TOKEN", SECRET)
    data = make_dataset(tmp_path / "data", ((64, 64, 4),))
    urls = f'urls = ["json://trainer:${{HOOK_TOKEN}}@127.0.0.1:{port}/done", "json://trainer:${{HOOK_TOKEN}}@127.0.0.1:{closed_port()}/"]'
    path = write_config(tmp_path, tiny_sd15, data, notify=urls, training='resolution = "64"\nbatch_size = 2\nmax_steps = 2\n'
                        "gradient_checkpointing = false\ndataloader_workers = 0\ntensorboard = false")
    code, run = train_file(path)
    assert code == 0
    (request_path, headers, body), = received.requests
    assert request_path == "/done" and basic_password(headers) == SECRET  # filled in from the environment to send
    assert body["title"] == f"tui-trainer: {run.name} finished" and body["type"] == "success"
    assert body["message"].startswith(f"{run.name} finished at step 2.")
    warnings = [event.message for event in read_events(run.events_file) if isinstance(event, WarningEvent)]
    assert any(message.startswith("notify.urls[1]: the finished notification") for message in warnings), warnings
    for file in run.path.rglob("*"):
        if file.is_file():
            assert SECRET.encode() not in file.read_bytes(), file
    assert "${HOOK_TOKEN}" in run.config_file.read_text()
