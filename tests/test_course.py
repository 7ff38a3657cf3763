"""The course documents agree with the code: the plan, the exercises, the glossary, the pasted output."""

import re
from pathlib import Path

import jupytext
import pytest
import torch.nn.functional as F

from pcnotes import course as exercises

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "teachers_guide.md").read_text(encoding="utf-8")
CHEATSHEET = (ROOT / "docs" / "cheatsheet.md").read_text(encoding="utf-8")
CONVENTIONS = (ROOT / "notebooks" / "README.md").read_text(encoding="utf-8")
CORE = ["00_setup", "01_layer_hooks", "02_locally_aware_patches", "03_coreset", "04_scoring_and_heatmaps",
        "05_evaluation", "06_coreset_explorer"]


def table_rows(text: str, first_cell: str) -> list[list[str]]:
    """The rows of the markdown table whose header starts with ``first_cell``, as lists of cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_cell} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_the_readme_links_the_guide_and_the_guide_links_the_cheatsheet():
    assert "(docs/teachers_guide.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(cheatsheet.md)" in GUIDE and "(../docs/teachers_guide.md)" in CONVENTIONS


def test_the_plan_covers_the_core_notebooks_in_order_in_90_minutes():
    rows = table_rows(GUIDE, "clock")
    assert [row[2].split(" · ")[0] for row in rows] == [name[:2] for name in CORE]
    minutes = [int(row[1]) for row in rows]
    assert sum(minutes) == 90
    clock = 0
    for row, length in zip(rows, minutes):  # each block starts where the previous one ended
        assert row[0] == f"{clock // 60}:{clock % 60:02d}"
        clock += length
    for row, length in zip(rows, minutes):  # and its section says the same minutes
        number, title = row[2].split(" · ")
        assert f"\n### {row[0]} · {number} {title} ({length} min)\n" in GUIDE


def test_every_checker_is_in_the_guide_and_the_conventions_with_its_notebook():
    guide = {row[2].strip("`"): row[1] for row in table_rows(GUIDE, "exercise")}
    conventions = {row[1].strip("`"): row[0] for row in table_rows(CONVENTIONS, "notebook")}
    for name, (checker, notebook) in exercises.CHECKERS.items():
        assert guide[checker.__name__] == notebook[:2], name
        assert conventions[checker.__name__] == notebook[:2], name
    in_class = re.findall(r"\*\*([^*]+)\*\*", " ".join(row[3] for row in table_rows(GUIDE, "clock")))
    assert len(in_class) >= 6  # the issue asks for at least six exercises in the core path


def test_checker_calls_in_the_notebooks_sit_where_the_checkers_say():
    for stem in CORE:
        for cell in jupytext.read(ROOT / "notebooks" / f"{stem}.py").cells:
            for name in re.findall(r"course\.(check_\w+)\(", cell.source):
                checker = getattr(exercises, name)
                assert any(c is checker and notebook == stem for c, notebook in exercises.CHECKERS.values()), \
                    f"{stem} calls {name}, which pcnotes.course.CHECKERS puts elsewhere"


def test_the_cheatsheet_defines_every_glossary_term():
    for term in ["Memory bank", "Patch", "Locally aware feature", "Mean mapper", "Aggregator", "Coreset",
                 "k-center", "Coverage radius", "AUROC", "PRO / AUPRO"]:
        assert f"- **{term}.**" in CHEATSHEET, term
    assert "**Eq. 6" in CHEATSHEET and "**Eq. 7" in CHEATSHEET


def test_the_pasted_wrong_answer_is_what_the_checker_prints(capsys):
    def patchify_without_padding(features, patch_size):
        batch, channels = features.shape[:2]
        columns = F.unfold(features, kernel_size=patch_size)
        return columns.reshape(batch, channels, patch_size, patch_size, -1).permute(0, 4, 1, 2, 3)

    assert not exercises.check_patchify(patchify_without_padding)
    printed = capsys.readouterr().out.strip()
    assert f"```text\n{printed}\n```" in GUIDE


def shape(tensor) -> str:
    return f"`{tuple(tensor.shape)}`"


@pytest.mark.slow  # two backbones, wide_resnet50_2 with random weights: seconds
def test_the_cheatsheet_shapes_are_those_of_the_code():
    import torch

    from pcnotes.stages import DEFAULT_LAYERS, FeatureExtractor, load_backbone
    from pcnotes.stages.s2_patches import patchify
    from pcnotes.stages.s3_align import align_patches
    from pcnotes.stages.s4_mean_mapped import aggregate, mean_map
    from pcnotes.stages.s4_pooled_concat import pooled_concat

    features_row = table_rows(CHEATSHEET, "stage (module in `pcnotes/stages/`)")[0]
    mean_mapped = table_rows(CHEATSHEET, "`mean_mapped`: the paper's, wide_resnet50_2's default")
    pooled = table_rows(CHEATSHEET, "`pooled_concat`: mobilenet_v2's default")[0]
    images = torch.zeros(2, 3, 224, 224)
    for column, name in [(2, "wide_resnet50_2"), (3, "mobilenet_v2")]:
        backbone, _ = load_backbone(name, weights="random", seed=0)
        first, second = FeatureExtractor(backbone, DEFAULT_LAYERS[name])(images).values()
        assert features_row[column] == f"{shape(first)}, {shape(second)}", name
        unfolded = F.unfold(first, kernel_size=3, padding=1)
        (patches, grid), (coarse, coarse_grid) = patchify(first, 3), patchify(second, 3)
        aligned = align_patches(coarse, coarse_grid, grid)
        mapped = [mean_map(p.reshape(-1, *p.shape[2:]), 1024) for p in (patches, aligned)]
        stacked = torch.stack(mapped, dim=1)
        assert [row[column] for row in mean_mapped] == [
            f"`unfold` {shape(unfolded)} → {shape(patches)}",
            f"{shape(coarse)} → {shape(aligned)}",
            f"each layer {shape(mapped[0])}",
            f"{shape(stacked)} → {shape(aggregate(stacked, 1024))}",
        ], name
        concatenated, _ = pooled_concat([first, second])
        assert pooled[column] == f"{shape(concatenated)}: {first.shape[1]} + {second.shape[1]}", name
