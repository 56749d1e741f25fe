"""GDFQ's conditional generator, shared by GDFQ, GDFQ+AIT, AdaDFQ and AKT (methods.md §1.3).

The generator maps a Gaussian latent ``z`` and a class label ``y`` to a batch of images that the
teacher reads as inputs: ``Embedding(y) ⊙ z`` → Linear → three conv stages → Tanh → a per-channel
BatchNorm without affine parameters, so the images come out standardised per channel (mean 0,
variance 1 over the batch), i.e. in the teacher's normalised input space. The generator is always
used in ``train()`` mode (every BN normalises with the batch's own statistics). Introduced in the
zero-shot quantization chapter, next to ``akt_lib.bns`` (the BN-statistics loss that trains it).

One verb per concept: ``z, y = sample_latent(...)`` then ``x = generator(z, y)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .utils import check_int

__all__ = ["GDFQGenerator", "sample_latent"]


class GDFQGenerator(nn.Module):
    """The GDFQ generator: ``(z, y)`` → images in the teacher's normalised input space.

    Layers, exactly as the reference (``main.py: class Generator``)::

        Embedding(num_classes, latent_dim) ⊙ z
        Linear(latent_dim → 128·(img_size/4)²) → view (N, 128, img_size/4, img_size/4) → BN(128)
        upsample ×2 (nearest) → Conv3×3(128→128) → BN(128, eps=0.8) → LeakyReLU(0.2)
        upsample ×2 (nearest) → Conv3×3(128→64)  → BN(64, eps=0.8)  → LeakyReLU(0.2)
        Conv3×3(64→channels) → Tanh → BN(channels, affine=False)

    Keep it in ``train()`` mode, as the reference does: its BNs (the last one included) then use
    batch statistics, so every output channel has mean 0 and variance ≈ 1 over the batch.

    Args:
        num_classes: number of labels the embedding knows (10 for CIFAR-10).
        latent_dim: size of ``z`` and of the label embedding (100 in GDFQ/AdaDFQ/AKT).
        img_size: output height and width; a multiple of 4 (32 for CIFAR).
        channels: output channels (3 for RGB).

    Examples:
        >>> g = GDFQGenerator(num_classes=10)
        >>> z, y = sample_latent(4, num_classes=10, latent_dim=100)
        >>> g(z, y).shape
        torch.Size([4, 3, 32, 32])
    """

    def __init__(self, num_classes: int, latent_dim: int = 100, img_size: int = 32, channels: int = 3):
        super().__init__()
        self.num_classes = check_int(num_classes, "num_classes", 1)
        self.latent_dim = check_int(latent_dim, "latent_dim", 1)
        self.channels = check_int(channels, "channels", 1)
        if check_int(img_size, "img_size", 1) % 4:
            raise ValueError(f"img_size must be a multiple of 4 (two ×2 upsamplings), got {img_size}")
        self.img_size = img_size
        self.init_size = img_size // 4  # 8 for CIFAR

        self.embed = nn.Embedding(num_classes, latent_dim)
        self.fc = nn.Linear(latent_dim, 128 * self.init_size**2)
        self.bn0 = nn.BatchNorm2d(128)
        self.conv1 = nn.Conv2d(128, 128, 3, stride=1, padding=1)
        # Why eps=0.8: the PyTorch-GAN code GDFQ started from writes BatchNorm2d(128, 0.8), meaning
        # momentum, but the second positional argument of BatchNorm2d is *eps*. Every GDFQ-family
        # repository inherited it, so the faithful generator has eps=0.8 in these two BNs (it damps
        # the normalisation of low-variance channels). Kept on purpose.
        self.bn1 = nn.BatchNorm2d(128, eps=0.8)
        self.conv2 = nn.Conv2d(128, 64, 3, stride=1, padding=1)
        self.bn2 = nn.BatchNorm2d(64, eps=0.8)
        self.conv3 = nn.Conv2d(64, channels, 3, stride=1, padding=1)
        # No affine parameters: this BN only standardises each image channel over the batch, which
        # puts the images in the (normalised) input space the teacher was trained on.
        self.bn_out = nn.BatchNorm2d(channels, affine=False)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, latent_dim={self.latent_dim}, img_size={self.img_size}"

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Generate a batch of images.

        Args:
            z: latent codes, ``(N, latent_dim)`` float.
            y: labels, ``(N,)`` int64 in ``[0, num_classes)``.

        Returns:
            Images ``(N, channels, img_size, img_size)``.

        Raises:
            ValueError: bad shapes, or (CPU labels only) a label outside ``[0, num_classes)``. The
                range of labels on a GPU is not checked here: that would make every training step
                wait for the GPU, and the embedding there fails with a device-side assert instead.
            TypeError: non-integer labels.
        """
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be (N, {self.latent_dim}), got {tuple(z.shape)}")
        if y.shape != z.shape[:1]:
            raise ValueError(f"y must be (N,) = ({z.shape[0]},) labels, got {tuple(y.shape)}")
        if y.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"y must hold integer labels (int64), got {y.dtype}")
        if y.device.type == "cpu" and y.numel() and not torch.compiler.is_compiling():
            lo, hi = (int(v) for v in torch.aminmax(y))  # free on the CPU; a compiled step skips it
            if lo < 0 or hi >= self.num_classes:
                raise ValueError(f"labels must be in [0, num_classes) = [0, {self.num_classes}), "
                                 f"got labels from {lo} to {hi}")
        h = self.embed(y) * z  # (N, latent_dim): the label conditions z multiplicatively
        h = self.fc(h).view(-1, 128, self.init_size, self.init_size)  # (N, 128, 8, 8)
        h = self.bn0(h)
        h = F.interpolate(h, scale_factor=2, mode="nearest")  # (N, 128, 16, 16)
        h = F.leaky_relu(self.bn1(self.conv1(h)), 0.2)
        h = F.interpolate(h, scale_factor=2, mode="nearest")  # (N, 128, 32, 32)
        h = F.leaky_relu(self.bn2(self.conv2(h)), 0.2)  # (N, 64, 32, 32)
        return self.bn_out(torch.tanh(self.conv3(h)))  # (N, channels, 32, 32)


def sample_latent(batch_size: int, num_classes: int, latent_dim: int = 100,
                  generator: torch.Generator | None = None,
                  device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the generator's inputs: ``z ~ N(0, I)`` and labels uniform over the classes.

    Args:
        batch_size: N.
        num_classes: labels are drawn uniformly from ``[0, num_classes)``.
        latent_dim: size of ``z``.
        generator: optional ``torch.Generator`` for reproducible draws; the numbers are drawn on
            its device and then moved to ``device``.
        device: where the returned tensors live (default: the generator's device, else CPU).

    Returns:
        ``(z, y)``: ``z`` ``(N, latent_dim)`` float32, ``y`` ``(N,)`` int64.

    Examples:
        >>> z, y = sample_latent(3, num_classes=10, latent_dim=5, generator=torch.Generator().manual_seed(0))
        >>> z.shape, y.shape, y.dtype
        (torch.Size([3, 5]), torch.Size([3]), torch.int64)
    """
    check_int(batch_size, "batch_size", 1)
    check_int(num_classes, "num_classes", 1)
    check_int(latent_dim, "latent_dim", 1)
    draw_on = generator.device if generator is not None else (device if device is not None else "cpu")
    z = torch.randn(batch_size, latent_dim, generator=generator, device=draw_on)
    y = torch.randint(0, num_classes, (batch_size,), generator=generator, device=draw_on)
    if device is not None:
        z, y = z.to(device, non_blocking=True), y.to(device, non_blocking=True)
    return z, y
