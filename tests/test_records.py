"""Tests of ``akt_lib.records``: JSON run records and atomic checkpoints.

Oracles: the standard ``json`` module in strict mode (no NaN), hand-built histories, and files
written here (corrupt, foreign JSON, non-dict checkpoints).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch

from akt_lib import records
from akt_lib.records import (finish_record, load_checkpoint, load_record, load_records, new_record, results_dir,
                             save_checkpoint, save_record)


def _strict_json(path: Path):
    """Parse as standard JSON: NaN / Infinity literals (Python's extension) are refused."""
    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


def _record() -> dict:
    return new_record("zsq", "gdfq_w4a4", "cifar10-jpeg", {"w_bits": 4, "a_bits": 4, "lr": 1e-3}, seed=0,
                      profile="smoke", device="cpu")


def test_new_record_provenance():
    rec = _record()
    assert rec["dataset_display"] == "CIFAR-10 (JPEG q75)"
    assert rec["status"] == "running" and rec["history"] == [] and rec["best_acc"] is None
    assert rec["torch"] == torch.__version__ and rec["device"].startswith("cpu")
    assert rec["config"] == {"w_bits": 4, "a_bits": 4, "lr": 1e-3}
    with pytest.raises(ValueError, match="cifar10-jpeg"):
        new_record("zsq", "x", "cifar-10", {}, 0, "smoke", "cpu")


def test_save_load_round_trip_with_nan_tensor_and_path(tmp_path):
    rec = _record()
    rec["history"] = [{"epoch": 0, "acc": 10.0, "loss": float("nan")},
                      {"epoch": 1, "acc": 12.5, "loss": float("inf")}]
    rec["config"]["teacher_path"] = tmp_path / "teacher.pth"
    rec["extra"] = {"per_class": torch.tensor([1.0, 2.0]), "shape": (3, 32, 32), 7: "int key"}
    path = save_record(rec, tmp_path / "sub" / "run.json")
    assert path == tmp_path / "sub" / "run.json"
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]  # no temporary file left behind
    raw = _strict_json(path)  # valid standard JSON despite NaN / inf
    assert raw["history"][0]["loss"] == "nan" and raw["history"][1]["loss"] == "inf"
    back = load_record(path)
    assert back["history"][0]["acc"] == 10.0 and back["history"][1]["acc"] == 12.5
    assert back["config"]["teacher_path"] == str(tmp_path / "teacher.pth")
    assert back["extra"] == {"per_class": [1.0, 2.0], "shape": [3, 32, 32], "7": "int key"}
    assert math.isnan(float(back["history"][0]["loss"])) and float(back["history"][1]["loss"]) == math.inf
    for key in ("kind", "name", "dataset", "seed", "profile", "status", "commit", "created", "torch"):
        assert back[key] == rec[key]
    assert rec["history"][0]["loss"] != rec["history"][0]["loss"]  # the caller's dict keeps its NaN


def test_failed_save_leaves_the_previous_record(tmp_path):
    path = tmp_path / "run.json"
    save_record(_record(), path)
    bad = _record()
    bad["config"]["model"] = object()  # not JSON-serialisable
    with pytest.raises(TypeError):
        save_record(bad, path)
    assert load_record(path)["config"] == {"w_bits": 4, "a_bits": 4, "lr": 1e-3}


def test_finish_record_best_and_final():
    rec = _record()
    rec["history"] = [{"epoch": 0, "acc": 10.0}, {"epoch": 1, "acc": 30.0}, {"epoch": 2, "loss": 0.3},
                      {"epoch": 3, "acc": 30.0}, {"epoch": 4, "acc": None}, {"epoch": 5, "acc": 20.0},
                      {"epoch": 6, "loss": 0.1}]
    out = finish_record(rec)
    assert out is rec
    # Best = highest accuracy, earliest epoch on ties (the reference keeps a strictly lower error);
    # final = the last evaluated epoch, not the last history entry.
    assert (rec["best_acc"], rec["best_epoch"], rec["final_acc"]) == (30.0, 1, 20.0)
    assert rec["status"] == "complete"


def test_finish_record_without_evaluations():
    rec = finish_record(_record())
    assert (rec["best_acc"], rec["best_epoch"], rec["final_acc"]) == (None, None, None)
    assert rec["status"] == "complete"


def test_load_records_skips_other_json(tmp_path):
    done = finish_record(_record())
    save_record(done, tmp_path / "a.json")
    teacher = finish_record(new_record("teacher", "r20", "cifar10", {}, 1, "short", "cpu"))
    save_record(teacher, tmp_path / "nested" / "deeper" / "teacher.json")
    save_record(_record(), tmp_path / "running.json")  # status "running"
    (tmp_path / "bench.json").write_text(json.dumps({"wall_s": 3.2}))  # JSON, not a record
    (tmp_path / "list.json").write_text("[1, 2, 3]")
    (tmp_path / "broken.json").write_text('{"config": {')
    (tmp_path / "notes.txt").write_text("not json at all")

    recs = load_records(tmp_path)
    assert sorted(Path(r["_path"]).name for r in recs) == ["a.json", "teacher.json"]
    assert [r["name"] for r in load_records(tmp_path, kind="teacher")] == ["r20"]
    assert len(load_records(tmp_path, status=None)) == 3
    assert [Path(r["_path"]).name for r in load_records(tmp_path, status="running")] == ["running.json"]
    assert load_records(tmp_path / "does-not-exist") == []


