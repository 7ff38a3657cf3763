"""tools/wordcount.py: the core notebooks' words and minutes, held to a word budget and the guide's blocks."""

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
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    # "One title" + "a b" + "five words here, really." = 2 + 2 + 4; "#", "|", "---", "*" and "—" are no words
    assert rows["01_a"][1] == "8" and rows["02_b"][1] == "2" and set(rows) == {"01_a", "02_b", "all"}
    assert rows["all"][1] == "10"

    assert count(tmp_path, "--max", "10").returncode == 0
    over = count(tmp_path, "--max", "9")
    assert over.returncode == 1 and "1 words over the budget of 9" in over.stderr


GUIDE = """## The plan

| clock | min | notebook | in class | for fast finishers |
| --- | --- | --- | --- | --- |
| 0:00 | {first} | 01 · A | one exercise | one more |
| 0:{first:02d} | {second} | 02 · B | reading | |
"""


def two_notebooks(tmp_path, first: int, second: int, stated: int = 8):
    """01_a: 151 words, 1 in-class exercise, 2 code cells in class, and a fast finishers' section."""
    (tmp_path / "01_a.py").write_text(
        "# %% [markdown]\n# " + "word " * 147 + f"**{stated} minutes**\n#\n# ## Exercise: one\n"  # 147 + 2 + 2
        "\n# %%\nx = 1\n"
        "\n# %% [markdown]\n# ## Exercises for fast finishers: two\n#\n# " + "skip " * 75 + "\n"
        "\n# %%\ny = 2\n\n# %%\nz = 3\n"  # not counted: under the fast finishers' heading
        "\n# %% [markdown]\n# ## After\n\n# %%\nprint(x)\n", encoding="utf-8")
    (tmp_path / "02_b.py").write_text("# %% [markdown]\n# Two words\n")
    guide = tmp_path / "guide.md"
    guide.write_text(GUIDE.format(first=first, second=second), encoding="utf-8")
    return count(tmp_path, "--guide", str(guide))


@pytest.mark.slow
def test_the_timing_model_adds_reading_exercises_and_code_cells_and_holds_each_block(tmp_path):
    result = two_notebooks(tmp_path, 8, 82)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    # 01_a: 147 + "8 minutes" + "Exercise: one" + "After" = 152 words, not the 75 skipped
    words, exercises, code_cells, estimate, block = rows["01_a"][1:6]
    assert (words, exercises, code_cells, block) == ("152", "1", "2", "8")
    assert float(estimate) == round(152 / 150 + 5 * 1 + 0.5 * 2, 1) == 7.0  # 7.01 minutes
    assert "(+1 for fast finishers)" in " ".join(rows["01_a"])
    assert rows["02_b"][1:6] == ["2", "0", "0", "0.0", "82"]
    assert rows["all"][-1] == "90"

    over = two_notebooks(tmp_path, 7, 83, stated=7)  # 7.01 minutes do not fit 7
    assert over.returncode == 1 and "01_a takes 7.0 min (+0 kept) in a 7-min block" in over.stderr
    not_ninety = two_notebooks(tmp_path, 8, 80)
    assert not_ninety.returncode == 1 and "sum to 88 min, not 90" in not_ninety.stderr
    disagree = two_notebooks(tmp_path, 8, 82, stated=10)
    assert disagree.returncode == 1 and "says **10 minutes** under its title" in disagree.stderr
