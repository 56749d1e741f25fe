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
    for bad in ("/results/zsq", "results/../x", "zsq/paper", "results/a__b", "", "results/a+b", "results/a b"):
        with pytest.raises(SystemExit, match="RECORDS must be a folder under results/"):
            session.folder_slug(bad)


def test_a_start_knows_its_runs_and_refuses_to_train_one_twice():
    argv = ["adadfq+akt", "adadfq", "--bits", "w4a4", "--seeds", "1", "2", "--jobs", "3", "--keep-epochs", "7"]
    assert len(session.runs_of(argv)) == 4 and session.side_by_side(argv) == 3
    assert session.side_by_side(["gdfq", "--bits", "w4a4", "--jobs", "4"]) == 1  # one run: alone, whatever --jobs
    gdfq_bits = len(session.runs_of(["gdfq"]))  # no --bits: every bit-width of the row, each a run
    assert gdfq_bits > 1 and session.side_by_side(["gdfq", "--jobs=8"]) == gdfq_bits
    with pytest.raises(SystemExit):  # what `zsq run` would refuse, start refuses before anything starts
        session.runs_of(["gdfq", "--seeds", "-1"])
    assert session.side_by_side(["gdfq", "--seeds", "0", "1"]) == 1  # no --jobs: one after the other
    running = session.runs_of(["adadfq+akt", "--seeds", "2"])  # every bit-width of the row
    assert session.clashes(session.runs_of(argv), running) == [("adadfq+akt", "w4a4", "2")]
    assert session.clashes(session.runs_of(["adadfq+akt", "--bits", "w4a4", "--seeds", "0"]), running) == []


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
    (work / "snapshot.json").write_text("{}")
    out.mkdir()
    monkeypatch.setenv("WORK", str(work))
    monkeypatch.setenv("OUT", str(out))
    return rec, out


def _write(path: Path, obj) -> None:
    path.write_text(json.dumps(obj)) if isinstance(obj, dict) else path.write_bytes(obj)


def _sent(out: Path) -> tuple[list[str], dict]:
    """What one send put under $OUT: the archive's members, and {run file name: bytes} of the checkpoints."""
    with tarfile.open(out / "records.tgz") as tar:
        names = sorted(tar.getnames())
        manifest = json.loads(tar.extractfile("manifest.json").read())
    for path in out.rglob("*"):  # every name must be one the tool brings back
        assert session.SAFE.fullmatch(path.name), path
    return names, {e["name"]: (out / e["file"]).read_bytes() for e in manifest}


RUN = "adadfq+akt-w4a4-cifar10-jpeg-seed1-paper"  # a real run name: '+' never travels as a file name


def test_send_brings_back_changed_records_and_the_states_to_resume(device):
    rec, out = device
    _write(rec / "old.json", _record("complete", 200))  # found at the start, unchanged: stays
    _write(rec / "checkpoints" / "old.pt", b"x" * 10)
    snap = {str(rec / "old.json"): session.stamp(rec / "old.json"),
            str(rec / "checkpoints" / "old.pt"): session.stamp(rec / "checkpoints" / "old.pt")}
    (rec.parents[1] / "snapshot.json").write_text(json.dumps(snap))  # what `setup` found
    _write(rec / "done.json", _record("complete", 200))
    _write(rec / "checkpoints" / "done.pt", b"d" * 10)  # a complete run's state: not needed
    _write(rec / f"{RUN}.json", _record("running", 20))
    _write(rec / "checkpoints" / f"{RUN}.pt", b"r" * 10)
    _write(rec / "checkpoints" / f"{RUN}-epoch007.pt", b"k" * 10)  # a kept epoch
    assert session.cmd_send(None) == 0
    names, ckpts = _sent(out)
    assert names == ["logs/sweep-1.txt", "manifest.json", f"results/zsq/paper/{RUN}.json",
                     "results/zsq/paper/done.json"]
    assert ckpts == {f"{RUN}.pt": b"r" * 10, f"{RUN}-epoch007.pt": b"k" * 10}
    # The next call: the run's newer state (it changed) and, with room to spare, the kept epoch again
    # (in case the last call's files were lost); the new state first.
    _write(rec / "checkpoints" / f"{RUN}.pt", b"R" * 10)
    session.cmd_send(None)
    assert _sent(out)[1] == {f"{RUN}.pt": b"R" * 10, f"{RUN}-epoch007.pt": b"k" * 10}


