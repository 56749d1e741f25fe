"""Command line: ``python -m akt_lib <command> [options]``.

Commands (each is a module's ``main(argv)``; ``python -m akt_lib <command> --help`` for options):

* ``teacher`` – train a full-precision teacher (``akt_lib.teacher``, chapter 2)
* ``zsq``     – run named zero-shot quantization experiments (``akt_lib.experiments``, chapters 3–5)
* ``labelfree`` – run named label-free QAT distillation experiments (``akt_lib.labelfree_experiments``, chapters 6–7)
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "teacher": "akt_lib.teacher",
    "zsq": "akt_lib.experiments",
    "labelfree": "akt_lib.labelfree_experiments",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}; available: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[command]).main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
