"""Stage 1: a pretrained backbone and forward hooks on its middle layers.

PatchCore never trains the network. It borrows the feature maps of two
*middle* layers of an ImageNet classifier: early layers only see edges and
are too generic, the last layers are biased towards ImageNet's classes. For a
ResNet these are ``layer2`` (stride 8) and ``layer3`` (stride 16)::

    images (B, 3, 224, 224)
      -> {"layer2": (B, 512, 28, 28), "layer3": (B, 1024, 14, 14)}   # wide_resnet50_2

We read those maps with forward hooks and stop the forward pass as soon as the
last requested layer has run, so ``layer4`` and the classifier are never
computed.

Weights are always named explicitly:

- ``"imagenet"`` loads ImageNet weights. For ``mobilenet_v2`` they ship with
  this project (``data/mobilenet_v2_imagenet_features.pt``, checked by
  sha256), so it works offline. For the ResNets they come from torchvision's
  cache or download; if neither works we raise, we never fall back.
- ``"random"`` gives seeded random weights, only when asked for.
- a path to a ``state_dict`` file loads that file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
import torchvision
from torch import nn

from pcnotes.util.paths import display_path

#: The shipped ImageNet weights: package data (pcnotes/data/weights/, with their
#: PROVENANCE.md), so an installed pcnotes finds them as a clone does.
MOBILENET_WEIGHTS = Path(str(resources.files("pcnotes") / "data" / "weights" / "mobilenet_v2_imagenet_features.pt"))
MOBILENET_SHA256 = "7214ce7a2d9f4cc1f7712172a032fe6329799f2b4ecc2ea14beeb6b65339f9ce"

# The two layers each backbone contributes: one at stride 8, one at stride 16.
# For mobilenet_v2, features.6 ends the last stride-8 stage (32 channels, 28x28)
# and features.13 the last stride-16 stage (96 channels, 14x14), mirroring the
# paper's layer2 + layer3. benchmarks/mobilenet_layers.py measures the
# alternatives (notebooks/deeper/01_layer_choice compares them): on the embedded
# data the stride-8 pairs beat the coarser stride-16 pairs on AUPRO.
DEFAULT_LAYERS: dict[str, tuple[str, ...]] = {
    "mobilenet_v2": ("features.6", "features.13"),
    "wide_resnet50_2": ("layer2", "layer3"),
    "resnet18": ("layer2", "layer3"),
}

_TORCHVISION_WEIGHTS = {
    "wide_resnet50_2": "Wide_ResNet50_2_Weights",
    "resnet18": "ResNet18_Weights",
}


@dataclass(frozen=True)
class LoadedWeights:
    """Which weights a backbone holds, in words a person can check."""

    kind: str  # "imagenet", "random" or "file"
    source: str  # a path, a URL or the seed

    def __str__(self) -> str:
        # Paths are shown relative to the repository (or ~), not as on this machine.
        source = display_path(self.source) if self.kind != "random" else self.source
        return f"{self.kind} ({source})"


def sha256sum(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_backbone(
    name: str = "mobilenet_v2", weights: str = "imagenet", *, seed: int = 0
) -> tuple[nn.Module, LoadedWeights]:
    """Build a torchvision backbone in eval mode and say which weights it holds.

    ``weights`` is ``"imagenet"``, ``"random"`` (initialised under ``seed``, so
    a saved model can rebuild the same network) or a path to a state_dict.
    """
    if name not in DEFAULT_LAYERS:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(DEFAULT_LAYERS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(torchvision.models, name)(weights=None)

    if weights == "random":
        loaded = LoadedWeights("random", f"torch.manual_seed({seed})")
    elif weights == "imagenet" and name == "mobilenet_v2":
        loaded = _load_file(model, MOBILENET_WEIGHTS, expected_sha256=MOBILENET_SHA256)
        loaded = LoadedWeights("imagenet", loaded.source)
    elif weights == "imagenet":
        loaded = _load_torchvision_imagenet(model, name)
    elif Path(weights).is_file():
        loaded = _load_file(model, Path(weights))
    else:
        raise ValueError(
            f"weights must be 'imagenet', 'random' or an existing state_dict file; got {weights!r}"
        )
    return model.eval(), loaded


def _load_file(model: nn.Module, path: Path, expected_sha256: str | None = None) -> LoadedWeights:
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights not found: {path}")
    if expected_sha256 is not None:
        actual = sha256sum(path)
        if actual != expected_sha256:
            raise ValueError(
                f"{path}: sha256 is {actual}, expected {expected_sha256}; "
                "the file is corrupt or was replaced (see data/README.md to rebuild it)"
            )
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols: we report the outcome
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError, EOFError ...: never run the pickle
        raise ValueError(
            f"{path}: not a state_dict file that torch.load(weights_only=True) can read "
            f"({type(error).__name__}); save one with torch.save(model.state_dict(), path)"
        ) from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state_dict (a dict of tensors); "
                         "save one with torch.save(model.state_dict(), path)")
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A features-only file may lack the classifier head, which we never run.
    missing = [key for key in missing if not key.startswith(("classifier.", "fc."))]
    if missing or unexpected:
        raise ValueError(
            f"{path}: does not fit {type(model).__name__}: "
            f"missing {missing[:3]}..., unexpected {unexpected[:3]}..."
        )
    return LoadedWeights("file", str(path))


def _load_torchvision_imagenet(model: nn.Module, name: str) -> LoadedWeights:
    weights = getattr(torchvision.models, _TORCHVISION_WEIGHTS[name]).IMAGENET1K_V1
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    try:
        # torch.hub announces every download ("Downloading: <url> to <path>", on
        # stdout or stderr by version): keep that machine-specific line out of
        # notebooks and logs. A failure is reported below, with the path to use.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            state = torch.hub.load_state_dict_from_url(
                weights.url, progress=False, check_hash=True, weights_only=True
            )
    except Exception as error:  # no network, a truncated download, ...
        raise RuntimeError(
            f"ImageNet weights for {name} are not in the torch cache "
            f"({display_path(cached)}) and could not be downloaded "
            f"({type(error).__name__}: {error}). On a machine with internet, download "
            f"{weights.url} and copy it to {display_path(cached)}; or pass "
            "weights='random' to use random weights on purpose."
        ) from error
    model.load_state_dict(state)
    return LoadedWeights("imagenet", str(cached))


def feature_layers(backbone: nn.Module) -> list[str]:
    """The layers whose outputs are spatial feature maps ``(B, C, H, W)``, in forward order.

    The blocks of ``features`` for MobileNet (``features.0`` ... ``features.18``),
    ``layer1`` ... ``layer4`` for the ResNets; the classifier's layers give
    ``(B, classes)`` and cannot be cut into patches.
    """
    if hasattr(backbone, "features"):
        return [f"features.{name}" for name, _ in backbone.features.named_children()]
    return [name for name, _ in backbone.named_children() if name.startswith("layer")]


class _LastLayerDone(Exception):
    """Raised inside a hook to end the forward pass early."""


class FeatureExtractor(nn.Module):
    """Forward hooks that return the feature maps of named layers.

    ``(B, 3, H, W) -> {layer: (B, C_l, H_l, W_l)}``. The forward pass stops once
    every requested layer has produced its output, and the hooks are removed
    again whatever happens.
    """

    def __init__(self, backbone: nn.Module, layers: tuple[str, ...] | list[str]):
        super().__init__()
        modules = dict(backbone.named_modules())
        unknown = [layer for layer in layers if layer not in modules]
        if unknown:
            raise ValueError(f"unknown layer(s) {unknown}; e.g. {list(modules)[1:6]}")
        if not layers:
            raise ValueError("request at least one layer")
        self.backbone = backbone.eval()
        self.layers = tuple(layers)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        outputs: dict[str, torch.Tensor] = {}
        modules = dict(self.backbone.named_modules())

        def keep(name):
            def hook(_module, _inputs, output):
                outputs[name] = output
                if len(outputs) == len(self.layers):
                    raise _LastLayerDone

            return hook

        handles = [modules[name].register_forward_hook(keep(name)) for name in self.layers]
        try:
            self.backbone(images)
        except _LastLayerDone:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return {name: outputs[name] for name in self.layers}