def test_load_record_errors(tmp_path):
    (tmp_path / "bench.json").write_text(json.dumps({"wall_s": 3.2}))
    with pytest.raises(ValueError, match="not a run record"):
        load_record(tmp_path / "bench.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not a readable JSON"):
        load_record(tmp_path / "broken.json")
    with pytest.raises(ValueError, match="not a readable JSON"):
        load_record(tmp_path / "missing.json")


def test_finished_record_needs_a_teacher_callable(tmp_path):
    with pytest.raises(TypeError, match="teacher must be a callable that returns the teacher module"):
        records.finished_record(tmp_path / "x.json", {}, torch.nn.Linear(1, 1))


def test_results_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AKT_RESULTS_DIR", str(tmp_path))
    assert results_dir() == tmp_path
    monkeypatch.delenv("AKT_RESULTS_DIR")
    assert results_dir() == Path(records.__file__).resolve().parents[1] / "results"  # this checkout's


def test_results_dir_of_an_installed_package_is_the_current_folder(tmp_path, monkeypatch):
    # Installed (no pyproject.toml beside the package): records go to ./results, not into site-packages.
    site = tmp_path / "site-packages" / "akt_lib"
    site.mkdir(parents=True)
    monkeypatch.delenv("AKT_RESULTS_DIR", raising=False)
    monkeypatch.setattr(records, "__file__", str(site / "records.py"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert results_dir() == work / "results"
    (tmp_path / "site-packages" / "pyproject.toml").write_text("")  # a checkout after all
    assert results_dir() == tmp_path / "site-packages" / "results"


# --- checkpoints ------------------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    # An optimizer-like nested state (building a real torch.optim optimizer costs seconds of imports).
    opt_state = {"state": {0: {"momentum_buffer": torch.randn(2, 3)}}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}
    state = {"model": model.state_dict(), "optimizer": opt_state, "epoch": 3,
             "rng": torch.get_rng_state(), "config": {"w_bits": 4}}
    path = save_checkpoint(state, tmp_path / "ckpt" / "last.pt")
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]
    back = load_checkpoint(path)
    assert back["epoch"] == 3 and back["config"] == {"w_bits": 4}
    assert torch.equal(back["rng"], state["rng"])
    for k, v in state["model"].items():
        assert torch.equal(back["model"][k], v)
    assert torch.equal(back["optimizer"]["state"][0]["momentum_buffer"], opt_state["state"][0]["momentum_buffer"])
    assert back["optimizer"]["param_groups"] == opt_state["param_groups"]
    # Overwriting keeps exactly one file with the new content.
    save_checkpoint({"epoch": 4}, path)
    assert load_checkpoint(path) == {"epoch": 4}
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "missing.pt"))):
        load_checkpoint(tmp_path / "missing.pt")
    good = save_checkpoint({"epoch": 1}, tmp_path / "good.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # an interrupted copy
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(corrupt)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file")
    with pytest.raises(ValueError, match="delete it"):
        load_checkpoint(garbage)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a dict"):
        load_checkpoint(tmp_path / "list.pt")


def test_commit_from_the_environment_wins(monkeypatch):
    # A copy of the tree sent to a GPU machine may carry a stale .git: the sender's $AKT_COMMIT wins.
    from akt_lib.utils import git_commit

    monkeypatch.delenv("AKT_COMMIT", raising=False)
    here = git_commit()
    monkeypatch.setenv("AKT_COMMIT", "0123abc")
    assert git_commit() == "0123abc"
    assert new_record("zsq", "x", "cifar10-jpeg", {}, 0, "smoke", "cpu")["commit"] == "0123abc"
    monkeypatch.setenv("AKT_COMMIT", "")
    assert git_commit() == here


def test_module_fingerprint_needs_a_module():
    from akt_lib.records import module_fingerprint

    with pytest.raises(TypeError, match="needs a torch.nn.Module"):
        module_fingerprint({"weight": torch.zeros(2)})


def test_segments_say_how_many_runs_shared_the_device_and_whether_mps_ran(monkeypatch, tmp_path):
    from akt_lib.utils import mps_active
    monkeypatch.setenv("AKT_SIDE_BY_SIDE", "3")
    seg = records.start_segment({}, "cpu", "off", 0)
    assert seg["side_by_side"] == 3 and seg["mps"] is False  # a CPU run never runs under MPS
    monkeypatch.delenv("AKT_SIDE_BY_SIDE")
    assert records.start_segment({}, "cpu", "off", 0)["side_by_side"] == 1  # run by hand: alone, as far as known
    for bad in ("0", "-2", "two", ""):
        monkeypatch.setenv("AKT_SIDE_BY_SIDE", bad)
        with pytest.raises(ValueError, match=r"AKT_SIDE_BY_SIDE must be an int >= 1"):
            records.start_segment({}, "cpu", "off", 0)
    # MPS: CUDA's clients find the daemon by its control pipe in $CUDA_MPS_PIPE_DIRECTORY, and it must
    # report a server (a stand-in daemon here, answering get_server_list from a file).
    pipe, bin_dir = tmp_path / "pipe", tmp_path / "bin"
    pipe.mkdir(), bin_dir.mkdir()
    (bin_dir / "nvidia-cuda-mps-control").write_text(
        f'#!/bin/sh\nread cmd\n[ "$cmd" = get_server_list ] && cat "{pipe}/servers" 2>/dev/null\n'
        'exit 0\n')
    (bin_dir / "nvidia-cuda-mps-control").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(pipe))
    assert mps_active() is False  # no daemon's pipe
    (pipe / "control").touch()
    assert mps_active() is False  # a pipe, but no server: a dead daemon's leftover
    (pipe / "servers").write_text("4242\n")
    assert mps_active() is True
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path / "elsewhere"))
    assert mps_active() is False  # this process looks elsewhere: not a client of that daemon
