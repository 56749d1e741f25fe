"""Command-line plumbing shared by the commands of ``python -m akt_lib``.

Every command refuses a bad argument before anything runs, with one line in ``argparse``'s style
and exit code 2: argument types (``seconds_arg``, ``seed_arg``, ``positive_int_arg``) for what can be
checked while parsing, ``check_device`` and ``check_out`` for what needs the machine. Every option's
help states its default (``HelpFormatter``), and ``run_summary`` prints one run's outcome the same
way for every command.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .utils import check_seconds, get_device

__all__ = ["HelpFormatter", "seconds_arg", "seed_arg", "positive_int_arg", "check_device", "check_out", "run_summary"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Adds ``(default: X)`` to an option's help, unless the help already names its default or there
    is none to name (``None``, a flag's ``False``, an empty list). Descriptions keep their line breaks."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default is None or default is False or default is argparse.SUPPRESS or "default" in text
                or not action.option_strings or (isinstance(default, (list, tuple)) and not default)):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})" if text else f"default: {shown}"


def seconds_arg(text: str) -> float:
    """``argparse`` type of ``--time-budget``: seconds >= 0 (``utils.check_seconds``).

    Examples:
        >>> seconds_arg("540")
        540.0
    """
    try:
        return check_seconds(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}") from None


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be an int >= {minimum}, got {text!r}")
    return value


def seed_arg(text: str) -> int:
    """``argparse`` type of ``--seed``/``--seeds``: an int >= 0, the seeds ``seed_everything`` accepts.

    Examples:
        >>> seed_arg("2")
        2
    """
    return _int_at_least(text, 0)


def positive_int_arg(text: str) -> int:
    """``argparse`` type of counts such as ``--jobs``, ``--steps``, ``--batch-size``: an int >= 1.

    Examples:
        >>> positive_int_arg("4")
        4
    """
    return _int_at_least(text, 1)


def check_device(parser: argparse.ArgumentParser, name: str | None, fast: str | None = None,
                 cuda_auto: str = "compile"):
    """The ``torch.device`` of ``--device`` (default: CUDA when available), checked with ``--fast``.

    A device this machine lacks (``--device cuda`` without a GPU, a misspelt name) or a fast mode it
    cannot run (``--fast cudagraphs`` on a CPU) ends the command with ``parser.error`` before anything
    runs, not with a traceback from inside the first run.
    """
    from .fast import resolve_fast

    try:
        device = get_device(name)
    except (RuntimeError, ValueError) as e:
        parser.error(f"--device {name}: {e}")
    if fast is not None:
        try:
            resolve_fast(fast, device, cuda_auto)
        except ValueError as e:
            parser.error(f"--fast {fast}: {e}")
    return device


def check_out(parser: argparse.ArgumentParser, path: str | os.PathLike) -> Path:
    """Create the output folder ``path`` (and its parents) now and check it is writable.

    Without this, a folder that cannot be made (a file in its path, no permission) would fail only
    when the first record is written, after the run it records.
    """
    path = Path(path)
    blocker = next((q for q in (path, *path.parents) if q.exists() and not q.is_dir()), None)
    if blocker is not None:
        parser.error(f"--out {path}: {blocker} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        parser.error(f"--out {path}: cannot create it ({e.strerror or e})")
    if not os.access(path, os.W_OK | os.X_OK):
        parser.error(f"--out {path}: not writable")
    return path


def run_summary(label: str, record: dict) -> str:
    """One line on how a run ended, for the commands' output.

    Examples:
        >>> run_summary("gdfq w4a4 seed 0", {"status": "complete", "best_acc": 17.1875, "best_epoch": 2,
        ...                                  "final_acc": 14.0625, "teacher_acc": 89.0625,
        ...                                  "config": {"eval_subset": 64}})
        'gdfq w4a4 seed 0: complete, best 17.19 % (epoch 2), final 14.06 %; teacher 89.06 % (on 64 test images)'
        >>> run_summary("x", {"status": "stopped", "config": {"epochs": 3}, "history": [{"epoch": 0, "acc": 10.9}]})
        'x: stopped after 1 of 3 epochs, best so far 10.90 %; rerun the same line to resume'
    """
    config = record.get("config") or {}
    evals = [h["acc"] for h in record.get("history") or [] if isinstance(h.get("acc"), (int, float))]
    status = record.get("status")
    if status == "complete" and record.get("best_acc") is not None:
        line = (f"{label}: complete, best {record['best_acc']:.2f} % (epoch {record.get('best_epoch')}), "
                f"final {record['final_acc']:.2f} %")
        if record.get("diverged"):
            line += f", diverged at epoch {record['diverged']['epoch']} (non-finite losses)"
    elif status == "stopped":
        line = f"{label}: stopped after {len(record.get('history') or [])} of {config.get('epochs', '?')} epochs"
        line += (f", best so far {max(evals):.2f} %" if evals else "") + "; rerun the same line to resume"
        return line
    else:
        return f"{label}: {status}" + (f" ({record['error']})" if record.get("error") else "")
    if record.get("teacher_acc") is not None:
        subset = config.get("eval_subset") or config.get("test_size")  # zero-shot / label-free runs
        on = f" (on {subset} test images)" if subset else ""
        line += f"; teacher {record['teacher_acc']:.2f} %{on}"
    return line
