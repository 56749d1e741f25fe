"""Datasets by name, as uint8 tensors held in memory, plus their normalisation constants.

* ``"cifar10"`` and ``"cifar100"``: the originals, through torchvision (downloaded when online).
* ``"cifar10-jpeg"``: "CIFAR-10 (JPEG q75)", the lossy copy in ``../shared/data/cifar10-jpeg``
  (the only CIFAR offline). Decoded once with Pillow and cached as ``.npy``.

Where the data lives: the ``root`` argument, else ``$AKT_DATA_DIR``, else ``../shared/data``
beside the repository, else ``~/.cache/akt_lib/data`` (where torchvision downloads go).
Decoded caches go to ``$AKT_CACHE_DIR`` (default ``~/.cache/akt_lib``).

Images are returned as ``(N, 3, 32, 32)`` uint8 tensors and labels as ``(N,)`` int64; call
``normalize(x, name)`` on a batch (on any device) to get the float input every model expects.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .utils import check_int

__all__ = ["DatasetInfo", "DATASETS", "data_dir", "cache_dir", "load_split", "normalize", "denormalize",
           "fixed_subset", "check_batch_size", "iterate_batches", "check_dataset", "default_dataset"]


@dataclass(frozen=True)
class DatasetInfo:
    """What the library knows about a dataset: display name, classes, normalisation."""

    name: str
    display_name: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classes: tuple[str, ...] = ()


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_C10_MEAN, _C10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

#: Known datasets. Normalisation constants are the zero-shot repos' (methods.md §1.1); the JPEG
#: copy deliberately uses CIFAR-10's, so every teacher and method sees the papers' convention.
DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", "CIFAR-10", 10, _C10_MEAN, _C10_STD, CIFAR10_CLASSES),
    "cifar100": DatasetInfo("cifar100", "CIFAR-100", 100, (0.5071, 0.4867, 0.4408), (0.2675, 0.2557, 0.2761)),
    "cifar10-jpeg": DatasetInfo("cifar10-jpeg", "CIFAR-10 (JPEG q75)", 10, _C10_MEAN, _C10_STD, CIFAR10_CLASSES),
}
SPLITS = ("train", "test")


def check_dataset(name: str) -> DatasetInfo:
    """The ``DatasetInfo`` of ``name``; a ``ValueError`` listing the known names otherwise.

    Examples:
        >>> check_dataset("cifar10-jpeg").display_name
        'CIFAR-10 (JPEG q75)'
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    return DATASETS[name]


