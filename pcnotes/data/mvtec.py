"""Loading images and masks, the PatchCore transforms, and the MVTec AD layout.

Everything that touches files lives here, so that every data problem (a
missing folder, a corrupt PNG, a defect image without its mask) surfaces as
one exception type, :class:`DataError`, whose message names the file or folder
and says what is wrong.

Shapes used throughout:

* an image tensor is ``(3, H, W)`` float32, normalised with ``mean``/``std``;
* a mask tensor is ``(1, H, W)`` float32 with values exactly in ``{0., 1.}``;
* a batch adds a leading ``B``.

Masks that are not binary get a **warning, not an error**.  A mask file is
binary when it holds at most two values, one of them 0 (0/255, or a 0/1 PNG,
or 0/65535): every non-zero pixel is defect.  Anything else (JPEG ringing,
bilinear resizing, a background of 1 in a 0..255 mask) raises a
:class:`MaskValuesWarning` that names the file and the values seen, and the
mask is thresholded at half its maximum.  Why not refuse: in every such case
we met, half the maximum recovers the mask that was meant (ringing stays
near 0 and near the top, a stray background of 1 is far below half of 255),
and refusing would stop a whole evaluation over a file-format artefact.  Why
not stay silent: counting every non-zero pixel as defect turned a background
of 1 into an all-defect mask, and pixel AUROC fell from 0.999 to 0.725
without a word.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterable, Sequence

import warnings

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from pcnotes.util.folders import OS_JUNK
from pcnotes.util.paths import printable

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "DataError",
    "MaskValuesWarning",
    "DataWarning",
    "collect_notes",
    "skipped_files",
    "load_rgb",
    "load_mask",
    "image_transform",
    "mask_transform",
    "whole_image_size",
    "default_image_size",
    "photo_sizes",
    "unnormalize",
    "MVTecDataset",
    "list_categories",
    "list_defects",
    "list_images",
    "load_images",
    "load_split",
    "stack",
    "image_batches",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: File name endings accepted as images (compared case-insensitively). WEBP
#: and GIF are accepted because Pillow reads both and phones and web exports
#: produce them; of an animated GIF the first frame is used, as a viewer's
#: thumbnail shows it. Every other file in an image folder is counted and
#: named in one warning line (see :func:`skipped_files`), never skipped silently.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
ACCEPTED = ", ".join(IMAGE_EXTENSIONS)


class DataError(ValueError):
    """A data problem: the message names the file or folder and the problem."""


class MaskValuesWarning(UserWarning):
    """A mask file is not binary; the message names it and the values seen."""


class DataWarning(UserWarning):
    """Files of one kind that loading met (skipped, rotated, empty masks ...): a count and an example."""


# --------------------------------------------------------------------------
# One warning line per kind of problem
# --------------------------------------------------------------------------

#: kind -> the line shown for it, from the count and one example file.
_NOTE_LINES = {
    "skipped": lambda n, example, extra, first: (
        f"{n} file{'s' * (n > 1)} skipped, not an image format pcnotes reads (extensions: {extra}; "
        f"e.g. {example}); accepted: {ACCEPTED}"),
    "rotated": lambda n, example, extra, first: (
        f"{n} image or mask file{'s' * (n > 1)} turned upright as their EXIF orientation says, as a "
        f"viewer shows them (e.g. {example})"),
    "large": lambda n, example, extra, first: (
        f"{n} image{'s' * (n > 1)} larger than Pillow's decompression-bomb limit of "
        f"{Image.MAX_IMAGE_PIXELS} pixels read anyway (e.g. {example}, {extra}); check that they are "
        "the photographs you meant"),
    "not_binary": lambda n, example, extra, first: (
        first if n == 1 else f"{n} mask files are not binary; the first: {first}"),
    "empty_mask": lambda n, example, extra, first: (
        f"{n} defective test image{'s' * (n > 1)} have an all-zero mask, no defect pixel (e.g. {example}): "
        "they count in image AUROC but add no defective pixel; draw the defect or move the image to test/good"),
}
#: the warning class of a kind, where it is not DataWarning
_NOTE_CATEGORY = {"not_binary": MaskValuesWarning}
_notes: dict[str, list[tuple[str, str]]] | None = None  # kind -> [(file, detail)] while collecting


def _note(kind: str, path: str | Path, detail: str = "") -> None:
    """Count one file of ``kind``; outside :func:`collect_notes` its line is shown at once."""
    if _notes is None:
        with collect_notes():
            _note(kind, path, detail)
        return
    _notes.setdefault(kind, []).append((str(path), detail))


@contextlib.contextmanager
def collect_notes():
    """Gather the files of each kind met inside the block; at its end, one :class:`DataWarning` per kind.

    Nested blocks report with the outermost one.
    """
    global _notes
    if _notes is not None:
        yield
        return
    _notes = {}
    try:
        yield
    finally:
        notes, _notes = _notes, None
        for kind, found in notes.items():
            details = ", ".join(sorted({detail for _, detail in found if detail}))
            line = _NOTE_LINES[kind](len(found), printable(found[0][0]), details, found[0][1])
            warnings.warn(line, _NOTE_CATEGORY.get(kind, DataWarning), stacklevel=3)


# --------------------------------------------------------------------------
# Reading single files
# --------------------------------------------------------------------------

# Integer modes whose samples are 16 bits wide.  Mode "I" (32-bit signed) is
# what older Pillow versions return for 16-bit PNGs, so it is treated as
# 16-bit too: values are clipped to [0, 65535] and scaled like I;16.
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _open_loaded(path: Path) -> Image.Image:
    """Open ``path`` and decode it fully, turning every failure into DataError.

    ``Image.open`` only reads the header; ``load()`` decodes the pixels, which
    is where truncated or corrupt files fail.  Both happen inside the ``try``
    so that no half-read image escapes.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                # exif_transpose copies, which detaches the pixels from the file handle we close here.
                upright = _upright(img, path)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, zlib.error ...
        raise DataError(
            f"{printable(path)}: cannot read image ({type(exc).__name__}: {_one_line(exc)})"
        ) from exc
    for warning in caught:
        if issubclass(warning.category, Image.DecompressionBombWarning):
            _note("large", path, "{} x {}".format(*upright.size))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return upright


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _upright(img: Image.Image, path: Path) -> Image.Image:
    """The image as a viewer shows it: turned by its EXIF orientation (2 to 8), the same for images and masks.

    Phones store photographs as the sensor saw them and record in EXIF how to
    turn them; a mask drawn on the photograph as displayed matches only the
    turned image.
    """
    if img.getexif().get(0x0112, 1) not in (1, None):  # 0x0112: Orientation
        _note("rotated", path)
    return ImageOps.exif_transpose(img)


