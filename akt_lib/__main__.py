"""Command line: ``python -m akt_lib <command> [options]``.

Commands (each is a module's ``main(argv)``; ``python -m akt_lib <command> --help`` for options):

* ``teacher`` – train a full-precision teacher (``akt_lib.teacher``, chapter 2)
* ``zsq``     – run named zero-shot quantization experiments (``akt_lib.experiments``, chapters 3–5)
* ``labelfree`` – run named label-free QAT distillation experiments (``akt_lib.labelfree_experiments``, chapters 6–7)
* ``bench``   – time eager vs compiled training steps and concurrent runs (``akt_lib.bench``, appendix)
* ``fastcheck`` – a short zero-shot run eager (twice) and compiled, compared by accuracy
  (``akt_lib.fastcheck``, appendix)

``run`` of ``zsq`` and ``labelfree`` takes ``--jobs N`` to run rows × seeds side by side (``akt_lib.runner``).
"""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    "teacher": "akt_lib.teacher",
    "zsq": "akt_lib.experiments",
    "labelfree": "akt_lib.labelfree_experiments",
    "bench": "akt_lib.bench",
    "fastcheck": "akt_lib.fastcheck",
}


def _plain(text: str) -> str:
    """The module docstring for a terminal: reST literals (double backquotes) as plain text."""
    return text.replace("``", "")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(_plain(__doc__.strip()))
        return 0
    if not argv:
        print(_plain(__doc__.strip()), file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if os.environ.get("AKT_TORCH_THREADS"):  # set by akt_lib.runner for side-by-side CPU runs
        import torch

        torch.set_num_threads(int(os.environ["AKT_TORCH_THREADS"]))
    if command not in COMMANDS:
        print(f"unknown command {command!r}; available: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from .models import TeacherUnavailableError

    try:
        return importlib.import_module(COMMANDS[command]).main(rest) or 0
    except (FileNotFoundError, TeacherUnavailableError) as e:
        # What this machine lacks (a dataset, a teacher's weights), not a bug: its message says what to do.
        if os.environ.get("AKT_DEBUG"):
            raise
        print(f"python -m akt_lib {command}: error: {e}\n(AKT_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
