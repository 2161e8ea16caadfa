"""Image data for training and evaluation: Fashion-MNIST from Debian's package and ImageNet-style folders.

Two sources share one interface (:class:`ImageSource`): ``crops(indices, crop, size)`` returns a float batch
``(B, 3, size, size)`` in [0, 1], each image cut by a crop plan (random-resized crop for training, centre crop
for evaluation) and resized straight to the batch's resolution, so elastic resolution costs nothing extra. No
torchvision: boxes are drawn with numpy, in-memory images are resampled with ``grid_sample``, folder images with
PIL. :class:`Splits` holds the held-out part of the *training* set used for accuracy (the test split is never
touched) and the images that re-estimate BatchNorm statistics.
"""
from __future__ import annotations

import gzip
import math
import os
import queue
import struct
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError

FASHION_MNIST_DIR = Path(os.environ.get("OFAKIT_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                         "ankle-boot")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

Box = tuple[float, float, float, float]


# --- crop plans --------------------------------------------------------------------------------------

class CropPlan(Protocol):
    def box(self, j: int, width: int, height: int) -> Box:
        """(left, top, right, bottom) in pixels of the ``j``-th image of a batch, given its size."""


@dataclass(frozen=True)
class RandomResizedCrop:
    """Per image: an area fraction in ``scale``, an aspect ratio log-uniform in 3/4..4/3 and a position,
    drawn up front; boxes are clipped to the image (torchvision's sampler without its retry loop)."""

    params: np.ndarray  # (B, 4): area fraction, aspect ratio, x and y position in [0, 1)

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, scale: tuple[float, float],
             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> "RandomResizedCrop":
        area = rng.uniform(scale[0], scale[1], n)
        aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), n))
        return cls(np.stack([area, aspect, rng.random(n), rng.random(n)], axis=1))

    def box(self, j: int, width: int, height: int) -> Box:
        area, aspect, u, v = self.params[j]
        target = area * width * height
        w = min(float(width), math.sqrt(target * aspect))
        h = min(float(height), math.sqrt(target / aspect))
        x0, y0 = u * (width - w), v * (height - h)
        return x0, y0, x0 + w, y0 + h


@dataclass(frozen=True)
class CenterCrop:
    """A centred square of ``fraction`` of the shorter side (resize to size/fraction, then crop size)."""

    fraction: float = 0.875

    def box(self, j: int, width: int, height: int) -> Box:
        side = min(width, height) * self.fraction
        x0, y0 = (width - side) / 2, (height - side) / 2
        return x0, y0, x0 + side, y0 + side


# --- sources ----------------------------------------------------------------------------------------

class ImageSource(ABC):
    """Labelled images addressed by index; ``crops`` returns float batches in [0, 1], 3 channels."""

    name: str
    labels: np.ndarray
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @abstractmethod
    def crops(self, indices: np.ndarray, crop: CropPlan, size: int) -> torch.Tensor:
        """(B, 3, size, size) float32 in [0, 1]: image ``indices[j]`` cut by ``crop.box(j, ...)``."""

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


class TensorImages(ImageSource):
    """Images held in memory as one uint8 tensor (N, C, H, W), C = 1 (repeated to RGB) or 3."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray, classes: tuple[str, ...], name: str,
                 mean: tuple[float, float, float], std: tuple[float, float, float]):
        if images.dim() != 4 or images.shape[1] not in (1, 3) or images.dtype != torch.uint8:
            raise ValueError("images: expected a uint8 tensor (N, 1|3, H, W)")
        self.images, self.labels, self.classes, self.name = images, np.asarray(labels, np.int64), classes, name
        self.mean, self.std = mean, std

    def crops(self, indices: np.ndarray, crop: CropPlan, size: int) -> torch.Tensor:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        x = self.images.index_select(0, idx).float().div_(255.0)
        n, _, h, w = x.shape
        boxes = torch.tensor([crop.box(j, w, h) for j in range(n)], dtype=torch.float32).view(n, 4)
        # affine_grid maps output coords u in [-1, 1] to input coords a*u + b (align_corners=False convention)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = (boxes[:, 2] - boxes[:, 0]) / w
        theta[:, 0, 2] = (boxes[:, 0] + boxes[:, 2]) / w - 1
        theta[:, 1, 1] = (boxes[:, 3] - boxes[:, 1]) / h
        theta[:, 1, 2] = (boxes[:, 1] + boxes[:, 3]) / h - 1
        grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.expand(n, 3, size, size).contiguous() if out.shape[1] == 1 else out


class ImageFolder(ImageSource):
    """An ImageNet-style folder: one sub-folder per class (sorted names = label order), images inside.

    Images are decoded with PIL when a batch is cut, on ``workers`` threads (PIL releases the GIL).
    """

    def __init__(self, root: str | os.PathLike, workers: int = 4):
        root = Path(root)
        if not root.is_dir():
            raise UserError(f"{root}: data folder does not exist (expected one sub-folder per class)")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        files, labels = [], []
        for label, cls in enumerate(classes):
            for dirpath, _, names in sorted(os.walk(root / cls, followlinks=True)):
                for n in sorted(names):
                    if n.lower().endswith(IMAGE_EXTENSIONS):
                        files.append(os.path.join(dirpath, n))
                        labels.append(label)
        if not files:
            raise UserError(f"{root}: no images found (expected class sub-folders holding "
                            f"{', '.join(IMAGE_EXTENSIONS)} files)")
        self.root, self.files, self.labels = root, files, np.asarray(labels, np.int64)
        self.classes, self.name = tuple(classes), str(root)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self._pool = ThreadPoolExecutor(max_workers=workers)

    def _load(self, path: str, box: Callable[[int, int], Box], size: int) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
                resized = img.resize((size, size), Image.Resampling.BILINEAR, box=box(*img.size))
        except (OSError, UnidentifiedImageError) as exc:
            raise UserError(f"{path}: cannot read image ({exc})") from None
        return np.asarray(resized, dtype=np.uint8)

    def crops(self, indices: np.ndarray, crop: CropPlan, size: int) -> torch.Tensor:
        jobs = [self._pool.submit(self._load, self.files[i], lambda w, h, j=j: crop.box(j, w, h), size)
                for j, i in enumerate(np.asarray(indices).tolist())]
        arr = np.stack([j.result() for j in jobs])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX array (the MNIST format, optionally gzipped); errors name the file."""
    path = Path(path)
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise UserError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise UserError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 1
    data = raw[4 + 4 * ndim:]
    if len(data) != count * dtype.itemsize:
        raise UserError(f"{path}: IDX payload has {len(data)} bytes, header says {count * dtype.itemsize}")
    return np.frombuffer(data, dtype=dtype).reshape(dims)


