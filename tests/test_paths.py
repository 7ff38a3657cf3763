"""Paths in messages and outputs: relative to the repository, never this machine's."""

from pathlib import Path

import pytest
import torch

from pcnotes.stages.s1_features import MOBILENET_WEIGHTS, LoadedWeights, load_backbone
from pcnotes.util.paths import REPO_ROOT, display_path


def test_a_path_inside_the_repository_is_shown_relative_to_it():
    assert display_path(REPO_ROOT / "data" / "synthetic") == "data/synthetic"
    assert display_path(REPO_ROOT / "notebooks" / ".." / "data") == "data"
    assert str(LoadedWeights("imagenet", str(MOBILENET_WEIGHTS))) == (
        "imagenet (pcnotes/data/weights/mobilenet_v2_imagenet_features.pt)")


def test_a_path_under_home_is_shown_with_a_tilde_and_any_other_path_unchanged(tmp_path, monkeypatch):
    home = tmp_path / "someone"
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: home))
    assert display_path(home / ".cache" / "torch" / "x.pth") == "~/.cache/torch/x.pth"
    assert display_path(tmp_path / "elsewhere" / "x.pth") == str(tmp_path / "elsewhere" / "x.pth")
    assert str(LoadedWeights("random", "torch.manual_seed(3)")) == "random (torch.manual_seed(3))"


def test_a_failed_download_prints_nothing_and_says_where_the_file_goes(tmp_path, monkeypatch, capsys):
    home = tmp_path / "someone"
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: home))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(home / ".cache" / "torch" / "hub"))

    def announce_then_fail(url, *args, **kwargs):
        print(f'Downloading: "{url}" to {home}/.cache/torch/hub/checkpoints/x.pth')  # as torch.hub does
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", announce_then_fail)
    with pytest.raises(RuntimeError) as error:
        load_backbone("resnet18", "imagenet")
    printed = capsys.readouterr()
    assert printed.out == printed.err == ""
    assert "(~/.cache/torch/hub/checkpoints/resnet18-" in str(error.value)
    assert str(home) not in str(error.value)


def test_results_file_reads_the_clones_results_else_the_installed_copy(tmp_path, monkeypatch):
    from pcnotes.util import paths

    assert paths.results_file("coreset.json") == REPO_ROOT / "benchmarks" / "results" / "coreset.json"
    assert paths.results_dir() == REPO_ROOT / "benchmarks" / "results"
    assert paths.course_notebooks() == REPO_ROOT / "notebooks"
    with pytest.raises(FileNotFoundError, match="no benchmark results file 'nothing.json' in benchmarks/results"):
        paths.results_file("nothing.json")

    shipped = tmp_path / "pcnotes" / "course"
    (shipped / "results").mkdir(parents=True)
    (shipped / "results" / "coreset.json").write_text("{}")
    monkeypatch.setattr(paths, "REPO_ROOT", None)  # as installed from the wheel
    monkeypatch.setattr(paths, "_SHIPPED_RESULTS", shipped / "results")
    monkeypatch.setattr(paths, "_SHIPPED_NOTEBOOKS", shipped / "notebooks")
    assert paths.results_file("coreset.json") == shipped / "results" / "coreset.json"
    with pytest.raises(FileNotFoundError, match="'real_data_photos.json'"):
        paths.results_file("real_data_photos.json")
    with pytest.raises(FileNotFoundError, match="the course notebooks are not in this pcnotes"):
        paths.course_notebooks()
