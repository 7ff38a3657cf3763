"""tools/checker_lines.py: every wrong answer issue 19 lists gets a line that names its mistake."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: the words that name each mistake (the tool's wrong answers are written apart from the checkers' lists)
NAMED = {
    "image score: the mean of the top 10 % of patch scores": "you averaged the 6 largest patch scores of each image",
    "patchify: reflect padding": "you padded with mode='reflect'",
    "align: target H and W swapped": "the target's height and width are swapped",
    "mean mapper: a fixed-kernel avg_pool1d": "F.avg_pool1d with a fixed window (kernel_size=4, stride=4)",
    "aggregator: the layers summed instead of pooled": "you summed the layers",
    "coreset size: N // round(1 / ratio)": "you divided N by round(1 / ratio) = 3",
    "image score: the mean over k = 3 neighbours": "averages the distances to the 3 nearest bank entries",
    "eq. 7: m* among its b neighbours (anomalib)": "m* counted among its b neighbours (anomalib's convention)",
    "eq. 7: the sum over N_b(m*) alone (the paper read literally)": "the paper's eq. 7 read literally",
    "align: bicubic": "you resized with mode='bicubic'",
    "image score: cosine distance": "you measured the cosine distance",
    "image score: L1 distance": "you measured the L1 (Manhattan) distance",
    "greedy k-center: the new pick not folded into the running minimum": "point 29 was already chosen at step 1",
    "patchify: stride p": "you cut the windows with stride=3 (the patch size)",
}


def test_every_wrong_answer_of_the_issue_is_named_in_one_line():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "checker_lines.py"), "--json"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = json.loads(result.stdout)
    assert list(lines) == list(NAMED)
    for label, line in lines.items():
        exercise = label.split(":")[0]
        assert line.startswith(f"✗ {'eq. 7 re-weighting' if exercise == 'eq. 7' else exercise}: "), line
        assert NAMED[label] in line and "\n" not in line, (label, line)
