"""The development sessions' GPU routine (dev/gpu): what goes back from the device, and how it is filed here.

These scripts never run in CI for real (they drive the `device` tool); their bookkeeping does, here,
on fake records: a wrong rule would lose a GPU run or overwrite a committed record.
"""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

GPU = Path(__file__).resolve().parents[1] / "dev" / "gpu"


def _load(name: str):
    sys.path.insert(0, str(GPU))  # collect.py imports session
    try:
        spec = importlib.util.spec_from_file_location(f"dev_gpu_{name}", GPU / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(GPU))


session, collect = _load("session"), _load("collect")


def _record(status: str, epochs: int, total: int = 200) -> dict:
    return {"config": {"epochs": total}, "status": status, "best_acc": 50.0 if epochs else None,
            "history": [{"acc": 50.0, "train_s": 2.0, "eval_s": 0.5} for _ in range(epochs)]}


def test_records_folders_travel_as_one_safe_folder_name():
    assert session.folder_slug("results/zsq/paper") == "results__zsq__paper"
    for bad in ("/results/zsq", "results/../x", "zsq/paper", "results/a__b", ""):
        with pytest.raises(SystemExit, match="RECORDS must be a folder under results/"):
            session.folder_slug(bad)


@pytest.fixture
def device(tmp_path, monkeypatch):
    """A device-side work folder with one sweep on results/zsq/paper and an empty $OUT."""
    work, out = tmp_path / "work", tmp_path / "out"
    rec = work / "records" / "results__zsq__paper"
    (rec / "checkpoints").mkdir(parents=True)
    (work / "sweeps" / "1").mkdir(parents=True)
    (work / "sweeps" / "1" / "records").write_text("results/zsq/paper\n")
    (work / "sweeps" / "1" / "log.txt").write_text("sweep log\n")
    (work / "sweeps" / "1" / "rc").write_text("3\n")
    out.mkdir()
    monkeypatch.setenv("WORK", str(work))
    monkeypatch.setenv("OUT", str(out))
    return rec, out


def _write(path: Path, obj) -> None:
    path.write_text(json.dumps(obj)) if isinstance(obj, dict) else path.write_bytes(obj)


def test_send_brings_back_changed_records_and_the_states_to_resume(device):
    rec, out = device
    _write(rec / "old.json", _record("complete", 200))  # found at the start, unchanged: stays
    _write(rec / "checkpoints" / "old.pt", b"x" * 10)
    snap = {str(rec / "old.json"): session.stamp(rec / "old.json"),
            str(rec / "checkpoints" / "old.pt"): session.stamp(rec / "checkpoints" / "old.pt")}
    (rec.parents[1] / "snapshot.json").write_text(json.dumps(snap))  # what `setup` found
    _write(rec / "done.json", _record("complete", 200))
    _write(rec / "checkpoints" / "done.pt", b"d" * 10)  # a complete run's state: not needed
    _write(rec / "run.json", _record("running", 20))
    _write(rec / "checkpoints" / "run.pt", b"r" * 10)
    _write(rec / "checkpoints" / "run-epoch007.pt", b"k" * 10)  # a kept epoch
    assert session.cmd_send(None) == 0
    with tarfile.open(out / "records.tgz") as tar:
        names = sorted(tar.getnames())
    assert names == ["logs/sweep-1.txt", "results/zsq/paper/done.json", "results/zsq/paper/run.json"]
    back = sorted(p.name for p in (out / "ckpt" / "results__zsq__paper").iterdir())
    assert back == ["run-epoch007.pt", "run.pt"]
    # The next call: the running state again (it changes), the kept epoch not (it went back once).
    for p in (out / "ckpt" / "results__zsq__paper").iterdir():
        p.unlink()
    assert session.cmd_send(None) == 0
    assert sorted(p.name for p in (out / "ckpt" / "results__zsq__paper").iterdir()) == ["run.pt"]