def fashion_mnist(split: str = "train", root: str | os.PathLike | None = None) -> TensorImages:
    """Fashion-MNIST's ``train`` (60,000) or ``t10k`` (10,000) split as 1-channel images shown as RGB."""
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    if split not in ("train", "t10k"):
        raise UserError(f"split: expected train or t10k, got {split!r}")
    images = root / f"{split}-images-idx3-ubyte.gz"
    labels = root / f"{split}-labels-idx1-ubyte.gz"
    for p in (images, labels):
        if not p.is_file():
            raise UserError(f"{p}: Fashion-MNIST file missing (install Debian's dataset-fashion-mnist)")
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise UserError(f"{root}: Fashion-MNIST images {x.shape} and labels {y.shape} do not match")
    imgs = torch.from_numpy(x.copy()).unsqueeze(1)
    return TensorImages(imgs, y.astype(np.int64), FASHION_MNIST_CLASSES, f"fashion-mnist/{split}",
                        (0.2860,) * 3, (0.3530,) * 3)


def open_source(source: str, workers: int = 4) -> ImageSource:
    """``fashion-mnist`` (its training split) or the path of an image folder."""
    return fashion_mnist("train") if source == "fashion-mnist" else ImageFolder(source, workers)


# --- splits and batches ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Splits:
    """Index sets into one training source: ``train`` to learn from, ``holdout`` (never trained on) to measure
    accuracy, ``calib`` (a subset of ``train``) to re-estimate BatchNorm statistics."""

    source: ImageSource
    train: np.ndarray
    holdout: np.ndarray
    calib: np.ndarray


def make_splits(source: ImageSource, holdout: int, seed: int = 0, train_subset: int | None = None,
                eval_images: int | None = None, calib_images: int = 2000) -> Splits:
    """Shuffle once with ``seed``; the first ``holdout`` images are held out, the rest train (optionally the
    first ``train_subset`` of them); ``eval_images`` caps the held-out images measured."""
    n = len(source)
    if holdout >= n:
        raise UserError(f"data.holdout: {holdout} images held out leaves none to train on (source has {n})")
    perm = np.random.default_rng(seed).permutation(n)
    held, train = perm[:holdout], perm[holdout:]
    if train_subset is not None:
        train = train[:train_subset]
    if eval_images is not None:
        held = held[:eval_images]
    return Splits(source, train, held, train[:min(calib_images, len(train))])


def train_batch(source: ImageSource, indices: np.ndarray, size: int, rng: np.random.Generator,
                scale: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised training batch at ``size``: random-resized crop and horizontal flip."""
    x = source.crops(indices, RandomResizedCrop.draw(rng, len(indices), scale), size)
    flip = torch.from_numpy(rng.random(len(indices)) < 0.5)
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    return source.normalize(x), torch.from_numpy(source.labels[indices])


def eval_batches(source: ImageSource, indices: np.ndarray, size: int, batch_size: int,
                 center_crop: float = 0.875) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised evaluation batches at ``size`` (centre crop), in order."""
    crop = CenterCrop(center_crop)
    for s in range(0, len(indices), batch_size):
        idx = indices[s:s + batch_size]
        yield source.normalize(source.crops(idx, crop, size)), torch.from_numpy(source.labels[idx])


T = TypeVar("T")


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Produce ``items`` on a background thread, ``depth`` ahead of the consumer (exceptions re-raised)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put((True, item))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put((False, exc))
            return
        q.put((True, done))

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(0.01)
