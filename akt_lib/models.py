"""CIFAR ResNets, named exactly like pytorchcv's ``resnet20_cifar10`` family, and teacher loaders.

* ``resnet20/32/44/56/110(num_classes=10)``: He et al.'s 6n+2 CIFAR ResNets with pytorchcv's module
  and parameter names (``features.init_block.conv``, ``features.stage2.unit1.identity_conv.bn``,
  ``output``...), so a pytorchcv state dict loads with ``strict=True`` and computes the same
  function. These are the papers' teachers (methods.md §1.1).
* ``akamaster_resnet20``: the option-A ResNet-20 of the third-party checkpoint in
  ``../shared/weights`` (``load_akamaster_resnet20``).
* ``load_teacher(name)``: one call for every teacher the book uses.

Every model in the library takes images normalised with the *dataset's* constants
(``akt_lib.data.DATASETS[name].mean/std``); a model trained with other constants converts
internally (see ``InputRenormalize``), so generators, BN-statistics losses and evaluation share
one input convention. ReLUs are modules (not ``F.relu``) so ``quantize_model`` can find them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .utils import check_int

__all__ = [
    "CIFARResNet",
    "ResUnit",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "build_model",
    "ARCHS",
    "akamaster_resnet20",
    "load_akamaster_resnet20",
    "AKAMASTER_SHA256",
    "load_teacher",
    "TEACHERS",
    "TeacherUnavailableError",
    "InputRenormalize",
]


class ConvBlock(nn.Module):
    """conv → BN → (ReLU); pytorchcv's ``ConvBlock`` names: ``conv``, ``bn``, ``activ``."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, padding: int, activate: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        if activate:
            self.activ = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.activ(x) if hasattr(self, "activ") else x


class ResBlock(nn.Module):
    """Body of a basic residual unit: conv3×3-BN-ReLU, conv3×3-BN (no final ReLU)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = ConvBlock(in_ch, out_ch, 3, stride, 1, activate=True)
        self.conv2 = ConvBlock(out_ch, out_ch, 3, 1, 1, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class ResUnit(nn.Module):
    """``activ(body(x) + identity(x))``; a 1×1 conv + BN projection where the shape changes.

    ``body``'s output (before the add and the ReLU) is the feature map AKT distils (§2a).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.body = ResBlock(in_ch, out_ch, stride)
        self.resize_identity = in_ch != out_ch or stride != 1
        if self.resize_identity:
            self.identity_conv = ConvBlock(in_ch, out_ch, 1, stride, 0, activate=False)
        self.activ = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.identity_conv(x) if self.resize_identity else x
        return self.activ(self.body(x) + identity)


class CIFARResNet(nn.Module):
    """pytorchcv's ``CIFARResNet`` (basic blocks): ``features`` → flatten → ``output``.

    Args:
        depth: 6n+2 (20, 32, 44, 56, 110, ...).
        num_classes: size of the output layer.

    Shapes: input ``(N, 3, 32, 32)`` → logits ``(N, num_classes)``.
    """

    def __init__(self, depth: int = 20, num_classes: int = 10):
        super().__init__()
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110...), got {depth!r}")
        check_int(num_classes, "num_classes", 2)
        n = (depth - 2) // 6
        self.depth, self.num_classes = depth, num_classes
        self.features = nn.Sequential()
        self.features.add_module("init_block", ConvBlock(3, 16, 3, 1, 1, activate=True))
        in_ch = 16
        for i, out_ch in enumerate((16, 32, 64)):
            stage = nn.Sequential()
            for j in range(n):
                stride = 2 if (j == 0 and i != 0) else 1
                stage.add_module(f"unit{j + 1}", ResUnit(in_ch, out_ch, stride))
                in_ch = out_ch
            self.features.add_module(f"stage{i + 1}", stage)
        self.features.add_module("final_pool", nn.AvgPool2d(kernel_size=8, stride=1))
        self.output = nn.Linear(in_ch, num_classes)
        self._init_params()

    def _init_params(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 64, 1, 1)
        return self.output(x.flatten(1))  # (N, num_classes)


def resnet20(num_classes: int = 10) -> CIFARResNet:
    """ResNet-20 for CIFAR, pytorchcv names (``resnet20_cifar10`` when ``num_classes=10``).

    Examples:
        >>> resnet20()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    return CIFARResNet(20, num_classes)


def resnet32(num_classes: int = 10) -> CIFARResNet:
    """ResNet-32 for CIFAR, pytorchcv names."""
    return CIFARResNet(32, num_classes)


def resnet44(num_classes: int = 10) -> CIFARResNet:
    """ResNet-44 for CIFAR, pytorchcv names."""
    return CIFARResNet(44, num_classes)


def resnet56(num_classes: int = 10) -> CIFARResNet:
    """ResNet-56 for CIFAR, pytorchcv names."""
    return CIFARResNet(56, num_classes)


def resnet110(num_classes: int = 10) -> CIFARResNet:
    """ResNet-110 for CIFAR, pytorchcv names (FAQD's teacher, methods.md §5a)."""
    return CIFARResNet(110, num_classes)


ARCHS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
}


