"""The PatchCore model: the stages composed, nothing added.

``fit`` embeds every training patch and keeps a coreset of them as the memory
bank; ``predict`` scores new images against it::

    fit:     images (B, 3, 224, 224) -> patch features (B*784, D) -> coreset -> bank (M, D)
    predict: images (B, 3, 224, 224) -> patch features (B*784, D)
             -> kNN scores (B*784,) -> (B, 784) -> (B, 28, 28)
             -> image scores (B,), anomaly maps (B, 224, 224)

``save`` writes ``config.json`` plus ``memory_bank.npy``: no pickle, and the
backbone is rebuilt from the config (its weights are named there, random ones
with their seed), so a round trip gives bit-identical scores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pcnotes import __version__
from pcnotes.backbone import DEFAULT_LAYERS, FeatureExtractor, load_backbone
from pcnotes.coreset import check_ratio, select_coreset
from pcnotes.embedding import embed
from pcnotes.maps import anomaly_map
from pcnotes.scoring import NearestNeighbours, image_scores, reweighted_image_scores, score_grid

FORMAT_VERSION = 1


def _quiet() -> bool:
    """Progress bars only on a terminal: not in notebooks, logs or CI."""
    return not sys.stderr.isatty()


@dataclass
class PatchCoreConfig:
    """Everything that decides what a PatchCore model computes; saved with it."""

    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"  # "imagenet", "random" or a state_dict path
    layers: tuple[str, ...] = ()  # empty: the backbone's stride-8 and stride-16 layers
    pretrain_dim: int = 1024  # mean mapper output per layer
    target_dim: int = 1024  # aggregator output: the patch feature size D
    patch_size: int = 3
    sampler: str = "approximate_greedy"  # "random", "greedy" or "approximate_greedy"
    coreset_ratio: float = 0.1
    num_neighbors: int = 1  # k
    reweight: int = 0  # b of eq. 7; 0 keeps the plain max score, like the reference
    squared: bool = False  # True: squared L2 scores like the reference code
    knn_backend: str = "faiss"
    sigma: float = 4.0
    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self):
        self.layers = tuple(self.layers) or DEFAULT_LAYERS.get(self.backbone, ())
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        check_ratio(self.coreset_ratio, "coreset_ratio")
        if self.num_neighbors < 1:
            raise ValueError(f"num_neighbors must be >= 1, got {self.num_neighbors}")
        if self.reweight < 0:
            raise ValueError(f"reweight (b of eq. 7) must be >= 0, got {self.reweight}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "PatchCoreConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}")
        return cls(**values)


@dataclass
class Prediction:
    """What ``predict`` returns: ``scores (B,)`` and ``maps (B, H, W)``."""

    scores: np.ndarray
    maps: np.ndarray
    patch_scores: np.ndarray = field(repr=False)  # (B, h, w), before upsampling

    def __iter__(self):  # allows ``scores, maps = model.predict(images)``
        return iter((self.scores, self.maps))


class PatchCore:
    """``PatchCore(config)`` or ``PatchCore(backbone="resnet18", coreset_ratio=0.01, ...)``."""

    def __init__(self, config: PatchCoreConfig | None = None, **overrides):
        if config is None:
            config = PatchCoreConfig(**overrides)
        elif overrides:
            if "backbone" in overrides and "layers" not in overrides:
                overrides["layers"] = ()  # the new backbone's default layers, not the old ones
            config = dataclasses.replace(config, **overrides)
        self.config = config
        backbone, self.weights = load_backbone(config.backbone, config.weights, seed=config.seed)
        self.extractor = FeatureExtractor(backbone, config.layers)
        self.memory_bank: np.ndarray | None = None
        self.grid: tuple[int, int] | None = None
        self.index: NearestNeighbours | None = None
        self.timings: dict[str, float] = {}

    def __repr__(self) -> str:
        bank = None if self.memory_bank is None else self.memory_bank.shape
        return (f"PatchCore(backbone={self.config.backbone!r}, layers={self.config.layers}, "
                f"weights={self.weights}, memory_bank={bank})")

    # -- features ----------------------------------------------------------------
    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch features of a batch: ``(B, 3, H, W) -> (B*h*w, D)`` and grid ``(h, w)``."""
        feature_maps = self.extractor(images)
        return embed(
            feature_maps,
            pretrain_dim=self.config.pretrain_dim,
            target_dim=self.config.target_dim,
            patch_size=self.config.patch_size,
        )

    def _batches(self, images) -> Iterable[torch.Tensor]:
        """Accept a tensor (B, 3, H, W), or any iterable of such tensors or of dicts."""
        if isinstance(images, torch.Tensor):
            if images.ndim != 4:
                raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
            step = self.config.batch_size
            return [images[i : i + step] for i in range(0, len(images), step)]
        return ((b["image"] if isinstance(b, dict) else b) for b in images)

    def extract(self, images, desc: str = "features") -> tuple[np.ndarray, tuple[int, int]]:
        """Patch features of all images: ``-> (N*h*w, D)`` float32 numpy and the grid."""
        chunks, grid = [], None
        total = len(images) if hasattr(images, "__len__") else None
        if isinstance(images, torch.Tensor):
            total = -(-len(images) // self.config.batch_size)
        for batch in tqdm(self._batches(images), total=total, desc=desc, disable=_quiet(), leave=False):
            features, grid = self.embed(batch)
            chunks.append(features.numpy())
        if not chunks:
            raise ValueError("no images given")
        return np.concatenate(chunks), grid

    # -- fit / predict -----------------------------------------------------------
    def fit(self, images) -> "PatchCore":
        """Build the memory bank from normal images (a tensor or a DataLoader)."""
        start = time.perf_counter()
        features, self.grid = self.extract(images, desc="train features")
        self.timings["extract_train"] = time.perf_counter() - start
        start = time.perf_counter()
        cfg = self.config
        if cfg.coreset_ratio < 1:
            indices = select_coreset(features, cfg.coreset_ratio, cfg.sampler, seed=cfg.seed)
            features = features[np.sort(indices)]  # sorted: the bank's order never matters
        self.timings["coreset"] = time.perf_counter() - start
        self._set_bank(features)
        return self

    def _set_bank(self, bank: np.ndarray) -> None:
        if self.config.num_neighbors > len(bank):
            raise ValueError(
                f"num_neighbors={self.config.num_neighbors} is larger than the memory bank "
                f"({len(bank)} entries): lower k or raise the coreset ratio"
            )
        self.memory_bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.index = NearestNeighbours(
            self.memory_bank, backend=self.config.knn_backend, squared=self.config.squared
        )

    def predict(self, images) -> Prediction:
        """Score images: ``(B, 3, H, W) -> scores (B,), maps (B, H, W)``."""
        if self.index is None:
            raise RuntimeError("call fit() or PatchCore.load() before predict()")
        start = time.perf_counter()
        cfg = self.config
        scores, maps, grids = [], [], []
        total = -(-len(images) // cfg.batch_size) if isinstance(images, torch.Tensor) else None
        for batch in tqdm(self._batches(images), total=total, desc="scoring", disable=_quiet(), leave=False):
            features, grid = self.embed(batch)
            grid_scores = score_grid(self.index, features, len(batch), grid, cfg.num_neighbors)
            if cfg.reweight:
                scores.append(reweighted_image_scores(self.index, features, len(batch), cfg.reweight))
            else:
                scores.append(image_scores(grid_scores))
            maps.append(anomaly_map(grid_scores, size=batch.shape[-2:], sigma=cfg.sigma))
            grids.append(grid_scores)
        self.timings["predict"] = time.perf_counter() - start
        return Prediction(np.concatenate(scores), np.concatenate(maps), np.concatenate(grids))

    # -- save / load -------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``memory_bank.npy`` (atomically) to ``directory``."""
        if self.memory_bank is None:
            raise RuntimeError("nothing to save: call fit() first")
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        try:
            np.save(staging / "memory_bank.npy", self.memory_bank, allow_pickle=False)
            meta = {
                "format_version": FORMAT_VERSION,
                "pcnotes_version": __version__,
                "config": self.config.to_dict(),
                "weights": str(self.weights),
                "grid": list(self.grid),
                "memory_bank_shape": list(self.memory_bank.shape),
                "memory_bank_sha256": hashlib.sha256(self.memory_bank.tobytes()).hexdigest(),
            }
            (staging / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
            if directory.exists():
                shutil.rmtree(directory)
            os.replace(staging, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, expect: PatchCoreConfig | None = None) -> "PatchCore":
        """Rebuild a saved model. With ``expect``, its config must match exactly."""
        directory = Path(directory)
        meta_path, bank_path = directory / "config.json", directory / "memory_bank.npy"
        for path in (meta_path, bank_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: {directory} is not a saved PatchCore model")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{meta_path}: not valid JSON ({error})") from error
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{directory} was saved by pcnotes {meta.get('pcnotes_version')} in format "
                f"{meta.get('format_version')}; this pcnotes {__version__} reads format "
                f"{FORMAT_VERSION}: fit the model again"
            )
        config = PatchCoreConfig.from_dict(meta["config"])
        if expect is not None and expect != config:
            changed = {k: (v, getattr(expect, k)) for k, v in config.to_dict().items()
                       if getattr(expect, k) != getattr(config, k)}
            raise ValueError(f"{directory} was made with another config (saved, expected): {changed}")
        bank = np.load(bank_path, allow_pickle=False)
        if list(bank.shape) != meta["memory_bank_shape"] or bank.shape[1] != config.target_dim:
            raise ValueError(f"{bank_path}: shape {bank.shape} does not match {meta_path}")
        if hashlib.sha256(np.ascontiguousarray(bank).tobytes()).hexdigest() != meta["memory_bank_sha256"]:
            raise ValueError(f"{bank_path}: checksum mismatch, the file is corrupt")
        model = cls(config)
        model.grid = tuple(meta["grid"])
        model._set_bank(bank)
        return model
