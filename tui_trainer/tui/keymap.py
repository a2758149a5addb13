"""User key remapping: a TOML file of `binding-id = "keys"` in the user's config dir (platformdirs)."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable
from pathlib import Path

from textual.binding import Binding
from textual.dom import DOMNode

KEYMAP_FILE = "keymap.toml"

KEYMAP_HELP = """\
# tui-trainer keymap: binding id = "keys" (comma-separated). Ids are listed in the command palette (ctrl+p).
# save = "ctrl+s,f2"
"""


def binding_ids(classes: Iterable[type[DOMNode]]) -> dict[str, str]:
    """Binding id -> description, for every binding with an id on the given widget/screen/app classes."""
    ids: dict[str, str] = {}
    for cls in classes:
        for binding in cls.BINDINGS:
            if isinstance(binding, Binding) and binding.id:
                ids[binding.id] = binding.description or binding.action
    return ids


def load_keymap(path: Path, known: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """The keymap in `path` (missing file = empty) and a list of problems (bad TOML, unknown ids, bad values)."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, []
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        return {}, [f"{path}: cannot read keymap: {error}"]
    known = sorted(known)
    keymap: dict[str, str] = {}
    problems: list[str] = []
    for binding_id, keys in document.items():
        if binding_id not in known:
            close = difflib.get_close_matches(binding_id, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known ids: {', '.join(known)}"
            problems.append(f"{path}: unknown binding id {binding_id!r}{hint}")
        elif not isinstance(keys, str) or not keys.strip():
            problems.append(f"{path}: {binding_id}: expected keys as a string like \"ctrl+s,f2\"")
        else:
            keymap[binding_id] = keys
    return keymap, problems
