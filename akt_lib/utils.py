"""Small helpers every chapter's setup cell uses: seeding, device, provenance, showing source."""

from __future__ import annotations

import inspect
import math
import os
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

__all__ = ["seed_everything", "get_device", "git_commit", "device_name", "show_source", "colab_setup", "check_seconds",
           "check_int", "check_count", "check_positive"]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a CPU ``torch.Generator`` with that seed.

    Examples:
        >>> g = seed_everything(0); a = torch.rand(1); _ = seed_everything(0); bool(a == torch.rand(1))
        True
    """
    check_int(seed, "seed")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def check_seconds(value, name: str = "time_budget_s") -> float | None:
    """``value`` as a time limit in seconds: ``None`` (no limit) or a number >= 0; anything else is refused.

    The one check behind every ``time_budget_s=`` of the library and ``--time-budget`` of its commands
    (``cli.seconds_arg``), so that they all accept and refuse the same values.

    Examples:
        >>> check_seconds(None), check_seconds(90)
        (None, 90.0)
        >>> check_seconds(-1)
        Traceback (most recent call last):
        ...
        ValueError: time_budget_s must be a number of seconds >= 0 (or None for no limit), got -1
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a number of seconds >= 0 (or None for no limit), got {value!r}")
    return float(value)


def check_int(value, name: str, low: int = 0, high: int | None = None) -> int:
    """``value`` if it is a Python ``int`` with ``low <= value`` (and ``value <= high`` when ``high`` is given).

    The one integer check of the library (counts, sizes, seeds, epochs): a ``bool``, a float such as
    ``4.0``, ``None`` and a NumPy integer are refused (records are JSON, so only plain ints go in).

    Args:
        value: the value to check.
        name: the argument's name, used in the error message.
        low: smallest allowed value (inclusive).
        high: largest allowed value (inclusive), or ``None`` for no upper bound.

    Returns:
        ``value`` unchanged.

    Raises:
        ValueError: ``value`` is not an int in the range, naming ``name``, the bounds and ``value``.

    Examples:
        >>> check_int(3, "epochs", 1)
        3
        >>> check_int(True, "epochs", 1)
        Traceback (most recent call last):
        ...
        ValueError: epochs must be an int >= 1, got True
        >>> check_int(61, "max_doublings", 0, 60)
        Traceback (most recent call last):
        ...
        ValueError: max_doublings must be an int in 0..60, got 61
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{name} must be an int {bounds}, got {value!r}")
    return value


def check_count(value, name: str, minimum: int = 0) -> int | None:
    """``value`` as an int >= ``minimum``, or ``None``; a bool, float or smaller int is refused.

    Examples:
        >>> check_count(3, "stop_after_iters"), check_count(None, "stop_after_iters")
        (3, None)
        >>> check_count(True, "stop_after_iters")
        Traceback (most recent call last):
        ...
        ValueError: stop_after_iters must be an int >= 0 (or None), got True
    """
    if value is None:
        return None
    try:
        return check_int(value, name, minimum)
    except ValueError:
        raise ValueError(f"{name} must be an int >= {minimum} (or None), got {value!r}") from None


def check_positive(value, name: str) -> None:
    """Refuse anything but a finite number > 0 (a ``bool`` is refused too): temperatures, clip levels,
    rate factors. A Python-value check, so it costs no host synchronisation inside a training step.

    Examples:
        >>> check_positive(4.0, "T")
        >>> check_positive(True, "T")
        Traceback (most recent call last):
        ...
        ValueError: T must be a positive number, got True
    """
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def get_device(prefer: str | None = None) -> torch.device:
    """``prefer`` if given, else ``$AKT_DEVICE``, else CUDA when available, else CPU."""
    name = prefer or os.environ.get("AKT_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but torch.cuda.is_available() is False")
    return device


def device_name(device: torch.device | str | None = None) -> str:
    """Human-readable device, e.g. ``'NVIDIA H100 80GB HBM3'`` or ``'cpu (2 threads)'``."""
    device = torch.device(device) if device is not None else get_device()
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'' if threads == 1 else 's'})"


#: Environment variable through which a runner tells each run how many runs it puts side by side on
#: the device (``runner.run_jobs``; a whole GPU session's count when ``dev/gpu/session.py`` starts
#: several sweeps). Runs record it (``records.start_segment``): their wall times are shared times.
SIDE_BY_SIDE_ENV = "AKT_SIDE_BY_SIDE"


def side_by_side() -> int:
    """How many runs share the device with this one counted in, as its runner said (1 when run alone
    or by hand: the library cannot see other people's processes).

    Examples:
        >>> os.environ.pop(SIDE_BY_SIDE_ENV, None); side_by_side()
        1
    """
    value = os.environ.get(SIDE_BY_SIDE_ENV, "1")
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"${SIDE_BY_SIDE_ENV} must be an int >= 1 (runs sharing the device), got {value!r}")
    return n


def mps_active() -> bool:
    """Whether this process's CUDA work goes through NVIDIA MPS: a control daemon answers at the pipe
    directory CUDA clients look in and reports a running server.

    Under MPS the kernels of several processes run on the GPU at the same time instead of taking
    turns, which changes what side-by-side runs gain (``bench`` and the runs record it). CUDA looks
    in ``$CUDA_MPS_PIPE_DIRECTORY``, by default ``/tmp/nvidia-mps``, for the daemon's ``control``
    pipe; a client that cannot connect runs without MPS and says nothing, hence the question to the
    daemon (``get_server_list``) rather than the pipe's presence alone (a dead daemon leaves it).
    """
    if not (Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY") or "/tmp/nvidia-mps") / "control").exists():
        return False
    return bool(mps_servers())


def mps_servers(env: dict | None = None) -> list[str]:
    """The process ids of the MPS servers that the control daemon at the pipe directory of ``env``
    (default: this process's environment) reports; ``[]`` when no daemon or no
    ``nvidia-cuda-mps-control`` answers."""
    import shutil
    control = shutil.which("nvidia-cuda-mps-control", path=(env or os.environ).get("PATH"))
    if control is None:
        return []
    try:
        out = subprocess.run([control], input="get_server_list\n", env=env, capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()] if out.returncode == 0 else []


def git_commit(short: bool = False) -> str | None:
    """The library's git commit (``+dirty`` if the work tree has changes), or ``None`` outside git.

    ``$AKT_COMMIT``, when set, wins: whoever sends a copy of the tree to another machine (a GPU
    machine) sets it to the commit the copy was made from, since a ``.git`` travelling with the
    copy can be stale or missing.
    """
    if os.environ.get("AKT_COMMIT"):
        return os.environ["AKT_COMMIT"]
    repo = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short" if short else "HEAD"], cwd=repo,
                             capture_output=True, text=True, check=True).stdout.strip()
        # Untracked files count too: a new module of the library changes what runs.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=normal", "--", "akt_lib"],
                               cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


def show_source(obj) -> None:
    """Print the library's real source of ``obj`` (chapters show code this way, never a copy)."""
    print(inspect.getsource(obj))


def colab_setup() -> None:
    """Prepare an online machine without ``../shared`` (Colab) for the chapters.

    Downloads the third-party ResNet-20 (pinned commit, SHA-256 checked) into
    ``~/.cache/akt_lib/weights`` and points ``AKT_WEIGHTS_DIR`` there. Data needs nothing: without
    the JPEG copy, ``akt_lib.data.default_dataset()`` is ``"cifar10"``, which torchvision downloads.
    """
    from .models import load_akamaster_resnet20

    weights = Path("~/.cache/akt_lib/weights").expanduser()
    os.environ.setdefault("AKT_WEIGHTS_DIR", str(weights))
    load_akamaster_resnet20(download=True)
    print(f"weights in {os.environ['AKT_WEIGHTS_DIR']}; dataset: cifar10 (torchvision download)")