def test_send_takes_turns_when_more_states_change_than_one_call_brings_back(device, monkeypatch, capsys):
    rec, out = device
    (rec.parents[1] / "sweeps" / "1" / "rc").unlink()  # the sweep is running
    for name in "abcde":
        _write(rec / f"{name}.json", _record("running", 5))
        _write(rec / "checkpoints" / f"{name}.pt", b"z" * 1000)
    _write(rec / "checkpoints" / "a-epoch003.pt", b"k" * 1000)
    monkeypatch.setattr(session, "BACK_FILES", 5)  # log.txt, records.tgz and three checkpoints a call
    rounds = []
    for _ in range(3):
        for name in "abcde":  # every run wrote a new state since the last call
            _write(rec / "checkpoints" / f"{name}.pt", bytes([len(rounds)]) * 1000)
        session.cmd_send(None)
        rounds.append(sorted(_sent(out)[1]))
    # a kept epoch never sent takes one slot; then the states never sent, then the longest unsent
    assert rounds == [["a-epoch003.pt", "a.pt", "b.pt"], ["c.pt", "d.pt", "e.pt"], ["a.pt", "b.pt", "c.pt"]]
    assert "LEFT ON THE DEVICE this call" in capsys.readouterr().err
    # once nothing runs, the states to resume from come before a kept epoch, and the message says to send again
    (rec.parents[1] / "sweeps" / "1" / "rc").write_text("3\n")
    _write(rec / "checkpoints" / "a-epoch004.pt", b"k" * 1000)
    for name in "abcde":  # the runs' last states, written as they stopped
        _write(rec / "checkpoints" / f"{name}.pt", b"s" * 1000)
    session.cmd_send(None)
    assert "a-epoch004.pt" not in _sent(out)[1] and "call `bash dev/gpu/session.sh send` again" in \
        capsys.readouterr().err
    monkeypatch.setattr(session, "BACK_FILES", 8)
    monkeypatch.setattr(session, "MIB", 1)  # limits in bytes: the size limit now stops it at two
    monkeypatch.setattr(session, "BACK_ALL", len((out / "records.tgz").read_bytes()) + 2 * 1000 + 200)
    session.cmd_send(None)
    assert len(_sent(out)[1]) == 2