def _sixteen_bit_to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale 16-bit samples to 8 bits by the bit depth: 65535 -> 255, 32768 -> 128."""
    array = np.clip(array.astype(np.float64), 0, 65535)
    return np.rint(array * (255.0 / 65535.0)).astype(np.uint8)


def _float_to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale a float image to 8 bits.

    Float images are usually stored in [0, 1]; that is assumed unless some
    value exceeds 1, in which case the image is taken to be on the 0..255
    scale.  NaNs become 0.
    """
    array = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    scale = 255.0 if array.max(initial=0.0) <= 1.0 else 1.0
    return np.rint(np.clip(array * scale, 0, 255)).astype(np.uint8)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (see :func:`load_rgb` for the rules)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT_MODES:
        gray = _sixteen_bit_to_uint8(np.asarray(img))
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "F":
        gray = _float_to_uint8(np.asarray(img))
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "P":
        # A palette may carry transparency; going through RGBA avoids Pillow's
        # warning and then drops alpha like every other mode here.
        if "transparency" in img.info:
            return img.convert("RGBA").convert("RGB")
        return img.convert("RGB")
    # 1, L, LA, RGBA, RGBa, CMYK, YCbCr, ...: Pillow's own conversion is right.
    # For LA/RGBA it keeps the colour channels and drops alpha.
    return img.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Read an image file as an 8-bit RGB ``PIL.Image``.

    Conversions:

    * grayscale (``1``, ``L``) is replicated to three channels;
    * ``LA`` and ``RGBA``: the alpha channel is **dropped** (the stored colour
      is kept as is, not composited), which is what a camera image with an
      unused alpha channel needs;
    * palette (``P``) images are expanded through their palette;
    * 16-bit (``I;16``, ``I;16B``, ``I``) images are scaled by their bit depth,
      ``round(v * 255 / 65535)`` (65535 -> 255), never clipped to 255;
    * float (``F``) images are taken to be in [0, 1] (scaled by 255) unless a
      value exceeds 1, then they are taken to be in 0..255.

    Raises :class:`DataError` naming ``path`` if the file is missing, empty,
    truncated, corrupt or not an image.
    """
    img = _open_loaded(Path(path))
    try:
        return _to_rgb(img)
    except Exception as exc:
        raise DataError(f"{path}: cannot convert mode {img.mode!r} to RGB ({exc})") from exc


def _shown(values: np.ndarray, most: int = 6) -> str:
    shown = [f"{v:g}" for v in values.tolist()]
    if len(shown) > most:
        shown = shown[: most // 2] + ["..."] + shown[-(most // 2):]
    return ", ".join(shown) + (f" ({len(values)} distinct)" if len(values) > most else "")


def load_mask(path: str | Path) -> Image.Image:
    """Read a ground-truth mask as a binary mode-``L`` image with values 0/255.

    The raw samples are used (at the file's own bit depth; for colour masks
    the largest channel).  A binary mask, at most two values with one of them
    0, keeps every non-zero pixel as defect; any other mask is thresholded at
    half its maximum, with a :class:`MaskValuesWarning` naming ``path`` and
    the values seen (see the module docstring for why).  Raises
    :class:`DataError` naming ``path`` on any problem reading it.
    """
    img = _open_loaded(Path(path))
    if img.mode in _SIXTEEN_BIT_MODES + ("F", "1", "L"):
        # The raw samples, so that faint 16-bit values are not lost to rounding.
        raw = np.asarray(img)
    else:
        raw = np.asarray(_to_rgb(img)).max(axis=-1)
    raw = np.nan_to_num(raw.astype(np.float64))
    values = np.unique(raw)
    if len(values[values != 0]) <= 1:
        positive = raw > 0
    else:
        threshold = values.max() / 2
        # one line for all such masks of a run (a folder of JPEG masks), naming the first
        _note("not_binary", path, f"{printable(path)}: mask is not binary (values seen: {_shown(values)}); pixels "
              f"above half the maximum ({threshold:g}) count as defect; save masks with only 0 and one other value")
        positive = raw > threshold
    return Image.fromarray(positive.astype(np.uint8) * 255, mode="L")


# --------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------


class _Binarize:
    """``mask > threshold`` as float; a class (not a lambda) so it pickles for DataLoader workers."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold

    def __call__(self, mask: torch.Tensor) -> torch.Tensor:
        return (mask > self.threshold).float()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold})"


