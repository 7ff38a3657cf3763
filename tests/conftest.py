import pytest
import torch


@pytest.fixture(scope="session")
def wrn50():
    """wide_resnet50_2 with seeded random weights: the shapes are what matter."""
    from pcnotes.backbone import load_backbone

    model, weights = load_backbone("wide_resnet50_2", "random", seed=0)
    assert weights.kind == "random"
    return model


@pytest.fixture(scope="session")
def two_images():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 224, 224, generator=generator)
