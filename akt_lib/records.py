"""Run records and checkpoints: the provenance every number in the book carries.

A *record* is one JSON file per run in ``results/`` (or wherever the runner is pointed):

.. code-block:: text

    {"kind": "zsq" | "teacher" | ..., "name": ..., "dataset": ..., "dataset_display": ...,
     "config": {...full config...}, "seed": 0, "profile": "smoke",
     "history": [{"epoch": 0, "acc": ..., ...}, ...],
     "best_acc": ..., "best_epoch": ..., "final_acc": ..., "wall_time_s": ...,
     "device": "...", "torch": "...", "commit": "...", "created": "...", "status": "complete"}

A *checkpoint* is a ``torch.save``'d dict written atomically (write to a temporary file, then
rename), so an interrupted run never leaves a half-written file and ``--resume`` picks up the last
complete state.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from .data import check_dataset
from .utils import device_name, git_commit, mps_active, side_by_side

__all__ = ["new_record", "start_segment", "finish_record", "commit_of", "save_record", "load_record", "load_records",
           "save_checkpoint", "load_checkpoint", "results_dir", "module_fingerprint", "resume_teacher",
           "StopOnSignal", "mark_failed", "nonfinite_keys", "mark_diverged", "first_nonfinite_epoch",
           "finished_record"]

RECORD_VERSION = 1


def results_dir() -> Path:
    """Where run records go and where the book's tables read them: ``$AKT_RESULTS_DIR``; else the
    ``results/`` folder of the repository when the library runs from a checkout (the records the
    book reports); else, for an installed package, ``results/`` in the current folder (never
    inside site-packages, where a pip upgrade would delete the records)."""
    env = os.environ.get("AKT_RESULTS_DIR")
    if env:
        return Path(env).expanduser()
    root = Path(__file__).resolve().parents[1]
    return root / "results" if (root / "pyproject.toml").is_file() else Path.cwd() / "results"


def new_record(kind: str, name: str, dataset: str, config: dict, seed: int, profile: str,
               device: torch.device | str) -> dict:
    """Start a record (provenance filled in now; metrics appended by the runner)."""
    info = check_dataset(dataset)
    return {
        "record_version": RECORD_VERSION,
        "kind": kind,
        "name": name,
        "dataset": dataset,
        "dataset_display": info.display_name,
        "config": config,
        "seed": seed,
        "profile": profile,
        "history": [],
        "best_acc": None,
        "best_epoch": None,
        "final_acc": None,
        "wall_time_s": 0.0,
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "status": "running",
    }


def start_segment(record: dict, device: torch.device | str, fast: str | None, start: int) -> dict:
    """Note in ``record["segments"]`` the code and machine of one start or resume of the run.

    A run stopped by a time budget may resume under another commit, on another GPU or in another
    step mode: the top-level ``commit``/``device``/``torch`` name the first segment only, so every
    segment is listed, and ``mixed_commits`` says when the run's iterations came from more than one
    commit (its numbers then describe no single version of the code). ``side_by_side`` is how many
    runs the runner put on the device at once (``utils.side_by_side``; its wall time is then a shared
    time) and ``mps`` whether NVIDIA MPS ran their kernels concurrently.

    Examples:
        >>> rec = {}
        >>> seg = start_segment(rec, "cpu", "off", 0)
        >>> sorted(seg), rec["mixed_commits"]
        (['commit', 'device', 'fast', 'mps', 'side_by_side', 'start', 'started', 'torch'], False)
    """
    seg = {"start": int(start), "commit": git_commit(), "device": device_name(device), "torch": torch.__version__,
           "fast": fast, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           # runs sharing the device in this segment (its wall time is a shared time), and NVIDIA MPS
           "side_by_side": side_by_side(), "mps": torch.device(device).type == "cuda" and mps_active()}
    record.setdefault("segments", []).append(seg)
    record["mixed_commits"] = len({s["commit"] for s in record["segments"]}) > 1
    return seg


def mark_failed(record: dict, record_path: str | os.PathLike | None, error: BaseException) -> None:
    """Write ``status="failed"`` and the error into a run's record file when its loop raises.

    The checkpoint is left as it was (the last good state), so a rerun resumes from there; without
    this the record of a crashed run would say ``"running"`` forever.

    Examples:
        >>> rec = {"status": "running"}; mark_failed(rec, None, RuntimeError("CUDA out of memory"))
        >>> rec["status"], rec["error"]
        ('failed', 'RuntimeError: CUDA out of memory')
    """
    record["status"] = "failed"
    record["error"] = f"{type(error).__name__}: {error}"[:1000]
    if record_path is not None:
        save_record(record, record_path)


def nonfinite_keys(entry: dict, keys) -> list[str]:
    """The ``keys`` whose value in a history ``entry`` is not a finite number.

    NaN and infinity are written to JSON as the strings ``"nan"``, ``"inf"`` and ``"-inf"``; both
    spellings count. A key the entry lacks (or ``None``) is not reported.

    Examples:
        >>> nonfinite_keys({"loss": float("nan"), "kd": 1.0, "fa": "inf", "acc": None}, ("loss", "kd", "fa", "acc"))
        ['loss', 'fa']
    """
    bad = []
    for k in keys:
        v = entry.get(k)
        if v is None:
            continue
        try:
            if not math.isfinite(float(v)):
                bad.append(k)
        except (TypeError, ValueError):
            bad.append(k)
    return bad


def mark_diverged(record: dict, keys) -> bool:
    """Whether the newest epoch of ``record``'s history has non-finite losses among ``keys``; if so,
    note in ``record["diverged"]`` where (its ``epoch`` and ``iteration``) and which losses.

    A non-finite loss puts NaN into every gradient and, through the update, into the weights, so no
    later epoch can change the outcome: the trainers stop there and finish the run (its final
    accuracy is the last evaluation's) instead of spending the rest of the schedule on NaN. The
    schedule's remaining epochs are recorded as not run.

    Examples:
        >>> rec = {"config": {"epochs": 200}, "history": [{"epoch": 155, "iteration": 31200, "loss_s": "nan"}]}
        >>> mark_diverged(rec, ["loss_s"]), rec["diverged"]
        (True, {'epoch': 155, 'iteration': 31200, 'losses': ['loss_s'], 'epochs_not_run': 44})
        >>> mark_diverged({"history": [{"epoch": 0, "iteration": 1, "loss_s": 2.0}]}, ["loss_s"])
        False
    """
    last = record["history"][-1]
    bad = nonfinite_keys(last, keys)
    if bad:
        total = (record.get("config") or {}).get("epochs")
        record["diverged"] = {"epoch": int(last["epoch"]), "iteration": int(last["iteration"]), "losses": bad,
                              "epochs_not_run": int(total) - int(last["epoch"]) - 1 if total is not None else None}
    return bool(bad)


def first_nonfinite_epoch(record: dict, keys) -> int | None:
    """The first epoch of ``record``'s history with a non-finite loss among ``keys`` (None: none).

    Records written before the trainers stopped at a non-finite loss ran on through NaN epochs;
    this finds where that began.

    Examples:
        >>> first_nonfinite_epoch({"history": [{"epoch": 0, "loss": 1.0}, {"epoch": 1, "loss": "nan"}]}, ["loss"])
        1
    """
    if record.get("diverged"):
        return record["diverged"]["epoch"]
    for h in record.get("history") or []:
        if nonfinite_keys(h, keys):
            return h.get("epoch")
    return None


def resume_teacher(state: dict | None, ckpt_path, teacher: torch.nn.Module | None, resolve) -> tuple:
    """The teacher of a run that may be resuming: ``(name, teacher, sha256)``.

    A given ``teacher`` is named ``"given"``. Otherwise a resumed run (``state``: its checkpoint)
    loads the teacher it started with, by the name its record stored, rather than whatever
    ``resolve()`` (``-> (name, module)``, the config's ``"auto"`` choice) would pick today. Either
    way the weights must be those it started with (``teacher_sha256``).

    Raises:
        ValueError: the checkpoint was trained against other teacher weights.
    """
    name = "given"
    if teacher is None:
        stored = state["record"].get("teacher") if state is not None else None
        if stored not in (None, "given"):  # a resumed run keeps the teacher it started with
            from .models import load_teacher

            name, teacher = stored, load_teacher(stored)
        else:
            name, teacher = resolve()
    sha = module_fingerprint(teacher)
    if state is not None and state["record"].get("teacher_sha256", sha) != sha:
        raise ValueError(f"checkpoint {ckpt_path} was trained against another teacher ({name} has other "
                         "weights now): resuming would mix two teachers in one run; pass resume=False")
    return name, teacher, sha


def module_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state (names, shapes, dtypes and values): which weights a run used.

    Examples:
        >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
        >>> module_fingerprint(a) == module_fingerprint(a), module_fingerprint(a) == module_fingerprint(b)
        (True, False)
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module_fingerprint needs a torch.nn.Module (e.g. the teacher), got {type(module).__name__}")
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        t = value.detach().cpu().contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # 1-D: scalars (BN counters) too
    return h.hexdigest()


class StopOnSignal:
    """``with StopOnSignal() as stop:`` … ``if stop.requested: save and return``.

    While active (main thread only), SIGTERM — what ``timeout``, a job runner or a machine's
    shutdown sends — sets ``requested`` instead of killing the process, so a training loop can
    write its checkpoint and a ``"stopped"`` record at the next iteration. ``count`` says how many
    such signals came (a job runner kills on the second). The previous handler comes back on exit.
    Elsewhere (a worker thread) it does nothing.
    """

    def __init__(self, signals=(signal.SIGTERM,)):
        self.signals, self.requested, self.count, self._old = tuple(signals), False, 0, {}

    def _handle(self, signum, frame) -> None:
        self.requested = True
        self.count += 1

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def _atomic_write(path: Path, write) -> None:
    """``write(file)`` to a unique temporary file beside ``path``, flush it to disk, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make results unreadable to anyone else
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def commit_of(record: dict) -> str | None:
    """The commit whose files produced ``record`` (or model card).

    ``tree_commit`` where the record carries one: it was added to records written on a machine that
    was sent a copy of the tree with a stale ``.git``, whose ``commit`` field names the wrong commit.

    Examples:
        >>> commit_of({"commit": "87364f1+dirty", "tree_commit": "e03adb4"}), commit_of({"commit": "abc"})
        ('e03adb4', 'abc')
    """
    return record.get("tree_commit") or record.get("commit")


def finish_record(record: dict) -> dict:
    """Fill best/final accuracy from ``history`` (entries with an ``"acc"``) and mark complete."""
    evals = [h for h in record["history"] if h.get("acc") is not None]
    if evals:
        best = max(evals, key=lambda h: h["acc"])
        record["best_acc"], record["best_epoch"] = best["acc"], best["epoch"]
        record["final_acc"] = evals[-1]["acc"]
    record["status"] = "complete"
    return record


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # JSON has no NaN/inf; keep them visible rather than failing
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_record(record: dict, path: str | os.PathLike) -> Path:
    """Write ``record`` as pretty JSON, atomically. Returns the path."""
    path = Path(path)
    text = (json.dumps(_jsonable(record), indent=1) + "\n").encode()
    _atomic_write(path, lambda f: f.write(text))
    return path


def load_record(path: str | os.PathLike) -> dict:
    """Read one record; a clear error if the file is not one."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a readable JSON run record: {e}") from e
    if not isinstance(record, dict) or "config" not in record or "history" not in record:
        raise ValueError(f"{path} is JSON but not a run record (no 'config'/'history')")
    return record


def finished_record(path: str | os.PathLike | None, config: dict, teacher,
                    teacher_name: str | None = None) -> dict | None:
    """The complete record at ``path`` of a run with this ``config`` and teacher, or ``None``.

    What lets a rerun of a command line skip the runs it has finished, also where their
    checkpoints are gone (a clone holds the committed records, not the checkpoints) or are older
    than the record (a checkpoint of the run before it finished): without it, such a rerun would
    train the run again and write over its record.

    Args:
        path: where the run writes its record (``None``: nowhere, so nothing is finished).
        config: the run's config (``config.to_dict()``), compared as the record stores it (JSON).
        teacher: a callable returning the teacher module the run would use, called only when a
            complete record of ``config`` is there: the record counts only if its
            ``teacher_sha256`` is that teacher's ``module_fingerprint``.
        teacher_name: for a record older than fingerprints (no ``teacher_sha256``), the name of the
            teacher resolved by name: such a record counts only if it names the same one. ``None``
            (a given module, or no name to vouch) never counts it.

    Raises:
        TypeError: ``teacher`` is not callable (pass ``lambda: model``).
        ValueError: the file at ``path`` is not a run record (``load_record``).

    Examples:
        >>> finished_record(None, {}, lambda: None) is None
        True
    """
    if isinstance(teacher, torch.nn.Module) or not callable(teacher):  # a module is callable too: its forward
        raise TypeError(f"teacher must be a callable that returns the teacher module (e.g. lambda: model), "
                        f"got {type(teacher).__name__}")
    if path is None or not Path(path).is_file():
        return None
    done = load_record(path)
    # As the record stores it: JSON has lists, not tuples (milestones, betas).
    if done.get("status") != "complete" or done.get("config") != _jsonable(config):
        return None
    if "teacher_sha256" in done:
        return done if done["teacher_sha256"] == module_fingerprint(teacher()) else None
    return done if teacher_name is not None and done.get("teacher") == teacher_name else None


def load_records(folder: str | os.PathLike | None = None, kind: str | None = None,
                 status: str | None = "complete") -> list[dict]:
    """All records under ``folder`` (default ``results_dir()``), optionally of one kind/status."""
    folder = Path(folder) if folder is not None else results_dir()
    out = []
    for p in sorted(folder.rglob("*.json")) if folder.is_dir() else []:
        try:
            r = load_record(p)
        except ValueError:
            continue  # other JSON (bench files, model cards) lives there too
        if (kind is None or r.get("kind") == kind) and (status is None or r.get("status") == status):
            r["_path"] = str(p)
            out.append(r)
    return out


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically (temporary file + rename)."""
    path = Path(path)
    _atomic_write(path, lambda f: torch.save(state, f))
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by ``save_checkpoint``; a clear error if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        # weights_only=False: our checkpoints hold optimizer states, RNG states and config dicts.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"checkpoint {path} is corrupt or not a torch file ({type(e).__name__}: {e}); "
                         "delete it to start the run afresh") from e
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a dict")
    return state