def _geometry(resize, crop, interpolation) -> list:
    """The resize (and centre crop, unless ``crop`` is None) that images and masks share."""
    steps = [transforms.Resize(resize, interpolation=interpolation)]
    if crop is not None:
        steps.append(transforms.CenterCrop(crop))
    return steps


def image_transform(
    resize: int | Sequence[int] = 256,
    crop: int | Sequence[int] | None = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB image -> float tensor ``(3, crop_h, crop_w)``, as in the PatchCore reference.

    ``Resize(resize)``, ``CenterCrop(crop)``, ``ToTensor`` (to [0, 1]) and
    ``Normalize(mean, std)``. Sizes:

    * ``resize=256`` (an int) scales the shorter side to 256 and keeps the
      aspect ratio; ``resize=(H, W)`` scales to exactly H x W (bilinear with
      antialiasing in both cases);
    * ``crop=224`` or ``(h, w)`` keeps the centre; ``crop=None`` keeps the
      whole resized image. ``resize=(H, W), crop=None`` is the *whole-image
      mode* for non-square photographs: every pixel is seen, at ``(3, H, W)``.

    The whole-image mode resizes rather than pads. Padding would add borders
    that are not in the photographs: their patches, and the edge between
    border and photograph, would enter the memory bank, and images of other
    shapes would put that edge elsewhere. Resizing adds nothing and drops
    nothing, and with ``(H, W)`` in the photographs' aspect ratio
    (:func:`whole_image_size`) it distorts nothing either; only a photograph
    of another aspect ratio is stretched.
    """
    return transforms.Compose(
        _geometry(resize, crop, transforms.InterpolationMode.BILINEAR)
        + [transforms.ToTensor(), transforms.Normalize(mean=list(mean), std=list(std))]
    )


def mask_transform(
    resize: int | Sequence[int] = 256,
    crop: int | Sequence[int] | None = 224,
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL mask -> float tensor ``(1, crop_h, crop_w)`` with values exactly in {0., 1.}.

    Same geometry as :func:`image_transform` (so mask pixels stay on their
    image pixels) but resized with NEAREST and thresholded at 0.5.  The
    reference implementation resizes masks bilinearly and later counts only
    pixels equal to exactly 1.0 as defective, so the blurred edge pixels of
    every defect silently become "good"; nearest-neighbour keeps the mask
    binary and its area unchanged.
    """
    return transforms.Compose(
        _geometry(resize, crop, transforms.InterpolationMode.NEAREST)
        + [transforms.ToTensor(), _Binarize(0.5)]
    )


def whole_image_size(width: int, height: int, shorter: int = 256, multiple: int = 16) -> tuple[int, int]:
    """The ``(H, W)`` for the whole-image mode of a ``width`` x ``height`` photograph.

    The shorter side becomes ``shorter``, the longer one keeps the aspect
    ratio, both rounded to a multiple of ``multiple`` (16: the deepest default
    layer's stride, so every grid cell covers whole pixels). A 600 x 250 photo
    gives ``(256, 608)``.
    """
    if min(width, height) < 1:
        raise ValueError(f"image size must be positive, got {width} x {height}")
    scale = shorter / min(width, height)

    def side(length: int) -> int:
        return max(multiple, int(round(length * scale / multiple)) * multiple)

    return side(height), side(width)


def default_image_size(sizes: Sequence[tuple[int, int]], shorter: int = 256, multiple: int = 16,
                       ) -> tuple[int | tuple[int, int], int | None]:
    """``resize`` and ``crop`` that follow the training photographs' ``(width, height)`` sizes.

    Square photographs keep the reference's resize 256 / centre crop 224.
    Others get the whole-image mode (no crop) at their median aspect ratio:
    :func:`whole_image_size` of it, shorter side ``shorter``, both sides
    multiples of ``multiple``. "Square" means that this whole-image size comes
    out square, i.e. the median aspect ratio rounds to 1 at that multiple.
    Photographs of mixed sizes share the median's size (the others are stretched).
    """
    if not sizes:
        raise ValueError("no image sizes given")
    aspect = float(np.median([width / height for width, height in sizes]))
    whole = whole_image_size(max(1, round(aspect * 10_000)), 10_000, shorter, multiple)
    if whole[0] == whole[1]:
        return 256, 224
    return whole, None


def photo_sizes(paths: Iterable[str | Path]) -> list[tuple[int, int]]:
    """``(width, height)`` of image files as a viewer shows them (EXIF orientation), checked without decoding.

    ``Image.verify`` reads the whole file and checks its structure (a PNG's
    chunk checksums: a truncated file fails), far cheaper than decoding it.
    Raises :class:`DataError` naming the first missing, empty or unreadable file.
    """
    sizes = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: {'not a file' if path.exists() else 'file does not exist'}")
        if path.stat().st_size == 0:
            raise DataError(f"{path}: file is empty")
        try:
            with Image.open(path) as img:
                img.verify()  # must come first after opening
            with Image.open(path) as img:  # reads the header only
                width, height = img.size
                # orientations 5 to 8 turn by 90 degrees: a viewer shows height x width
                turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
            sizes.append((height, width) if turned else (width, height))
        except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, zlib.error ...
            raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    return sizes


def unnormalize(
    image_tensor: torch.Tensor | np.ndarray,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """Undo ``Normalize`` for display: ``(3, H, W)`` -> ``(H, W, 3)`` float numpy in [0, 1].

    A batch ``(B, 3, H, W)`` gives ``(B, H, W, 3)``.
    """
    if isinstance(image_tensor, torch.Tensor):
        array = image_tensor.detach().cpu().float().numpy()
    else:
        array = np.asarray(image_tensor, dtype=np.float32)
    if array.ndim not in (3, 4) or array.shape[-3] != 3:
        raise ValueError(f"expected (3, H, W) or (B, 3, H, W), got shape {array.shape}")
    array = np.moveaxis(array, -3, -1)  # channels last for matplotlib
    array = array * np.asarray(std, dtype=np.float32) + np.asarray(mean, dtype=np.float32)
    return np.clip(array, 0.0, 1.0)


# --------------------------------------------------------------------------
# The MVTec AD layout
# --------------------------------------------------------------------------


def _is_image_file(path: Path) -> bool:
    # Skip hidden files such as macOS "._000.png" resource forks.
    return (
        path.is_file()
        and not path.name.startswith(".")
        and path.suffix.lower() in IMAGE_EXTENSIONS
    )


def skipped_files(folder: str | Path) -> list[Path]:
    """Files directly in ``folder`` that :func:`list_images` skips for their extension.

    Hidden files and the files operating systems add (``.DS_Store``,
    ``Thumbs.db``, ``desktop.ini``) are not counted: nobody meant them as images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.name not in OS_JUNK and not _is_image_file(p)), key=lambda p: p.name)


def note_skipped(folder: str | Path) -> None:
    """Count the files of ``folder`` that are not read as images, for the one warning line of their kind."""
    with collect_notes():
        for path in skipped_files(folder):
            _note("skipped", path, path.suffix.lower() or "(none)")


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (not recursive), sorted by name.

    Hidden files (such as macOS ``._000.png``) and files whose extension is
    not in :data:`IMAGE_EXTENSIONS` are skipped.  Raises :class:`DataError`
    if ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "folder does not exist"
        raise DataError(f"{folder}: {what}")
    return sorted((p for p in folder.iterdir() if _is_image_file(p)), key=lambda p: p.name)


def no_images(folder: str | Path, what: str = "images") -> DataError:
    """The error for a folder without images: it names the extensions that count and those it found."""
    found = sorted({p.suffix.lower() or "(none)" for p in skipped_files(folder)})
    seen = f"; it holds only {', '.join(found)} files" if found else ""
    return DataError(f"no {what} in {folder} (pcnotes reads {ACCEPTED}{seen})")


def _check_root(root: Path) -> None:
    if root.is_file():
        raise DataError(f"{root}: is a file; the data root must be the folder that holds the category folders")
    if not root.is_dir():
        raise DataError(f"{root}: data root folder does not exist")


def _subfolders(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def list_categories(root: str | Path) -> list[str]:
    """Sorted names of the subfolders of ``root`` that contain ``train/good``."""
    root = Path(root)
    _check_root(root)
    return [p.name for p in _subfolders(root) if (p / "train" / "good").is_dir()]


def list_defects(root: str | Path, category: str) -> list[str]:
    """Sorted names of the defect kinds of ``category``: the folders of ``test/`` but ``good``."""
    test_dir = Path(root) / category / "test"
    if not test_dir.is_dir():
        raise DataError(f"{test_dir}: test folder does not exist")
    return [p.name for p in _subfolders(test_dir) if p.name != "good"]


def _mask_path(category_dir: Path, image_path: Path) -> Path:
    """Where MVTec AD keeps the mask of ``test/<defect>/<name>.<ext>``.

    The canonical name is ``ground_truth/<defect>/<name>_mask.png``; a mask
    with the image's own extension is accepted too.  Returns the canonical
    path when neither exists, so that error messages name it.
    """
    folder = category_dir / "ground_truth" / image_path.parent.name
    canonical = folder / f"{image_path.stem}_mask.png"
    if canonical.is_file():
        return canonical
    same_ext = folder / f"{image_path.stem}_mask{image_path.suffix}"
    if same_ext.is_file():
        return same_ext
    return canonical


def _near_misses(mask_path: Path) -> list[str]:
    """Files next to a missing ``NAME_mask.png`` that were probably meant as it.

    ``NAME.png``, ``NAME_mask.PNG``, ``NAME_mask.jpg``: the image's own name, or
    the mask name with another case or extension.
    """
    if not mask_path.parent.is_dir():
        return []
    stem = mask_path.stem.removesuffix("_mask").casefold()
    return sorted(p.name for p in mask_path.parent.iterdir()
                  if p.is_file() and p.stem.casefold() in (stem, f"{stem}_mask") and p.name != mask_path.name)


class MVTecDataset(Dataset):
    """One category of an MVTec-AD-style data set.

    Layout::

        <root>/<category>/train/good/*.png
        <root>/<category>/test/good/*.png
        <root>/<category>/test/<defect>/*.png
        <root>/<category>/ground_truth/<defect>/<name>_mask.png

    Each item is a dict:

    * ``image``  ``(3, h, w)`` float32, normalised: ``crop`` (or, with
      ``crop=None``, ``resize``) decides ``(h, w)``, see :func:`image_transform`;
    * ``mask``   ``(1, h, w)`` float32 in {0, 1} (all zeros for good images),
      through the same resize and crop with nearest-neighbour;
    * ``label``  int, 0 good / 1 defective;
    * ``defect`` str, ``"good"`` or the defect folder name;
    * ``path``   str, the image file.

    Order: ``good`` first, then the defect folders alphabetically, files by
    name within each.  The folder structure (and, for the test split, that
    every defective image has its mask) is checked when the dataset is
    constructed, before any image is decoded, so a run fails before doing any
    work.  Corrupt image files raise :class:`DataError` when their item is
    loaded, or all at once from :meth:`validate`.  ``labels``, ``defects``
    and ``paths`` need no image decoding.
    """

    def __init__(
        self,
        root: str | Path,
        category: str,
        split: str = "train",
        resize: int | Sequence[int] = 256,
        crop: int | Sequence[int] | None = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.root = Path(root)
        self.category = category
        self.split = split
        self.category_dir = self.root / category
        self.transform = image_transform(resize, crop, mean, std)
        self.target_transform = mask_transform(resize, None)  # cropped in __getitem__, to count what is cut
        self.crop = None if crop is None else transforms.CenterCrop(crop)
        # Each sample: (image path, label, defect name, mask path or None).
        with collect_notes():  # skipped files: one line for the whole split
            self._samples = self._collect()

    # -- construction-time validation ------------------------------------

    def _collect(self) -> list[tuple[Path, int, str, Path | None]]:
        _check_root(self.root)
        if not self.category_dir.is_dir():
            available = ", ".join(list_categories(self.root)) or "none"
            raise DataError(
                f"{self.category_dir}: category folder does not exist "
                f"(categories found in {self.root}: {available})"
            )
        train_good = self.category_dir / "train" / "good"
        train = list_images(train_good) if train_good.is_dir() else []
        if not train:
            # Checked for both splits: a category without training images is
            # unusable, and saying so early beats failing after the test pass.
            raise no_images(train_good, "training images")
        if self.split == "train":
            note_skipped(train_good)
            return [(p, 0, "good", None) for p in train]
        return self._collect_test()

    def _collect_test(self) -> list[tuple[Path, int, str, Path | None]]:
        test_dir = self.category_dir / "test"
        if not test_dir.is_dir():
            raise DataError(f"{test_dir}: test folder does not exist")
        folders = _subfolders(test_dir)
        # "good" first, then defects alphabetically.
        folders.sort(key=lambda p: (p.name != "good", p.name))
        samples: list[tuple[Path, int, str, Path | None]] = []
        missing: list[Path] = []
        for folder in folders:
            defect = folder.name
            note_skipped(folder)
            for image_path in list_images(folder):
                if defect == "good":
                    samples.append((image_path, 0, defect, None))
                    continue
                mask_path = _mask_path(self.category_dir, image_path)
                if not mask_path.is_file():
                    missing.append(mask_path)
                samples.append((image_path, 1, defect, mask_path))
        if missing:
            shown = ", ".join(str(p) for p in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            near = _near_misses(missing[0])
            hint = f" ({', '.join(near)} is there: rename it to {missing[0].name})" if near else ""
            raise DataError(f"missing ground-truth mask: {shown}{more}{hint}")
        if not samples:
            raise no_images(test_dir, "test images (in its good and defect folders)")
        return samples

    # -- metadata (no decoding) -------------------------------------------

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def labels(self) -> list[int]:
        """0/1 label of every item, in item order."""
        return [label for _, label, _, _ in self._samples]

    @property
    def defects(self) -> list[str]:
        """Defect name (``"good"`` for normal images) of every item."""
        return [defect for _, _, defect, _ in self._samples]

    @property
    def paths(self) -> list[str]:
        """Image file path of every item."""
        return [str(path) for path, _, _, _ in self._samples]

    @property
    def mask_paths(self) -> list[str | None]:
        """Mask file path of every item (``None`` for good images)."""
        return [None if m is None else str(m) for _, _, _, m in self._samples]

    # -- items -------------------------------------------------------------

    def __getitem__(self, index: int) -> dict:
        image_path, label, defect, mask_path = self._samples[index]
        pil_image = load_rgb(image_path)
        image = self.transform(pil_image)
        if mask_path is None:
            mask = torch.zeros((1, *image.shape[1:]), dtype=torch.float32)
        else:
            pil_mask = load_mask(mask_path)
            if pil_mask.size != pil_image.size:
                # Different sizes would be resized differently and the mask
                # would no longer lie on its defect.
                raise DataError(
                    f"{printable(mask_path)}: mask size {pil_mask.size} differs from "
                    f"image size {pil_image.size} of {printable(image_path)} (both as a viewer shows "
                    "them, turned by their EXIF orientation)"
                )
            mask = self.target_transform(pil_mask)
        cut = 0  # defect pixels that the centre crop cuts away
        if self.crop is not None:
            whole, mask = mask, self.crop(mask)
            cut = int(whole.sum() - mask.sum())
        return {
            "image": image,
            "mask": mask,
            "label": label,
            "defect": defect,
            "path": str(image_path),
            "cut": cut,
        }

    def validate(self) -> None:
        """Open and decode every image and mask now, as loading will.

        Raises :class:`DataError` naming the first unreadable image or mask, or
        a mask whose size differs from its image's; warns about masks that are
        not binary.  Costs one extra read of the split: cheap next to a fit.
        """
        for index in range(len(self)):
            self[index]

    def check_files(self) -> None:
        """Check every image and mask file (:func:`photo_sizes`, nothing decoded): cheap, before any work.

        Raises :class:`DataError` naming the first unreadable file, or a mask
        whose size differs from its image's. :meth:`validate` decodes too.
        """
        for image_path, _, _, mask_path in self._samples:
            (size,) = photo_sizes([image_path])
            if mask_path is not None and photo_sizes([mask_path])[0] != size:
                raise DataError(f"{printable(mask_path)}: mask size {photo_sizes([mask_path])[0]} differs from "
                                f"image size {size} of {printable(image_path)} (both as a viewer shows "
                                "them, turned by their EXIF orientation)")

    def check_masks(self) -> None:
        """Decode every defect mask (not the images) as the model will see it, before any work.

        Warns once, with a count, about defective images whose mask is empty;
        raises :class:`DataError` when every defect mask is empty, since pixel
        AUROC and AUPRO then have no defective pixel to rank.
        """
        defective = [(path, mask) for path, label, _, mask in self._samples if label == 1]
        empty = []
        with collect_notes():  # masks that are not binary: one line for the split
            for _, mask_path in defective:
                mask = self.target_transform(load_mask(mask_path))
                if not (mask if self.crop is None else self.crop(mask)).any():
                    empty.append(mask_path)
        if defective and len(empty) == len(defective):
            raise DataError(
                f"{printable(empty[0].parent.parent)}: every defect mask is empty ({len(empty)} masks, "
                f"e.g. {printable(empty[0])}); pixel AUROC and AUPRO need defect pixels: draw the "
                "defects in the masks (white on black)")
        with collect_notes():
            for mask_path in empty:
                _note("empty_mask", mask_path)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, category={self.category!r}, "
            f"split={self.split!r}, n={len(self)})"
        )


def load_images(
    paths: Iterable[str | Path],
    transform: Callable[[Image.Image], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Load arbitrary image files into one batch ``(B, 3, H, W)``.

    ``transform`` defaults to :func:`image_transform` with its defaults.
    Raises :class:`DataError` naming the first unreadable file, or if
    ``paths`` is empty.
    """
    paths = list(paths)
    if not paths:
        raise DataError("no image paths given")
    transform = transform or image_transform()
    with collect_notes():
        return torch.stack([transform(load_rgb(p)) for p in paths])


def load_split(root: str | Path, category: str, split: str, config) -> MVTecDataset:
    """One split of a category, read at the image size and normalisation of ``config`` (a PatchCoreConfig)."""
    return MVTecDataset(root, category, split, resize=config.resize, crop=config.crop,
                        mean=config.mean, std=config.std)


def stack(dataset: MVTecDataset) -> tuple[torch.Tensor, np.ndarray]:
    """Load a whole (small) split: images ``(N, 3, H, W)`` and masks ``(N, H, W)`` bool."""
    images, masks = [], []
    with collect_notes():
        for batch in DataLoader(dataset, batch_size=16):
            images.append(batch["image"])
            masks.append(batch["mask"][:, 0].numpy() > 0.5)
        masks = np.concatenate(masks)
        for i, (label, mask_path) in enumerate(zip(dataset.labels, dataset.mask_paths)):
            if label == 1 and not masks[i].any():
                _note("empty_mask", mask_path)
    return torch.cat(images), masks


def image_batches(paths: Sequence[str | Path], transform: Callable[[Image.Image], torch.Tensor],
                  batch_size: int) -> Iterable[torch.Tensor]:
    """Image files decoded one batch at a time: yields ``(b, 3, H, W)``, ``b <= batch_size``."""
    for start in range(0, len(paths), batch_size):
        yield torch.stack([transform(load_rgb(path)) for path in paths[start : start + batch_size]])
