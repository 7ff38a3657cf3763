"""Images in: the MVTec AD folder layout, the procedural data set, the shipped weights.

``mvtec``     reading a category (``train/good``, ``test/<defect>``, ``ground_truth``), transforms
``synth``     the embedded data set, drawn procedurally (nothing downloaded)
``weights/``  the ImageNet MobileNetV2 weights, package data, with their PROVENANCE.md
"""

from pcnotes.data.mvtec import (
    IMAGE_EXTENSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataError,
    MVTecDataset,
    image_transform,
    list_categories,
    list_defects,
    list_images,
    load_images,
    load_mask,
    load_rgb,
    load_split,
    mask_transform,
    stack,
    unnormalize,
    whole_image_size,
)
from pcnotes.data.synth import ensure_default_dataset, read_manifest

__all__ = [
    "IMAGE_EXTENSIONS", "IMAGENET_MEAN", "IMAGENET_STD", "DataError", "MVTecDataset",
    "image_transform", "mask_transform", "whole_image_size", "unnormalize",
    "list_categories", "list_defects", "list_images", "load_rgb", "load_mask", "load_images",
    "load_split", "stack", "ensure_default_dataset", "read_manifest",
]  # fmt: skip