def default_dataset(root: str | os.PathLike | None = None) -> str:
    """The CIFAR-10 a chapter should use here: ``"cifar10-jpeg"`` where that copy is present (the
    offline machines this book is built on), else ``"cifar10"`` (the original, which torchvision
    downloads, e.g. in Colab). Chapters print the choice; numbers are labelled with it."""
    return "cifar10-jpeg" if (data_dir(root) / "cifar10-jpeg" / "test.npz").is_file() else "cifar10"


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """Resolve the data folder: ``root``, ``$AKT_DATA_DIR``, ``../shared/data``, ``~/.cache/akt_lib/data``."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("AKT_DATA_DIR"):
        return Path(os.environ["AKT_DATA_DIR"]).expanduser()
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if shared.is_dir():
        return shared
    return Path("~/.cache/akt_lib/data").expanduser()


def cache_dir() -> Path:
    """Where decoded arrays are cached: ``$AKT_CACHE_DIR`` or ``~/.cache/akt_lib``."""
    return Path(os.environ.get("AKT_CACHE_DIR", "~/.cache/akt_lib")).expanduser()


def _decode_jpeg_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    with np.load(path) as z:
        missing = {"jpeg", "offsets", "labels"} - set(z.files)
        if missing:
            raise ValueError(f"{path} is not a cifar10-jpeg file: arrays {sorted(missing)} are missing")
        blob, offsets, labels = z["jpeg"], z["offsets"], z["labels"]
    n = len(offsets) - 1
    if len(labels) != n:
        raise ValueError(f"{path}: {n} JPEG streams but {len(labels)} labels")
    images = np.empty((n, 32, 32, 3), dtype=np.uint8)  # (N, H, W, C)
    for i in range(n):
        with Image.open(io.BytesIO(blob[offsets[i]:offsets[i + 1]].tobytes())) as im:
            images[i] = np.asarray(im.convert("RGB"))
    return images, labels.astype(np.int64)


def _file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def _load_jpeg_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    src = root / "cifar10-jpeg" / f"{split}.npz"
    if not src.is_file():
        raise FileNotFoundError(
            f"CIFAR-10 (JPEG q75) {split} split not found at {src}. It ships in ../shared/data beside "
            "the repository; set AKT_DATA_DIR to the folder that contains cifar10-jpeg/ (or pass "
            "root=). Online you can use dataset='cifar10' (the original, downloaded by torchvision) instead."
        )
    cached = cache_dir() / f"cifar10-jpeg-{split}-{_file_key(src)}.npz"
    if cached.is_file():
        with np.load(cached) as z:
            return z["images"], z["labels"]
    images, labels = _decode_jpeg_npz(src)
    cached.parent.mkdir(parents=True, exist_ok=True)
    # One temporary file per process: runs started side by side (``--jobs``) all decode on a cold
    # cache, and with a shared temporary name one's rename pulled the file from under another's.
    tmp = cached.with_name(f"{cached.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, images=images, labels=labels)
    tmp.replace(cached)  # atomic: a half-written cache is never read
    return images, labels


def _load_torchvision_split(name: str, root: Path, split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        ds = cls(str(root), train=(split == "train"), download=download)
    except Exception as e:  # noqa: BLE001 - torchvision raises RuntimeError or URLError offline
        display = DATASETS[name].display_name
        raise FileNotFoundError(
            f"{display} ({split}) is not in {root} and could not be downloaded "
            f"({type(e).__name__}: {e}). torchvision downloads it when online (Colab works): "
            f"load_split({name!r}, {split!r}, download=True). Offline, the only CIFAR here is "
            "'cifar10-jpeg' (set AKT_DATA_DIR to the folder holding cifar10-jpeg/)."
        ) from e
    return np.asarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64)


@lru_cache(maxsize=8)
def _load_cached(name: str, split: str, root: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    root_path = Path(root)
    if name == "cifar10-jpeg":
        images, labels = _load_jpeg_split(root_path, split)
    else:
        images, labels = _load_torchvision_split(name, root_path, split, download)
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))  # (N, 3, 32, 32) uint8
    y = torch.from_numpy(labels)  # (N,) int64
    return x, y


def load_split(name: str, split: str = "test", root: str | os.PathLike | None = None,
               download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of a dataset as ``(images, labels)``: ``(N, 3, 32, 32)`` uint8, ``(N,)`` int64.

    Loaded once per process (and, for ``cifar10-jpeg``, decoded once per machine). Treat the
    returned tensors as read-only: they are shared between callers.

    Args:
        name: one of ``DATASETS``.
        split: ``"train"`` or ``"test"``.
        root: the data folder (default: ``data_dir()``).
        download: for ``cifar10``/``cifar100``, let torchvision download when missing.

    Raises:
        ValueError: unknown dataset or split.
        FileNotFoundError: the data is not there (the message says where and how to get it).
    """
    check_dataset(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return _load_cached(name, split, str(data_dir(root)), bool(download))


def normalize(x: torch.Tensor, name: str) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` images (or floats in [0, 1]) → float32 normalised with the dataset's constants.

    Examples:
        >>> normalize(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8), "cifar10").flatten()
        tensor([2.0591, 2.1265, 2.1158])
    """
    check_dataset(name)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(x.shape)}")
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    mean, std = _mean_std(name, x.device)
    return (x - mean) / std


def denormalize(x: torch.Tensor, name: str) -> torch.Tensor:
    """Inverse of ``normalize``: float images in [0, 1] (clamped), for display."""
    check_dataset(name)
    mean, std = _mean_std(name, x.device)
    return (x * std + mean).clamp(0, 1)


@lru_cache(maxsize=32)
def _mean_std(name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Built once per (dataset, device): a fresh torch.tensor(...) per batch would be a blocking
    # host-to-device copy on CUDA in every training and evaluation step.
    info = DATASETS[name]
    return (torch.tensor(info.mean, device=device).view(1, 3, 1, 1),
            torch.tensor(info.std, device=device).view(1, 3, 1, 1))


def fixed_subset(n: int, total: int, seed: int = 0) -> torch.Tensor:
    """``n`` distinct indices out of ``total``, the same for a given seed on every machine.

    The CIFAR-10 (JPEG q75) test set is sorted by class: take subsets through this, never ``[:n]``.

    Raises:
        TypeError: ``n`` or ``total`` is not an int (a ``bool`` is refused too).
        ValueError: ``n`` is not in ``1..total``.

    Examples:
        >>> fixed_subset(3, 10, seed=0).tolist() == fixed_subset(3, 10, seed=0).tolist()
        True
    """
    for value, name in ((n, "n"), (total, "total")):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if not 0 < n <= total:
        raise ValueError(f"subset size must be in 1..{total}, got {n}")
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=g)[:n].sort().values


def check_batch_size(batch_size) -> int:
    """``batch_size`` if it is an int >= 1 (a ``bool`` is refused), else a ``ValueError``.

    Examples:
        >>> check_batch_size(200)
        200
    """
    return check_int(batch_size, "batch_size", 1)


def iterate_batches(x: torch.Tensor, y: torch.Tensor | None, batch_size: int, shuffle: bool = False,
                    generator: torch.Generator | None = None, drop_last: bool = False
                    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Batches of in-memory tensors (on whatever device they are on); no DataLoader workers.

    Args:
        x: ``(N, ...)``; y: ``(N,)`` or ``None``.
        batch_size: an int >= 1.
        shuffle: draw a permutation (on ``x``'s device) from ``generator``.

    Raises:
        ValueError: ``batch_size`` is not an int >= 1, or ``y`` does not hold one label per row of ``x``.
    """
    check_batch_size(batch_size)
    n = x.shape[0]
    if y is not None and y.shape[:1] != x.shape[:1]:
        raise ValueError(f"y must hold one label per row of x: x has {n} rows, y has shape {tuple(y.shape)}")
    order = torch.randperm(n, generator=generator, device=x.device if generator is None else generator.device) \
        if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        idx = order[i:i + batch_size] if order is not None else slice(i, i + batch_size)
        yield x[idx], (y[idx] if y is not None else None)
