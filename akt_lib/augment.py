"""CIFAR training augmentation on whole batches, on whatever device the batch lives on.

The standard CIFAR recipe (He et al. 2016, and every teacher the papers use) is torchvision's
``RandomCrop(32, padding=4)`` followed by ``RandomHorizontalFlip()``, applied image by image in
DataLoader workers. Here the same two transforms act on a ``(N, C, H, W)`` batch in one indexing
operation, so a training set held on the GPU never visits the CPU (chapter 2, "Training a teacher").

* ``draw_crop_flip_params``: the random part (window offsets and flip decisions).
* ``crop_flip``: the deterministic part, for explicit offsets and flips.
* ``random_crop_flip = crop_flip(x, *draw_crop_flip_params(...))``.

As in torchvision, padding is with zeros *of the raw image*: pad uint8 images before normalising
(zero-padding an already normalised batch pads with the mean colour instead of black).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .utils import check_int

__all__ = ["draw_crop_flip_params", "crop_flip", "random_crop_flip"]


def _check_batch(x: torch.Tensor, padding: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a (N, C, H, W) batch tensor, got {shape}; add a batch dimension "
                         "with x.unsqueeze(0) for a single image")
    if x.dtype != torch.uint8 and not x.dtype.is_floating_point:
        raise TypeError(f"x must be uint8 or floating point, got {x.dtype}")
    check_int(padding, "padding")


def draw_crop_flip_params(n: int, padding: int = 4, generator: torch.Generator | None = None,
                          device: str | torch.device | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random window offsets and flips for ``n`` images: ``(top, left, flip)``, each ``(n,)``.

    ``top`` and ``left`` are uniform on ``0..2*padding`` (both ends included, as in torchvision's
    ``RandomCrop``) and index the *padded* image; ``flip`` is ``True`` with probability 0.5.

    Args:
        n: number of images.
        padding: pixels of zero padding per side.
        generator: drawn from this generator, on its device (default: the global RNG of ``device``).
        device: where the results go (default: the generator's device, else the CPU).

    Returns:
        ``top`` ``(n,)`` int64, ``left`` ``(n,)`` int64, ``flip`` ``(n,)`` bool.

    Examples:
        >>> top, left, flip = draw_crop_flip_params(5, generator=torch.Generator().manual_seed(0))
        >>> bool(((0 <= top) & (top <= 8)).all()), flip.dtype
        (True, torch.bool)
    """
    check_int(n, "n")
    check_int(padding, "padding")
    # Draw where the generator lives (a CUDA generator cannot fill CPU tensors, nor vice versa),
    # then move: for a GPU-resident batch pass a CUDA generator so nothing crosses the bus.
    draw_on = generator.device if generator is not None else torch.device(device or "cpu")
    out_to = torch.device(device) if device is not None else draw_on
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=draw_on)  # (2, n)
    flip = torch.randint(0, 2, (n,), generator=generator, device=draw_on).bool()  # (n,)
    return offsets[0].to(out_to), offsets[1].to(out_to), flip.to(out_to)


def _crop_flip(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
               padding: int) -> torch.Tensor:
    """``crop_flip`` without checks (no host-device synchronisation on the training hot path)."""
    n, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (padding, padding, padding, padding))  # (N, C, H+2p, W+2p), zeros outside
    rows = top.view(n, 1) + torch.arange(h, device=dev)  # (N, H) rows of the padded image
    cols = torch.arange(w, device=dev).expand(n, w)  # (N, W)
    # A flipped window reads its columns right to left: output column j = window column w-1-j.
    cols = torch.where(flip.view(n, 1), (w - 1) - cols, cols) + left.view(n, 1)  # (N, W)
    # One gather for the whole batch: four broadcast index tensors → (N, C, H, W).
    return padded[torch.arange(n, device=dev).view(n, 1, 1, 1), torch.arange(c, device=dev).view(1, c, 1, 1),
                  rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]


def crop_flip(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
              padding: int = 4) -> torch.Tensor:
    """Zero-pad every image by ``padding``, cut an ``H×W`` window at ``(top, left)``, flip some.

    Image ``i`` of the result is ``pad(x[i])[:, top[i]:top[i]+H, left[i]:left[i]+W]``, mirrored
    left-right where ``flip[i]``. Checks the offsets (one host-device sync); ``random_crop_flip``
    skips that check because its offsets are in range by construction.

    Args:
        x: ``(N, C, H, W)`` uint8 or float images.
        top, left: ``(N,)`` integer offsets into the padded image, each in ``0..2*padding``.
        flip: ``(N,)`` bool.
        padding: pixels of zero padding per side.

    Returns:
        ``(N, C, H, W)``, same dtype and device as ``x``.

    Examples:
        >>> x = torch.arange(4, dtype=torch.uint8).view(1, 1, 2, 2)
        >>> one = torch.ones(1, dtype=torch.long)
        >>> crop_flip(x, one, one, torch.tensor([True]), padding=1)[0, 0].tolist()
        [[1, 0], [3, 2]]
    """
    _check_batch(x, padding)
    n = x.shape[0]
    for name, t in (("top", top), ("left", left), ("flip", flip)):
        if not isinstance(t, torch.Tensor) or t.shape != (n,):
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a ({n},) tensor, one entry per image, got {got}")
    if top.is_floating_point() or left.is_floating_point() or flip.dtype != torch.bool:
        raise TypeError(f"top/left must be integer tensors and flip a bool tensor, got "
                        f"{top.dtype}/{left.dtype}/{flip.dtype}")
    if n and (min(int(top.min()), int(left.min())) < 0 or max(int(top.max()), int(left.max())) > 2 * padding):
        raise ValueError(f"top and left must lie in 0..{2 * padding} (= 2 * padding)")
    dev = x.device
    return _crop_flip(x, top.to(dev, torch.long), left.to(dev, torch.long), flip.to(dev), padding)


def random_crop_flip(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """``RandomCrop(H, padding)`` + ``RandomHorizontalFlip(0.5)`` for a whole batch, on its device.

    Vectorised (no per-image Python loop) and reproducible: the same generator state gives the
    same batch. Equals ``crop_flip(x, *draw_crop_flip_params(N, padding, generator, x.device))``.

    Args:
        x: ``(N, C, H, W)`` uint8 images (raw pixels: pad before normalising), or floats.
        padding: pixels of zero padding per side (4 for CIFAR).
        generator: a ``torch.Generator``; one on ``x``'s device avoids host-device copies.

    Returns:
        ``(N, C, H, W)``, same dtype and device as ``x``.

    Examples:
        >>> x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
        >>> random_crop_flip(x, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([8, 3, 32, 32])
    """
    _check_batch(x, padding)
    top, left, flip = draw_crop_flip_params(x.shape[0], padding, generator, x.device)
    return _crop_flip(x, top, left, flip, padding)
