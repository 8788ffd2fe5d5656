"""The README stays true: CI runs exactly its quick start's test command, and the training-option
table names every `submit-train` option with the default the code uses."""

import re
from pathlib import Path

import typer

from digitq.client.cli import app
from digitq.common.schemas import default_text

REPO = Path(__file__).resolve().parents[2]


def _bash_blocks(text: str) -> list[str]:
    blocks, inside, cur = [], False, []
    for line in text.splitlines():
        if line.strip() == "```bash":
            inside, cur = True, []
        elif line.strip() == "```" and inside:
            inside = False
            blocks.append("\n".join(cur).strip())
        elif inside:
            cur.append(line)
    return blocks


def test_ci_runs_exactly_the_readme_test_command():
    quick = _bash_blocks((REPO / "README.md").read_text().split("## Quick start", 1)[1])
    train_cmd, test_cmd = quick[0], quick[1]
    assert "digitq submit-train" in train_cmd and "pip install" in train_cmd
    assert "pytest" in test_cmd
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert test_cmd in ci_lines


# --- the training-option table ------------------------------------------------------------------

CLI_ONLY = {"--wait", "--json", "--timeout", "--help"}
"""submit-train options about the command itself, not the job: the CLI reference covers them."""

RENAMED = {"lr": "learning_rate", "save_every": "save_every_batches"}
"""submit-train parameters whose TrainRequest field has another name."""


def _option_table() -> dict[str, str]:
    """The README's training-option table: {flag: default cell}, backticks removed."""
    text = (REPO / "README.md").read_text().split("Training options (", 1)[1]
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| `--"))
    rows = {}
    for line in lines[start:]:
        if not line.startswith("| `--"):
            break
        option, default = [cell.strip() for cell in line.strip("|").split(" | ")[:2]]
        for flag in re.findall(r"`(--[a-z-]+)(?:/--[a-z-]+)?(?: [A-Z]+)?`", option):
            rows[flag] = default.replace("`", "")
    return rows


def _expected_default(param) -> str:
    """What the table must say for one of submit-train's parameters."""
    if param.default is None:
        return default_text(RENAMED.get(param.name, param.name))
    if isinstance(param.default, bool):
        return "on" if param.default else "off"
    return str(param.default)


def test_the_option_table_lists_every_training_option_with_its_real_default():
    command = typer.main.get_command(app).commands["submit-train"]
    params = {param.opts[0]: param for param in command.params if param.opts[0] not in CLI_ONLY}
    table = _option_table()
    assert sorted(table) == sorted(params)
    for flag, param in params.items():
        assert table[flag] == _expected_default(param), flag
