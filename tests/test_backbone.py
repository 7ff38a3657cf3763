import hashlib

import pytest
import torch

from pcnotes.stages import s1_features as bb
from pcnotes.stages.s1_features import FeatureExtractor, load_backbone


@pytest.mark.slow
def test_wide_resnet50_2_layer_shapes_match_the_seed_table(wrn50, two_images):
    features = FeatureExtractor(wrn50, ["layer2", "layer3"])(two_images)
    assert list(features) == ["layer2", "layer3"]
    assert features["layer2"].shape == (2, 512, 28, 28)
    assert features["layer3"].shape == (2, 1024, 14, 14)


def test_forward_stops_after_last_requested_layer_and_hooks_are_removed(wrn50, two_images):
    ran = []
    spy = wrn50.layer4.register_forward_hook(lambda *_: ran.append("layer4"))
    try:
        extractor = FeatureExtractor(wrn50, ["layer2", "layer3"])
        extractor(two_images[:1])
        assert ran == []  # layer4 never ran
        assert not wrn50.layer2._forward_hooks and not wrn50.layer3._forward_hooks
    finally:
        spy.remove()


def test_hooks_are_removed_even_when_the_forward_pass_fails(wrn50):
    def explode(*_):
        raise RuntimeError("boom in layer3")

    failing = wrn50.layer3.register_forward_pre_hook(explode)
    try:
        extractor = FeatureExtractor(wrn50, ["layer2", "layer3"])
        with pytest.raises(RuntimeError, match="boom"):
            extractor(torch.zeros(1, 3, 64, 64))
    finally:
        failing.remove()
    assert not wrn50.layer2._forward_hooks and not wrn50.layer3._forward_hooks


@pytest.mark.slow
def test_hooked_features_equal_a_manual_forward(two_images):
    model, _ = load_backbone("resnet18", "random", seed=1)
    features = FeatureExtractor(model, ["layer2", "layer3"])(two_images)
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(two_images))))
        layer2 = model.layer2(model.layer1(x))
        layer3 = model.layer3(layer2)
    assert torch.equal(features["layer2"], layer2) and torch.equal(features["layer3"], layer3)
    assert features["layer2"].shape == (2, 128, 28, 28) and features["layer3"].shape == (2, 256, 14, 14)


@pytest.mark.slow
def test_mobilenet_v2_ships_imagenet_weights_and_strides_8_and_16(two_images):
    model, weights = load_backbone("mobilenet_v2")
    assert weights.kind == "imagenet" and weights.source.endswith("mobilenet_v2_imagenet_features.pt")
    shipped = torch.load(bb.MOBILENET_WEIGHTS, weights_only=True)
    assert torch.equal(model.state_dict()["features.0.0.weight"], shipped["features.0.0.weight"])
    features = FeatureExtractor(model, bb.DEFAULT_LAYERS["mobilenet_v2"])(two_images)
    assert features["features.6"].shape == (2, 32, 28, 28)
    assert features["features.13"].shape == (2, 96, 14, 14)


def test_shipped_weights_checksum_mismatch_is_a_clear_error(tmp_path, monkeypatch):
    fake = tmp_path / "mobilenet_v2_imagenet_features.pt"
    fake.write_bytes(b"not the weights")
    monkeypatch.setattr(bb, "MOBILENET_WEIGHTS", fake)
    with pytest.raises(ValueError, match=r"sha256 is .* expected"):
        load_backbone("mobilenet_v2")
    assert hashlib.sha256(b"not the weights").hexdigest() in str(
        pytest.raises(ValueError, load_backbone, "mobilenet_v2").value
    )


def test_random_weights_are_seeded_and_say_so():
    a, wa = load_backbone("resnet18", "random", seed=3)
    b, _ = load_backbone("resnet18", "random", seed=3)
    c, _ = load_backbone("resnet18", "random", seed=4)
    assert str(wa) == "random (torch.manual_seed(3))"
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_imagenet_resnet_without_cache_or_network_raises_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(RuntimeError) as error:
        load_backbone("wide_resnet50_2", "imagenet")
    message = str(error.value)
    assert str(tmp_path / "checkpoints") in message and "download" in message
    assert "weights='random'" in message


def test_weights_from_a_state_dict_file(tmp_path):
    model, _ = load_backbone("resnet18", "random", seed=5)
    path = tmp_path / "r18.pt"
    torch.save(model.state_dict(), path)
    loaded, weights = load_backbone("resnet18", str(path))
    assert weights.kind == "file" and torch.equal(loaded.conv1.weight, model.conv1.weight)


@pytest.mark.parametrize("name, weights, message", [
    ("vgg16", "random", "unknown backbone"),
    ("resnet18", "imagenet-v9", "weights must be"),
])
def test_bad_backbone_arguments(name, weights, message):
    with pytest.raises(ValueError, match=message):
        load_backbone(name, weights)


def test_unknown_layer_and_wrong_rank(wrn50):
    with pytest.raises(ValueError, match="unknown layer"):
        FeatureExtractor(wrn50, ["layer9"])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        FeatureExtractor(wrn50, ["layer2"])(torch.zeros(3, 224, 224))
