"""benchmarks/vs_diffusers_example.py: its clock, its rows, how it records them, and the goals run_all checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import run_all  # noqa: E402
import vs_diffusers_example as vs  # noqa: E402

TABLE = "# Benchmarks\n\n| figure | value | reference | ratio | goal | machine |\n|---|---|---|---|---|---|\n"


def test_clock_stamps_every_optimizer_step_of_a_script(tmp_path: Path):
    script = tmp_path / "three_steps.py"
    script.write_text("import torch\np = torch.nn.Parameter(torch.ones(1))\nopt = torch.optim.SGD([p], lr=0.1)\n"
                      "for _ in range(3):\n    p.grad = torch.ones(1)\n    opt.step()\n")
    side = vs.Side("probe", [sys.executable, str(script)])
    timing = vs.timed(side, tmp_path)
    stamps = json.loads((tmp_path / "clock-probe.json").read_text())
    assert len(stamps) == 3 and stamps == sorted(stamps)
    assert 0 < timing.startup_s < 60 and timing.step_s == stamps[2] - stamps[1]


def test_rows_compare_with_the_example_and_only_ours_without_it():
    timings = {"uncached": [vs.Timing(4.0, 0.030)] * 3, "cached": [vs.Timing(4.5, 0.020)] * 3}
    alone = vs.table_rows(timings, 40)
    assert [row.split(" | ")[2:5] for row in alone] == [["example not run", "", "< 5000 ms"], ["example not run", "", ""],
                                                         ["example not run", "", ""]]
    together = vs.table_rows({**timings, "example": [vs.Timing(5.0, 0.040)] * 3}, 40)
    assert [row.split(" | ")[1:5] for row in together] == [
        ["4,000.0 ms", "example 5,000.0 ms", "0.80", "< 5000 ms; <= 0.70"],
        ["30.0 ms/step", "example 40.0 ms/step", "0.75", "<= 0.95"],
        ["20.0 ms/step", "example 40.0 ms/step", "0.50", "<= 0.70"],
    ]
    assert run_all.missed_goals(together) == [together[0].split(" | ")[0][2:].rsplit(" (", 1)[0] + ": 0.80 (goal <= 0.70)"]


def test_record_replaces_its_rows_and_notes_and_keeps_the_rest(tmp_path: Path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(TABLE + "| scan: x | 1 | | | | m |\n| vs diffusers example: old | 9 | | | | m |\n\nNotes.\n")
    vs.record(doc, ["| vs diffusers example: new | 1 | | | | m |"], f"{vs.SECTION_BEGIN}\nfirst\n{vs.SECTION_END}\n")
    vs.record(doc, ["| vs diffusers example: newer | 2 | | | | m |"], f"{vs.SECTION_BEGIN}\nsecond\n{vs.SECTION_END}\n")
    text = doc.read_text()
    assert "| scan: x |" in text and "Notes." in text
    assert "old" not in text and "| vs diffusers example: new |" not in text and "| vs diffusers example: newer |" in text
    assert "first" not in text and text.count(vs.SECTION_BEGIN) == 1 and "second" in text


def test_an_interpreter_without_torchvision_is_named_with_what_to_do():
    probe = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True)
    problem = vs.example_problem(sys.executable)
    if probe.returncode == 0:
        assert problem is None
    else:
        assert problem.startswith(f"{sys.executable} cannot import what the example needs (") and "--example-python" in problem
