"""tools/wordcount.py counts the core notebooks' markdown words and holds them to a budget."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def count(directory: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "wordcount.py"), str(directory), *extra],
                          capture_output=True, text=True)


@pytest.mark.slow
def test_words_of_core_markdown_only_are_counted_and_held_to_the_budget(tmp_path):
    (tmp_path / "01_a.py").write_text(
        "# %% [markdown]\n# # One title\n#\n# | a | b |\n# |---|---|\n# * five words — here, really.\n"
        "\n# %%\nprint('code words do not count at all')\n", encoding="utf-8")  # jupytext reads UTF-8
    (tmp_path / "02_b.py").write_text("# %% [markdown]\n# Two words\n")
    (tmp_path / "deeper").mkdir()
    (tmp_path / "deeper" / "01_detail.py").write_text("# %% [markdown]\n# " + "deep " * 50 + "\n")

    result = count(tmp_path)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    # "One title" + "a b" + "five words here, really." = 2 + 2 + 4; "#", "|", "---", "*" and "—" are no words
    assert lines[0].split() == ["8", "01_a"] and lines[1].split() == ["2", "02_b"]
    assert lines[2].split()[0] == "10"

    assert count(tmp_path, "--max", "10").returncode == 0
    over = count(tmp_path, "--max", "9")
    assert over.returncode == 1 and "1 words over the budget of 9" in over.stderr