def build_model(arch: str, num_classes: int = 10) -> nn.Module:
    """A fresh model by name (one of ``ARCHS``).

    Examples:
        >>> build_model("resnet56", num_classes=100).output.out_features
        100
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; available: {', '.join(ARCHS)}")
    return ARCHS[arch](num_classes=num_classes)


# --- the option-A ResNet-20 of ../shared/weights ------------------------------------------------


class InputRenormalize(nn.Module):
    """Convert input normalised with ``(src_mean, src_std)`` to ``(dst_mean, dst_std)``.

    ``x01 = x*src_std + src_mean``; output ``(x01 - dst_mean)/dst_std``. Float, never quantized;
    its constants are non-persistent buffers (they stay out of the state dict).
    """

    def __init__(self, src_mean: Sequence[float], src_std: Sequence[float],
                 dst_mean: Sequence[float], dst_std: Sequence[float]):
        super().__init__()
        src_mean, src_std, dst_mean, dst_std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1)
                                                for v in (src_mean, src_std, dst_mean, dst_std))
        self.register_buffer("gain", src_std / dst_std, persistent=False)
        self.register_buffer("shift", (src_mean - dst_mean) / dst_std, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain + self.shift


class ShortcutA(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad the channels (no parameters)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.pad = (out_ch - in_ch) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlockA(nn.Module):
    """akamaster's block: names ``conv1, bn1, conv2, bn2`` (+ a parameter-free ``shortcut``)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = ShortcutA(in_ch, out_ch) if (stride != 1 or in_ch != out_ch) else nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetA(nn.Module):
    """akamaster's option-A CIFAR ResNet (``conv1, bn1, layer1..3, linear``)."""

    def __init__(self, depth: int = 20, num_classes: int = 10, input_adapter: nn.Module | None = None):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.input_adapter = input_adapter if input_adapter is not None else nn.Identity()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        in_ch = 16
        for i, out_ch in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlockA(in_ch, out_ch, 2 if (j == 0 and i != 0) else 1))
                in_ch = out_ch
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(self.input_adapter(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.pool(x).flatten(1))


AKAMASTER_FILE = "resnet20_cifar10_akamaster-12fca82f.pth"
#: The same bytes at a fixed commit of the public repository (used only when ``download=True``).
AKAMASTER_URL = ("https://raw.githubusercontent.com/akamaster/pytorch_resnet_cifar10/"
                 "d5489e8995e81e91ce6b1d69dcc98ad579b0b153/pretrained_models/resnet20-12fca82f.th")
AKAMASTER_SHA256 = "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def akamaster_resnet20(input_normalization: tuple | None = None) -> ResNetA:
    """An untrained option-A ResNet-20 (akamaster names).

    Args:
        input_normalization: ``(mean, std)`` the *input* will be normalised with; the model
            converts it to the ImageNet normalisation it was trained with. ``None``: CIFAR-10's.
    """
    from .data import DATASETS  # local import: data imports nothing from here

    mean, std = input_normalization or (DATASETS["cifar10"].mean, DATASETS["cifar10"].std)
    return ResNetA(20, 10, InputRenormalize(mean, std, IMAGENET_MEAN, IMAGENET_STD))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_weights_dir() -> Path:
    """``$AKT_WEIGHTS_DIR``, else ``../shared/weights`` beside the repository."""
    env = os.environ.get("AKT_WEIGHTS_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "shared" / "weights"


def _download_akamaster(dest: Path) -> None:
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    try:
        urllib.request.urlretrieve(AKAMASTER_URL, tmp)  # noqa: S310 - fixed https URL
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise FileNotFoundError(f"could not download {AKAMASTER_URL} ({e}); offline, set AKT_WEIGHTS_DIR "
                                f"to a folder holding {AKAMASTER_FILE}") from e
    tmp.replace(dest)


def load_akamaster_resnet20(path: str | os.PathLike | None = None, check_hash: bool = True,
                            map_location: str | torch.device = "cpu", download: bool = False) -> ResNetA:
    """The third-party option-A ResNet-20 (trained on the original CIFAR-10; 91.78 % there).

    The checkpoint is ``{'best_prec1': ..., 'state_dict': {'module.'+name: tensor}}``; the
    ``module.`` prefix is stripped and the weights load with ``strict=True``. The returned model
    takes CIFAR-10-normalised input (it converts to the ImageNet normalisation it was trained
    with) and is in ``eval()`` mode.

    Args:
        path: the ``.pth`` file; default ``default_weights_dir()/resnet20_cifar10_akamaster-12fca82f.pth``.
        check_hash: verify the file's SHA-256 first.
        map_location: passed to ``torch.load``.
        download: when the file is missing, fetch it (online, e.g. Colab) from the public
            repository at a fixed commit into ``~/.cache/akt_lib/weights``; the SHA-256 is checked.

    Raises:
        FileNotFoundError: no file there (says where it is expected and how to point to it).
        ValueError: the file is not that checkpoint (wrong hash, or not a state dict).
    """
    path = Path(path) if path is not None else default_weights_dir() / AKAMASTER_FILE
    if not path.is_file() and download:
        path = Path("~/.cache/akt_lib/weights").expanduser() / AKAMASTER_FILE
        if not path.is_file():
            _download_akamaster(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"akamaster ResNet-20 checkpoint not found at {path}. It ships in ../shared/weights beside "
            "the repository; set AKT_WEIGHTS_DIR to the folder holding "
            f"{AKAMASTER_FILE}, or pass path=. Online, download=True fetches the same bytes "
            "(pretrained_models/resnet20-12fca82f.th of the GitHub repository akamaster/pytorch_resnet_cifar10)."
        )
    if check_hash and (digest := _sha256(path)) != AKAMASTER_SHA256:
        raise ValueError(f"{path} has SHA-256 {digest}, expected {AKAMASTER_SHA256}: corrupt or a different file")
    try:
        # weights_only=False: the file is a pickle of a dict with a float and a state dict; its
        # hash was checked above (or the caller vouches for it).
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(f"could not read {path} as a torch checkpoint: {e}") from e
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict (got {type(ckpt).__name__})")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = akamaster_resnet20()
    model.load_state_dict(state, strict=True)
    return model.eval()


# --- teachers by name --------------------------------------------------------------------------


class TeacherUnavailableError(RuntimeError):
    """A teacher's weights cannot be obtained here (typically: offline)."""


def _pytorchcv_teacher(model_name: str, num_classes: int) -> Callable[..., nn.Module]:
    def load(root: str | None = None) -> nn.Module:
        try:
            from pytorchcv.model_provider import get_model
        except ImportError as e:
            raise TeacherUnavailableError(
                f"{model_name} comes from pytorchcv: pip install pytorchcv (and be online)"
            ) from e
        kwargs = {"root": root} if root else {}
        try:
            ref = get_model(model_name, pretrained=True, **kwargs)
        except Exception as e:  # noqa: BLE001 - any download failure means the same to the reader
            raise TeacherUnavailableError(
                f"could not obtain pytorchcv's pretrained {model_name} ({type(e).__name__}: {e}). "
                "pytorchcv downloads these weights from GitHub at run time, which needs internet "
                "(Colab works). Offline, use load_teacher('akamaster_resnet20_cifar10') (the "
                "third-party ResNet-20 in ../shared/weights) or a teacher trained with "
                "`python -m akt_lib teacher` (chapter 2)."
            ) from e
        model = CIFARResNet(20, num_classes)
        model.load_state_dict(ref.state_dict(), strict=True)
        return model.eval()

    return load


def _shipped_teacher(name: str) -> Callable[..., nn.Module]:
    """Loader of a teacher trained with ``python -m akt_lib teacher`` and shipped in ``akt_lib/weights``."""

    def load(root: str | None = None) -> nn.Module:
        from .teacher import load_shipped_teacher  # local import: akt_lib.teacher imports this module

        return load_shipped_teacher(name, root)

    return load


def _akamaster_teacher(root: str | None) -> nn.Module:
    try:
        return load_akamaster_resnet20(None if root is None else Path(root) / AKAMASTER_FILE)
    except FileNotFoundError as e:  # one exception type for "this teacher cannot be had here"
        raise TeacherUnavailableError(str(e)) from e


#: Teachers by name → loader. The pytorchcv ones are the papers' teachers (online only).
TEACHERS: dict[str, Callable[..., nn.Module]] = {
    "resnet20_cifar10": _pytorchcv_teacher("resnet20_cifar10", 10),
    "resnet20_cifar100": _pytorchcv_teacher("resnet20_cifar100", 100),
    "akamaster_resnet20_cifar10": lambda root=None: _akamaster_teacher(root),
    # Ours, trained on CIFAR-10 (JPEG q75) by akt_lib.teacher; ResNet-110 is FAQD's teacher (§5).
    "resnet20_cifar10-jpeg": _shipped_teacher("resnet20_cifar10-jpeg"),
    "resnet110_cifar10-jpeg": _shipped_teacher("resnet110_cifar10-jpeg"),
}


def load_teacher(name: str, root: str | None = None) -> nn.Module:
    """A pretrained full-precision teacher by name, in ``eval()`` mode.

    Args:
        name: one of ``TEACHERS``: ``"resnet20_cifar10"`` / ``"resnet20_cifar100"`` (the papers'
            pytorchcv teachers, downloaded; needs internet), ``"akamaster_resnet20_cifar10"``
            (offline, ``../shared/weights``).
        root: where the weights live / are downloaded to (default: the loader's own).

    Raises:
        ValueError: unknown name (the message lists the known ones).
        TeacherUnavailableError: the weights cannot be obtained here; the message says what to
            use instead.
    """
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher {name!r}; available: {', '.join(TEACHERS)}")
    return TEACHERS[name](root=root)
