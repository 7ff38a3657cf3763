"""The project's own invariants: packaging files that must agree."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name where they differ


def split_requirement(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", requirement.strip()).groups()
    return name.lower(), spec.replace(" ", "")


def test_environment_yml_lists_every_runtime_dependency_with_the_same_range():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    conda = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        item = re.match(r"^  - ([A-Za-z0-9_.\-]+)(.*)$", line)
        if item:
            conda[item.group(1).lower()] = item.group(2).replace(" ", "")
    missing = []
    for requirement in pyproject["project"]["dependencies"]:
        name, spec = split_requirement(requirement)
        conda_name = CONDA_NAMES.get(name, name)
        if conda.get(conda_name) != spec:
            missing.append(f"{conda_name}{spec} (environment.yml has {conda.get(conda_name)!r})")
    assert not missing, f"environment.yml is out of step with pyproject.toml: {missing}"
    assert "-e .[dev]" in (ROOT / "environment.yml").read_text()


def test_pyproject_admits_the_torch_this_machine_installs():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    specs = dict(split_requirement(r) for r in pyproject["project"]["dependencies"])
    from packaging.specifiers import SpecifierSet

    assert "2.14.1" in SpecifierSet(specs["torch"])
    assert "0.29.1" in SpecifierSet(specs["torchvision"])
    assert "torch==2.14.1 torchvision==0.29.1" in (ROOT / "Makefile").read_text()
