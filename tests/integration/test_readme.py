"""The README's scenario example is real: it runs and its expectations hold."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from aftersales.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_scenario_runs_and_every_expectation_holds(tmp_path: Path) -> None:
    block = re.search(r"```yaml\n(# seller-silence.yaml\n.*?)```", README.read_text(), re.S)
    assert block is not None, "README lost its scenario example"
    path = tmp_path / "seller-silence.yaml"
    path.write_text(block.group(1))
    result = CliRunner().invoke(app, ["scenario", "run", str(path)])
    assert result.exit_code == 0, result.output
    assert "every expectation holds" in result.output
    assert "rules RF-1, RF-5" in result.output
