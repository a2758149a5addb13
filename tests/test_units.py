"""The shared units: GiB and how durations are written."""

from __future__ import annotations

import pytest

from tui_trainer.units import GIB, format_duration


def test_gib_is_two_to_the_thirtieth():
    assert GIB == 1024 * 1024 * 1024


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "?"), (0, "0:00:00"), (0.4, "0:00:00"), (59.6, "0:01:00"), (61, "0:01:01"), (3599, "0:59:59"),
    (3600, "1:00:00"), (36 * 3600 + 5 * 60 + 7, "36:05:07"), (-5, "0:00:00"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
