"""akt_lib.teacher: tiny CPU runs of the teacher recipe (synthetic data unless said otherwise).

Every run here writes into pytest's tmp folders, never into results/.
"""

import json
import shutil
from pathlib import Path
from dataclasses import asdict

import pytest
import torch

import akt_lib.teacher as teacher
from akt_lib.data import DATASETS, normalize
from akt_lib.evaluate import evaluate
from akt_lib.models import TeacherUnavailableError, build_model, load_teacher
from akt_lib.teacher import (TeacherConfig, check_teacher_classes, load_shipped_teacher, load_trained_teacher,
                             main, train_teacher)



@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These runs use batches of 16: a second OpenMP thread mostly spin-waits (measured: 7x the CPU
    time on a busy 2-core machine), so use one here and restore the process's setting afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


TINY = dict(train_size=32, test_size=32, batch_size=16, eval_batch_size=32)  # seconds on a busy CPU


def fake_load_split(name, split="test", root=None, download=True):
    """A small synthetic stand-in with the dataset's class count (not the real data!)."""
    num_classes = DATASETS[name].num_classes
    n = 200 if split == "train" else 120
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    y = torch.arange(n) % num_classes
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return x, y


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    cfg = TeacherConfig.from_profile("smoke", **TINY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(teacher, "load_split", fake_load_split)
        model, record = train_teacher(cfg, out, progress=False, device="cpu")
    return model, record, out, cfg


def test_smoke_record_and_files(smoke_run):
    model, record, out, cfg = smoke_run
    name = "resnet20_cifar10-jpeg_smoke"
    assert {p.name for p in out.iterdir()} == {f"{name}.pt", f"{name}.json", f"{name}_record.json", f"{name}.ckpt"}
    assert record["kind"] == "teacher" and record["status"] == "complete"
    assert record["config"] == asdict(cfg) and record["seed"] == 0 and record["profile"] == "smoke"
    assert record["dataset"] == "cifar10-jpeg" and record["dataset_display"] == "CIFAR-10 (JPEG q75)"
    assert record["num_classes"] == 10 and record["train_size"] == 32 and record["test_size"] == 32
    assert record["device"].startswith("cpu") and "commit" in record and record["amp_dtype"] is None
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    for h in record["history"]:
        assert 0 <= h["acc"] <= 100 and 0 <= h["train_acc"] <= 100 and h["train_loss"] > 0
    assert record["final_acc"] == record["history"][-1]["acc"]
    assert record["best_acc"] == max(h["acc"] for h in record["history"])
    assert record["wall_time_s"] == pytest.approx(sum(h["train_s"] + h["eval_s"] for h in record["history"]))
    # One-cycle over 2 epochs x 2 steps, warm-up 1 step: lr after epoch 1 = peak * (4 - 2) / (4 - 1), then 0.
    assert record["steps_per_epoch"] == 2
    assert record["history"][0]["lr_end"] == pytest.approx(cfg.lr * 2 / 3)
    assert record["history"][-1]["lr_end"] == 0.0
    saved = json.loads((out / f"{name}_record.json").read_text())
    assert saved["final_acc"] == record["final_acc"] and saved["history"][0]["epoch"] == 1


def test_card_and_round_trip(smoke_run):
    model, record, out, cfg = smoke_run
    pt = out / "resnet20_cifar10-jpeg_smoke.pt"
    card = json.loads(pt.with_suffix(".json").read_text())
    for key in ("accuracy", "recipe", "seed", "wall_time_s", "device", "commit", "sha256", "num_classes"):
        assert key in card
    assert card["recipe"] == asdict(cfg) and card["accuracy"] == record["final_acc"]
    assert card["command"] == ("python -m akt_lib teacher --dataset cifar10-jpeg --arch resnet20 --profile smoke "
                               "--batch-size 16 --train-size 32 --test-size 32 (and, through the API, "
                               "eval_batch_size=32)")
    # A plain state dict, loadable without unpickling code.
    state = torch.load(pt, weights_only=True)
    assert state.keys() == model.state_dict().keys()
    loaded = load_trained_teacher(pt, dataset="cifar10-jpeg")
    assert not loaded.training and loaded.card["sha256"] == card["sha256"]
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # The card's accuracy is that of the saved weights on the (synthetic) test subset.
    x, y = fake_load_split("cifar10-jpeg", "test")
    idx = teacher.fixed_subset(32, len(x), seed=0)
    assert evaluate(loaded, x[idx], y[idx], "cifar10-jpeg") == pytest.approx(card["accuracy"])


def test_resume_is_exact(smoke_run, tmp_path, monkeypatch):
    straight, straight_record, _, cfg = smoke_run
    monkeypatch.setattr(teacher, "load_split", fake_load_split)
    _, rec = train_teacher(cfg, tmp_path, progress=False, device="cpu", stop_after=1)
    assert rec["status"] == "running" and len(rec["history"]) == 1
    assert not list(tmp_path.glob("*.pt"))  # an interrupted run leaves only its checkpoint
    resumed, rec = train_teacher(cfg, tmp_path, progress=False, device="cpu")
    assert rec["status"] == "complete" and rec["resumed_at_epochs"] == [1]
    assert [s["start"] for s in rec["segments"]] == [0, 1]  # one segment per start or resume, with its commit
    for k, v in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    for a, b in zip(straight_record["history"], rec["history"]):
        assert (a["train_loss"], a["acc"]) == (b["train_loss"], b["acc"])
    # A time budget (or SIGTERM) ends the call after the epoch that exceeds it, with a checkpoint.
    _, rec = train_teacher(cfg, tmp_path / "budget", progress=False, device="cpu", time_budget_s=0.0)
    assert rec["status"] == "running" and len(rec["history"]) == 1
    # Another recipe must not silently continue this checkpoint.
    with pytest.raises(ValueError, match="no-resume"):
        train_teacher(TeacherConfig.from_profile("smoke", **{**TINY, "lr": 0.05}), tmp_path, progress=False,
                      device="cpu", stop_after=0)


def test_missing_and_corrupt_files(smoke_run, tmp_path):
    _, _, out, _ = smoke_run
    for suffix in (".pt", ".json"):
        shutil.copy(out / f"resnet20_cifar10-jpeg_smoke{suffix}", tmp_path / f"t{suffix}")
    pt, card = tmp_path / "t.pt", tmp_path / "t.json"
    with pytest.raises(FileNotFoundError, match="python -m akt_lib teacher"):
        load_trained_teacher(tmp_path / "absent.pt")
    data = bytearray(pt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pt.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load_trained_teacher(pt)
    # Right hash, wrong content: caught when loading.
    pt.write_bytes(b"not a torch file")
    c = json.loads(card.read_text())
    card.write_text(json.dumps({**c, "sha256": teacher._sha256(pt)}))
    with pytest.raises(ValueError, match="could not load"):
        load_trained_teacher(pt)
    card.write_text("{ truncated")
    with pytest.raises(ValueError, match="not a teacher model card"):
        load_trained_teacher(pt)
    card.unlink()
    with pytest.raises(FileNotFoundError, match="model card"):
        load_trained_teacher(pt)


def test_class_count_mismatch(smoke_run):
    _, _, out, _ = smoke_run
    with pytest.raises(ValueError, match="10 output classes but CIFAR-100 has 100"):
        load_trained_teacher(out / "resnet20_cifar10-jpeg_smoke.pt", dataset="cifar100")
    with pytest.raises(ValueError, match="100 output classes"):
        check_teacher_classes(build_model("resnet20", 100), "cifar10")


def test_shipped_teacher_entries(smoke_run, tmp_path):
    _, _, out, _ = smoke_run
    command = "python -m akt_lib teacher --dataset cifar10-jpeg --arch resnet110"
    with pytest.raises(TeacherUnavailableError, match=command):
        load_teacher("resnet110_cifar10-jpeg", root=str(tmp_path))
    for suffix in (".pt", ".json"):
        shutil.copy(out / f"resnet20_cifar10-jpeg_smoke{suffix}", tmp_path / f"resnet20_cifar10-jpeg{suffix}")
    model = load_teacher("resnet20_cifar10-jpeg", root=str(tmp_path))
    assert model.num_classes == 10 and not model.training
    assert load_shipped_teacher("resnet20_cifar10-jpeg", tmp_path).card["seed"] == 0


@pytest.mark.parametrize("name,arch", [("resnet20_cifar10-jpeg", "resnet20"), ("resnet110_cifar10-jpeg", "resnet110")])
def test_the_shipped_teachers_load_with_their_cards_and_records(name, arch):
    model = load_shipped_teacher(name)  # default root: akt_lib/weights (SHA-256 checked against the card)
    card = model.card
    assert (card["arch"], card["dataset"], card["num_classes"]) == (arch, "cifar10-jpeg", 10)
    assert type(model).__name__ == "CIFARResNet" and not model.training and model.num_classes == 10
    record = json.loads((Path(teacher.__file__).parent / "weights" / card["record_file"]).read_text())
    assert record["status"] == "complete" and record["final_acc"] == card["accuracy"]
    assert len(record["history"]) == card["epochs"] == card["recipe"]["epochs"]
    assert card["command"].startswith(f"python -m akt_lib teacher --dataset cifar10-jpeg --arch {arch}")


def test_the_shipped_resnet20_scores_its_card_accuracy(jpeg_test_split):
    # Trained and evaluated on a GPU in bf16/float32; re-evaluated here on the CPU in float32.
    model = load_shipped_teacher("resnet20_cifar10-jpeg")
    x, y = jpeg_test_split
    assert evaluate(model, x, y, "cifar10-jpeg") == pytest.approx(model.card["accuracy"], abs=0.05)


def test_cli_cifar100_on_a_synthetic_stand_in(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(teacher, "load_split", fake_load_split)
    assert main(["--dataset", "cifar100", "--profile", "smoke", "--epochs", "1", "--train-size", "32",
                 "--test-size", "32", "--batch-size", "16", "--seed", "1", "--out", str(tmp_path),
                 "--no-progress", "--device", "cpu"]) == 0
    assert "CIFAR-100" in capsys.readouterr().out
    record = json.loads((tmp_path / "resnet20_cifar100_smoke_seed1_record.json").read_text())
    assert record["dataset"] == "cifar100" and record["num_classes"] == 100 and record["seed"] == 1
    model = load_trained_teacher(tmp_path / "resnet20_cifar100_smoke_seed1.pt", dataset="cifar100")
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 100)


def test_cli_on_the_real_data(tmp_path, capsys):
    try:
        teacher.load_split("cifar10-jpeg", "train")
    except FileNotFoundError:
        pytest.skip("CIFAR-10 (JPEG q75) is not available here")
    assert main(["--epochs", "1", "--train-size", "32", "--test-size", "32", "--batch-size", "16",
                 "--out", str(tmp_path), "--no-progress", "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("resnet20_cifar10-jpeg_smoke: CIFAR-10 (JPEG q75), smoke profile") and "test acc" in line
    from akt_lib.runner import STOPPED

    assert main(["--epochs", "2", "--train-size", "32", "--test-size", "32", "--batch-size", "16", "--time-budget",
                 "0", "--out", str(tmp_path / "b"), "--no-progress", "--device", "cpu"]) == STOPPED
    assert "stopped after 1 of 2 epochs" in capsys.readouterr().out


def test_one_cycle_by_hand():
    # 100 steps, 25 of warm-up from 0.04 to 1, then down to 0 at step 100.
    assert teacher.one_cycle(0, 100, 0.25) == pytest.approx(0.04)
    assert teacher.one_cycle(10, 100, 0.25) == pytest.approx(0.04 + 0.96 * 10 / 25)
    assert teacher.one_cycle(25, 100, 0.25) == pytest.approx(1.0)
    assert teacher.one_cycle(70, 100, 0.25) == pytest.approx(30 / 75)
    assert teacher.one_cycle(99, 100, 0.25) > 0 and teacher.one_cycle(100, 100, 0.25) == 0.0
    assert teacher.one_cycle(0, 1, 0.25) == pytest.approx(0.04)  # a single step still works


def test_normalize_constants_are_built_once_per_device():
    # Training steps call normalize every batch: its mean/std must not be rebuilt (on CUDA that
    # would be a blocking host-to-device copy per step).
    from akt_lib import data

    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    first = data._mean_std("cifar100", x.device)
    y = normalize(x, "cifar100")
    assert data._mean_std("cifar100", x.device) is first
    mean, std = torch.tensor(data.DATASETS["cifar100"].mean), torch.tensor(data.DATASETS["cifar100"].std)
    torch.testing.assert_close(y, (x.float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))


def test_bad_configs(tmp_path, monkeypatch):
    for bad in (dict(epochs=0), dict(batch_size=-1), dict(arch="resnet18"), dict(dataset="mnist"),
                dict(warmup_frac=1.0), dict(seed=-1), dict(train_size=0), dict(label_smoothing=1.0)):
        with pytest.raises(ValueError):
            TeacherConfig(**bad)
    for bad in (0.0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="lr must be a finite number > 0"):
            TeacherConfig(lr=bad)
    for name in ("batch_size", "eval_batch_size"):  # unlike train_size/test_size, never None
        with pytest.raises(ValueError, match=f"^{name} must be an int >= 1, got None$"):
            TeacherConfig(**{name: None})
    assert TeacherConfig(train_size=None, test_size=None).train_size is None
    with pytest.raises(ValueError, match=r"warmup_frac must be in \(0, 1\), got 0.0"):
        TeacherConfig(warmup_frac=0.0)
    with pytest.raises(ValueError, match="profile"):
        TeacherConfig.from_profile("huge")
    monkeypatch.setattr(teacher, "load_split", fake_load_split)
    with pytest.raises(ValueError, match="batch_size=64 exceeds"):
        train_teacher(TeacherConfig.from_profile("smoke", train_size=32, test_size=32, batch_size=64), tmp_path,
                      device="cpu")
    with pytest.raises(ValueError, match="train_size=500"):
        train_teacher(TeacherConfig.from_profile("smoke", train_size=500), tmp_path, device="cpu")
    with pytest.raises(SystemExit):
        main(["--epochs", "0", "--device", "cpu", "--out", str(tmp_path)])
    for bad in (-5.0, float("nan"), True, "60"):
        with pytest.raises(ValueError, match="time_budget_s must be a number of seconds >= 0"):
            train_teacher(TeacherConfig.from_profile("smoke", train_size=32, test_size=32, batch_size=16), tmp_path,
                          device="cpu", time_budget_s=bad)
    assert not list(tmp_path.iterdir()), "a refused budget must not leave files behind"


@pytest.mark.parametrize("budget", ["-5", "nan"])
def test_cli_refuses_a_negative_or_nan_time_budget(tmp_path, capsys, budget):
    with pytest.raises(SystemExit) as e:
        main(["--profile", "smoke", "--device", "cpu", "--out", str(tmp_path), "--time-budget", budget])
    assert e.value.code == 2
    assert "--time-budget: must be a number of seconds >= 0" in capsys.readouterr().err
    assert not tmp_path.exists() or not list(tmp_path.iterdir())