def _back(tmp_path: Path, records: dict, ckpts: list = (), members: list | None = None) -> Path:
    """A fake FILES_AT: records.tgz with these records and a manifest of ``ckpts``
    ((folder, run file name, what, epochs, bytes)), each as ckpt/<n>.pt."""
    back = tmp_path / "back"
    (back / "ckpt").mkdir(parents=True)
    manifest = []
    for i, (folder, name, what, epochs, data) in enumerate(ckpts, 1):
        (back / "ckpt" / f"{i}.pt").write_bytes(data)
        manifest.append({"file": f"ckpt/{i}.pt", "folder": folder, "name": name, "what": what, "epochs": epochs})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in [*((n, json.dumps(r).encode()) for n, r in records.items()), *(members or []),
                           ("manifest.json", json.dumps(manifest).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (back / "records.tgz").write_bytes(buf.getvalue())
    return back


@pytest.fixture
def here(tmp_path):
    root = tmp_path / "repo"
    (root / "results" / "zsq" / "paper" / "checkpoints").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def test_collect_files_records_and_checkpoints_and_never_steps_back(here, tmp_path, capsys):
    paper, p = here / "results" / "zsq" / "paper", "results/zsq/paper"
    _write(paper / "final.json", _record("complete", 200))
    _write(paper / "ahead.json", _record("stopped", 50))
    _write(paper / "checkpoints" / "ahead.pt", b"state at 50")
    _write(paper / "checkpoints" / "done.pt", b"old state")
    _write(paper / "late.json", _record("stopped", 60))
    back = _back(tmp_path, {f"{p}/final.json": _record("stopped", 10),   # behind a complete one
                            f"{p}/ahead.json": _record("stopped", 40),   # fewer epochs than here
                            f"{p}/done.json": _record("complete", 200),
                            f"{p}/{RUN}.json": _record("stopped", 30),
                            "results/zsq-diag/new.json": _record("running", 12)},
                 [(p, f"{RUN}.pt", "stopped", 30, b"new state"), (p, "done.pt", "running", 150, b"late"),
                  (p, "ahead.pt", "stopped", 40, b"state at 40"),  # its record was refused: so is it
                  (p, "late.pt", "stopped", 55, b"state at 55"),  # older than the record here (60 epochs)
                  ("results/zsq-diag", "new-epoch009.pt", "kept", 12, b"kept")],
                 members=[("logs/sweep-1.txt", b"log")])
    assert collect.main([str(back)], root=here) == 1  # something was not filed
    out, err = capsys.readouterr()
    assert json.loads((paper / "final.json").read_text())["status"] == "complete"
    assert len(json.loads((paper / "ahead.json").read_text())["history"]) == 50
    assert (paper / "checkpoints" / "ahead.pt").read_bytes() == b"state at 50"  # not rolled back
    assert not (paper / "checkpoints" / "late.pt").exists()
    assert err.count("NOT FILED") == 2
    assert json.loads((paper / "done.json").read_text())["status"] == "complete"
    assert not (paper / "checkpoints" / "done.pt").exists()  # complete: its old state would be a trap
    assert (paper / "checkpoints" / f"{RUN}.pt").read_bytes() == b"new state"
    # an unfinished record whose state did not come with it waits for a call that brings both; its
    # kept epoch is filed (it rolls nothing back)
    assert "HELD BACK: results/zsq-diag/new.json" in err and not (here / "results" / "zsq-diag" / "new.json").exists()
    assert (here / "results" / "zsq-diag" / "checkpoints" / "new-epoch009.pt").read_bytes() == b"kept"
    assert [f.read_bytes() for f in here.glob(".gpu-logs/*/sweep-1.txt")] == [b"log"]
    assert not list(here.rglob("*.part"))
    carry = json.loads(out.split("the unfinished runs resume from: ")[1].splitlines()[0])
    # not the kept epoch, not a finished run
    assert carry == [".gpu", f"results/zsq/paper/checkpoints/{RUN}.pt", "results/zsq/paper/checkpoints/ahead.pt"]


@pytest.mark.parametrize("member", ["../evil.json", "/abs/x.json", "elsewhere/x.json", "results/a__b/x.json",
                                    "results/zsq/../../x.json"])
def test_collect_refuses_what_does_not_belong_in_results_and_files_nothing(here, tmp_path, member, capsys):
    good = "results/zsq/paper/good.json"
    back = _back(tmp_path, {good: _record("stopped", 1), member: _record("stopped", 1)})
    assert collect.main([str(back)], root=here) == 2
    assert "refusing archive member" in capsys.readouterr().err
    assert not (here / good).exists()  # checked first, filed after: nothing of a bad archive lands
    assert not list(here.rglob("x.json")) and not (here.parent / "evil.json").exists()


def test_collect_refuses_a_folder_that_is_not_a_call_of_session_sh(here, tmp_path, capsys):
    assert collect.main([str(tmp_path)], root=here) == 2
    assert "no records.tgz" in capsys.readouterr().err


def test_collect_holds_back_a_record_whose_checkpoint_did_not_come_and_refuses_a_bad_archive(here, tmp_path, capsys):
    p = "results/zsq/paper"
    back = _back(tmp_path, {f"{p}/a.json": _record("stopped", 5), f"{p}/b.json": _record("stopped", 7)},
                 [(p, "a.pt", "stopped", 5, b"A"), (p, "b.pt", "stopped", 7, b"B")])
    (back / "ckpt" / "1.pt").unlink()  # left out by the tool: a's record would be ahead of its state here
    (back / "ckpt" / "9.pt").write_bytes(b"?")  # not in the manifest: reported, not filed
    assert collect.main([str(back)], root=here) == 1
    err = capsys.readouterr().err
    assert "did not come back" in err and "HELD BACK: results/zsq/paper/a.json" in err and "9.pt" in err
    paper = here / "results" / "zsq" / "paper"
    assert not (paper / "a.json").exists() and not (paper / "checkpoints" / "a.pt").exists()
    assert (paper / "checkpoints" / "b.pt").read_bytes() == b"B" and (paper / "b.json").exists()
    # the same files again: b is what is here already (nothing to say), a still waits
    assert collect.main([str(back)], root=here) == 1
    assert "b.json" not in capsys.readouterr().err
    # at equal epochs, the later state (more wall time) wins; an earlier one is behind
    older, newer = dict(_record("stopped", 7), wall_time_s=10.0), dict(_record("stopped", 7), wall_time_s=20.0)
    for i, (rec, data, code) in enumerate(((newer, b"B2", 0), (older, b"B1", 1))):
        (tmp_path / "back").rename(tmp_path / f"old{i}")
        back = _back(tmp_path, {f"{p}/b.json": rec}, [(p, "b.pt", "stopped", 7, data)])
        assert collect.main([str(back)], root=here) == code
    assert (paper / "checkpoints" / "b.pt").read_bytes() == b"B2"
    # a member that is no record: nothing is filed, not even the good one beside it
    (tmp_path / "back").rename(tmp_path / "old3")
    back = _back(tmp_path, {f"{p}/c.json": _record("complete", 200), f"{p}/d.json": {"status": "complete"}})
    assert collect.main([str(back)], root=here) == 2 and not (paper / "c.json").exists()


def test_the_examples_in_session_py_hold():
    import doctest
    assert doctest.testmod(session).failed == 0
