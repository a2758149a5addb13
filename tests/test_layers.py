"""The import contracts of pyproject.toml's [tool.importlinter] hold: core and runs free of torch and textual,
tui and train apart, each layer importing only the ones below it, no import cycles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
"""import-linter's command, installed beside this interpreter by the `test` extra."""


def test_import_contracts_are_kept():
    result = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
