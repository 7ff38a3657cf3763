"""The project's own invariants: packaging files that must agree."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name where they differ


def split_requirement(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", requirement.strip()).groups()
    return name.lower(), spec.replace(" ", "")


def conda_dependencies(name: str) -> dict[str, str]:
    conda = {}
    for line in (ROOT / name).read_text().splitlines():
        item = re.match(r"^  - ([A-Za-z0-9_.\-]+)([^#]*)", line)
        if item:
            conda[item.group(1).lower()] = item.group(2).replace(" ", "")
    return conda


def test_environment_ymls_list_every_runtime_dependency_with_the_same_range():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for name in ("environment.yml", "environment-dev.yml"):
        conda = conda_dependencies(name)
        missing = []
        for requirement in pyproject["project"]["dependencies"]:
            package, spec = split_requirement(requirement)
            conda_name = CONDA_NAMES.get(package, package)
            if conda.get(conda_name) != spec:
                missing.append(f"{conda_name}{spec} ({name} has {conda.get(conda_name)!r})")
        assert not missing, f"{name} is out of step with pyproject.toml: {missing}"
    assert "-e .[dev]" in (ROOT / "environment-dev.yml").read_text()


def test_the_class_environment_installs_pcnotes_and_jupyter_but_no_dev_tools():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"^      - -e \.(\s|$)", text, re.M)  # pcnotes from the clone, without [dev]
    assert {"jupyterlab", "ipykernel"} <= set(conda_dependencies("environment.yml"))
    body = "\n".join(line.split("#")[0] for line in text.splitlines())  # without the comments
    for tool in ("playwright", "sphinx", "pytest", "[dev]"):
        assert tool not in body, tool


def test_the_repository_url_is_one_constant():
    from pcnotes.util.paths import REPOSITORY

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["urls"]["Repository"] == REPOSITORY
    readme = (ROOT / "README.md").read_text()
    owner_repo = REPOSITORY.removeprefix("https://github.com/")
    colab = re.findall(r"https://colab\.research\.google\.com/github/([^)\s]+)", readme)
    assert colab, "README.md has no Open-in-Colab links"
    for link in colab:
        assert link.startswith(f"{owner_repo}/blob/main/notebooks/"), link
        assert (ROOT / link.split("/blob/main/", 1)[1]).is_file(), link
    binder = (ROOT / "binder" / "requirements.txt").read_text()
    assert "download.pytorch.org/whl/cpu" in binder


def test_pyproject_admits_the_torch_this_machine_installs():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    specs = dict(split_requirement(r) for r in pyproject["project"]["dependencies"])
    from packaging.specifiers import SpecifierSet

    assert "2.14.1" in SpecifierSet(specs["torch"])
    assert "0.29.1" in SpecifierSet(specs["torchvision"])
    assert "torch==2.14.1 torchvision==0.29.1" in (ROOT / "Makefile").read_text()