def test_send_keeps_within_what_one_call_brings_back(device, monkeypatch, capsys):
    rec, out = device
    (rec.parents[1] / "snapshot.json").write_text("{}")
    for name in "abc":
        _write(rec / f"{name}.json", _record("stopped", 5))
        _write(rec / "checkpoints" / f"{name}.pt", b"z" * 1000)
    monkeypatch.setattr(session, "MIB", 1)  # limits in bytes: 2 checkpoints fit, the third does not
    monkeypatch.setattr(session, "BACK_ALL", 1 + 2 * 1000 + 600)
    session.cmd_send(None)
    assert len(list((out / "ckpt" / "results__zsq__paper").iterdir())) == 2
    assert "LEFT ON THE DEVICE" in capsys.readouterr().err
    monkeypatch.setattr(session, "BACK_ALL", 10 ** 9)
    monkeypatch.setattr(session, "BACK_FILES", 3)  # log.txt, records.tgz and one checkpoint
    for p in (out / "ckpt" / "results__zsq__paper").iterdir():
        p.unlink()
    session.cmd_send(None)
    assert len(list((out / "ckpt" / "results__zsq__paper").iterdir())) == 1


def _back(tmp_path: Path, records: dict, ckpts: dict = (), members: list | None = None) -> Path:
    """A fake FILES_AT: records.tgz with these records, and ckpt/<folder>/<name>.pt files."""
    back = tmp_path / "back"
    back.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in [*((n, json.dumps(r).encode()) for n, r in records.items()), *(members or [])]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (back / "records.tgz").write_bytes(buf.getvalue())
    for name, data in dict(ckpts).items():
        (back / name).parent.mkdir(parents=True, exist_ok=True)
        (back / name).write_bytes(data)
    return back


@pytest.fixture
def here(tmp_path):
    root = tmp_path / "repo"
    (root / "results" / "zsq" / "paper" / "checkpoints").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def test_collect_files_records_and_checkpoints_and_never_steps_back(here, tmp_path, capsys):
    paper = here / "results" / "zsq" / "paper"
    _write(paper / "final.json", _record("complete", 200))
    _write(paper / "ahead.json", _record("stopped", 50))
    _write(paper / "checkpoints" / "done.pt", b"old state")
    back = _back(tmp_path, {"results/zsq/paper/final.json": _record("stopped", 10),   # behind a complete one
                            "results/zsq/paper/ahead.json": _record("stopped", 40),   # fewer epochs than here
                            "results/zsq/paper/done.json": _record("complete", 200),
                            "results/zsq/paper/new.json": _record("stopped", 30),
                            "results/zsq-diag/new.json": _record("running", 12)},
                 {"ckpt/results__zsq__paper/new.pt": b"new state", "ckpt/results__zsq__paper/done.pt": b"late",
                  "ckpt/results__zsq-diag/new-epoch009.pt": b"kept"},
                 members=[("logs/sweep-1.txt", b"log")])
    assert collect.main([str(back)], root=here) == 1  # something was not filed
    out, err = capsys.readouterr()
    assert json.loads((paper / "final.json").read_text())["status"] == "complete"
    assert len(json.loads((paper / "ahead.json").read_text())["history"]) == 50
    assert err.count("NOT FILED") == 2
    assert json.loads((paper / "done.json").read_text())["status"] == "complete"
    assert not (paper / "checkpoints" / "done.pt").exists()  # complete: its old state would be a trap
    assert (paper / "checkpoints" / "new.pt").read_bytes() == b"new state"
    assert (here / "results" / "zsq-diag" / "checkpoints" / "new-epoch009.pt").read_bytes() == b"kept"
    assert json.loads((here / "results" / "zsq-diag" / "new.json").read_text())["status"] == "running"
    assert [p.read_bytes() for p in here.glob(".gpu-logs/*/sweep-1.txt")] == [b"log"]
    carry = json.loads(out.split("the unfinished runs resume from: ")[1].splitlines()[0])
    assert carry == [".gpu", "results/zsq/paper/checkpoints/new.pt"]  # not the kept epoch, not a finished run


@pytest.mark.parametrize("member", ["../evil.json", "/abs/x.json", "elsewhere/x.json", "results/a__b/x.json"])
def test_collect_refuses_what_does_not_belong_in_results(here, tmp_path, member, capsys):
    back = _back(tmp_path, {member: _record("stopped", 1)})
    assert collect.main([str(back)], root=here) == 2
    assert "refusing archive member" in capsys.readouterr().err
    assert not list(here.rglob("x.json")) and not (here.parent / "evil.json").exists()


def test_collect_refuses_a_folder_that_is_not_a_call_of_session_sh(here, tmp_path, capsys):
    assert collect.main([str(tmp_path)], root=here) == 2
    assert "no records.tgz" in capsys.readouterr().err
