"""The configuration of a PatchCore model, and its checking.

:class:`PatchCoreConfig` holds everything that decides what a model computes
(backbone, layers, patch feature, coreset, scoring, image size, seed). It is
saved with the model as JSON, so a saved model always says how it was made;
:meth:`PatchCoreConfig.from_dict` checks every key and type of that JSON
before a model is built from it. A bad value raises :class:`ConfigError`,
whose message starts with the option's name.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass

from pcnotes.stages.s1_features import DEFAULT_LAYERS
from pcnotes.stages.s5_coreset import SAMPLERS, check_ratio
from pcnotes.stages.s6_scoring import BACKENDS, INDEXES

__all__ = ["PatchCoreConfig", "ConfigError", "PATCH_FEATURES", "DEFAULT_PATCH_FEATURE", "MAX_SEED"]

MAX_SEED = 2**32 - 1  # numpy's and torch's seeds both take 0 .. 2**32 - 1 everywhere


class ConfigError(ValueError):
    """A bad configuration value: ``str()`` is ``"<name> <problem>"``, e.g. ``"seed must be ..."``."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name} {problem}")
        self.name, self.problem = name, problem


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _type_problem(value, default) -> str | None:
    """Why a value read from JSON cannot stand for a field whose default is ``default``."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "must be true or false"
    if isinstance(default, int):
        return None if is_int(value) else "must be an integer"
    if isinstance(default, float):
        ok = (is_int(value) or isinstance(value, float)) and math.isfinite(value)
        return None if ok else "must be a finite number"
    if isinstance(default, str):
        return None if isinstance(value, str) else "must be a string"
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or (default and len(value) != len(default)):
            return f"must be a list of {len(default)} numbers" if default else "must be a list of strings"
        for item in value:
            problem = _type_problem(item, default[0] if default else "")
            if problem:
                return "items " + problem.replace("must be a", "must each be a")
    return None


#: The patch features (stage 4): the reference's mean mappers + aggregator
#: (:func:`pcnotes.stages.s4_mean_mapped.embed`) and the pooled channels, concatenated
#: (:func:`pcnotes.stages.s4_pooled_concat.pooled_concat`).
PATCH_FEATURES = ("mean_mapped", "pooled_concat")

#: The patch feature a backbone gets when none is named: pooled_concat for
#: mobilenet_v2, chosen on real photographs (benchmarks/results/real_data_photos.md
#: has the comparison); the ResNets keep the paper's feature.
DEFAULT_PATCH_FEATURE = {
    "mobilenet_v2": "pooled_concat",
    "wide_resnet50_2": "mean_mapped",
    "resnet18": "mean_mapped",
}

#: What a config.json saved before these keys existed was made with (load, from_dict).
_BEFORE_THE_KEYS = {"patch_feature": "mean_mapped", "resize": 256, "crop": 224, "index": "exact"}


@dataclass
class PatchCoreConfig:
    """Everything that decides what a PatchCore model computes; saved with it."""

    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"  # "imagenet", "random" or a state_dict path (stored absolute)
    layers: tuple[str, ...] = ()  # empty: the backbone's stride-8 and stride-16 layers
    patch_feature: str = ""  # "mean_mapped" or "pooled_concat"; empty: the backbone's default
    pretrain_dim: int = 1024  # mean_mapped: mean mapper output per layer
    target_dim: int = 1024  # mean_mapped: aggregator output, the patch feature size D
    patch_size: int = 3
    sampler: str = "approximate_greedy"  # "random", "greedy" or "approximate_greedy"
    coreset_ratio: float = 0.1
    num_neighbors: int = 1  # k
    reweight: int = 0  # b of eq. 7; 0 keeps the plain max score, like the reference
    squared: bool = False  # True: squared L2 scores like the reference code
    knn_backend: str = "faiss"
    index: str = "exact"  # "exact" or "hnsw" (approximate, for big banks: pcnotes.fast.ann)
    sigma: float = 4.0
    resize: int | tuple[int, int] = 256  # int: the shorter side; (H, W): exactly that size
    crop: int | tuple[int, int] | None = 224  # centre crop; None: the whole resized image
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self):
        if self.backbone not in DEFAULT_LAYERS:
            raise ConfigError("backbone", f"must be one of {sorted(DEFAULT_LAYERS)}, got {self.backbone!r}")
        self.layers = tuple(self.layers) or DEFAULT_LAYERS[self.backbone]
        self.patch_feature = self.patch_feature or DEFAULT_PATCH_FEATURE.get(self.backbone, "mean_mapped")
        if self.patch_feature not in PATCH_FEATURES:
            raise ConfigError("patch_feature", f"must be one of {PATCH_FEATURES}, got {self.patch_feature!r}")
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        if isinstance(self.weights, (str, os.PathLike)) and os.fspath(self.weights) not in ("imagenet", "random"):
            # a weights file is stored absolute, so that a saved model finds it from any folder
            self.weights = os.path.abspath(os.fspath(self.weights))
        try:
            self.resize, self.crop = _image_size(self.resize, self.crop)
        except ValueError as error:
            name, _, problem = str(error).partition(" ")
            raise ConfigError(name, problem) from None
        for layer in self.layers:
            if not isinstance(layer, str) or not layer.strip():
                raise ConfigError("layers", f"must be layer names such as {DEFAULT_LAYERS[self.backbone]}, "
                                            f"got {layer!r}")
        repeated = sorted({layer for layer in self.layers if self.layers.count(layer) > 1})
        if repeated:
            raise ConfigError("layers", f"must each be named once, got {', '.join(repeated)} twice")
        try:
            check_ratio(self.coreset_ratio, "coreset_ratio")
        except ValueError as error:
            raise ConfigError("coreset_ratio", str(error).removeprefix("coreset_ratio ")) from None
        if self.sampler not in SAMPLERS:
            raise ConfigError("sampler", f"must be one of {sorted(SAMPLERS)}, got {self.sampler!r}")
        if self.knn_backend not in BACKENDS:
            raise ConfigError("knn_backend", f"must be one of {BACKENDS}, got {self.knn_backend!r}")
        if self.index not in INDEXES:
            raise ConfigError("index", f"must be one of {INDEXES}, got {self.index!r}")
        if self.index != "exact" and self.knn_backend != "faiss":
            raise ConfigError("index", f"{self.index!r} needs knn_backend 'faiss', not {self.knn_backend!r}")
        if not is_int(self.num_neighbors) or self.num_neighbors < 1:
            raise ConfigError("num_neighbors", f"must be an integer >= 1, got {self.num_neighbors!r}")
        if not is_int(self.reweight) or self.reweight < 0:
            raise ConfigError("reweight", f"(b of eq. 7) must be an integer >= 0, got {self.reweight!r}")
        if not is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise ConfigError("seed", f"must be an integer from 0 to {MAX_SEED}, got {self.seed!r}")
        # numpy integers are welcome, but config.json holds plain ones
        self.num_neighbors, self.reweight, self.seed = int(self.num_neighbors), int(self.reweight), int(self.seed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "PatchCoreConfig":
        """The config saved by :meth:`to_dict`: every key, each of its field's type.

        Configs saved before the patch-feature and image-size options lack those
        keys: they were made with the reference's feature at 256/224.
        """
        if not isinstance(values, dict):
            raise ValueError(f"config must be a JSON object, got {type(values).__name__}")
        values = {**_BEFORE_THE_KEYS, **values}
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(values) - set(defaults)), sorted(set(defaults) - set(values))
        if unknown or missing:
            raise ValueError(f"config has unknown keys {unknown} and lacks keys {missing}")
        for name, value in values.items():
            if name in ("resize", "crop"):
                continue  # an int, [H, W] or null: _image_size checks them
            problem = _type_problem(value, defaults[name])
            if problem:
                raise ConfigError(name, f"{problem}, got {value!r}")
        return cls(**values)


def _side(value, what: str) -> int | tuple[int, int]:
    """An image size from the config or its JSON: ``256`` or ``(H, W)`` (a list becomes a tuple)."""
    if isinstance(value, (list, tuple)):
        value = tuple(value)
        sides = value if len(value) == 2 else ()
    else:
        sides = (value,)
    if not sides or not all(isinstance(side, int) and not isinstance(side, bool) and side > 0
                            for side in sides):
        raise ValueError(f"{what} must be a positive int or (height, width), got {value!r}")
    return value


def _image_size(resize, crop) -> tuple[int | tuple[int, int], int | tuple[int, int] | None]:
    """Check that ``crop`` fits inside ``resize``; see :func:`pcnotes.data.mvtec.image_transform`."""
    resize = _side(resize, "resize")
    if crop is None:
        if isinstance(resize, int):
            raise ValueError(
                f"crop=None (the whole image) needs resize=(height, width), got resize={resize}: "
                "with only the shorter side fixed, images of other shapes could not share a batch")
        return resize, None
    crop = _side(crop, "crop")
    # An int resize fixes only the shorter side: a crop must fit it both ways round.
    bounds = (resize, resize) if isinstance(resize, int) else resize
    if not all(c <= b for c, b in zip(crop if isinstance(crop, tuple) else (crop, crop), bounds)):
        raise ValueError(f"crop {crop} does not fit inside resize={resize} (torchvision would pad "
                         "the crop with zeros): use a smaller crop or a larger resize")
    return resize, crop
