"""The README's quick start stays true: CI runs exactly its test command."""

from pathlib import Path

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
