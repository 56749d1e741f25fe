"""Shared fixtures of the unit tests.

* One intra-op thread: the unit tests run tiny tensors, where a second OpenMP thread gains
  nothing, and on a busy 2-core machine (other jobs, notebooks) spinning OpenMP threads made a
  batch-2 ResNet-44 forward 35x slower (3.7 s instead of 0.1 s). Set AKT_TEST_THREADS to change it.
* ``clear_split_cache`` empties ``akt_lib.data``'s in-process cache around a test that points
  ``load_split`` at its own (temporary) data, so no test sees another test's arrays.
* ``jpeg_test_split`` / ``akamaster_path`` give the real offline assets (../shared), or skip
  with the reason when this machine does not have them.
* ``check_rerun_skips_finished`` is the one check, for the zero-shot and the label-free runners
  alike, that rerunning a finished row returns its record instead of training it again.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch

from akt_lib import data as akt_data
from akt_lib import models as akt_models

torch.set_num_threads(int(os.environ.get("AKT_TEST_THREADS", "1")))


@pytest.fixture
def clear_split_cache():
    """Empty ``load_split``'s lru_cache before and after the test."""
    akt_data._load_cached.cache_clear()
    yield
    akt_data._load_cached.cache_clear()


@pytest.fixture(scope="session")
def jpeg_test_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The real CIFAR-10 (JPEG q75) test split, ``(10000, 3, 32, 32)`` uint8 and ``(10000,)`` int64."""
    src = akt_data.data_dir() / "cifar10-jpeg" / "test.npz"
    if not src.is_file():
        pytest.skip(f"CIFAR-10 (JPEG q75) test split not found at {src} (set AKT_DATA_DIR to ../shared/data)")
    return akt_data.load_split("cifar10-jpeg", "test")


@pytest.fixture(scope="session")
def akamaster_path() -> Path:
    """Path of the akamaster ResNet-20 checkpoint in ``AKT_WEIGHTS_DIR`` (skip if absent)."""
    path = akt_models.default_weights_dir() / akt_models.AKAMASTER_FILE
    if not path.is_file():
        pytest.skip(f"akamaster ResNet-20 checkpoint not found at {path} (set AKT_WEIGHTS_DIR to ../shared/weights)")
    return path


@pytest.fixture
def check_rerun_skips_finished(monkeypatch):
    """``check(run, trainer_module, trainer_name, record_path, teacher)``.

    ``run(teacher)`` runs one row (``run_experiment`` with the test's other arguments) and returns
    what ``run_experiment`` returns. A clone holds the records, not the checkpoints, so the check
    runs the row, deletes its checkpoints, and replaces the trainer (``trainer_module.trainer_name``)
    by a recorder. Then rerunning the same row must return the record on disk, leave it untouched
    and train nothing, and the same row with another teacher must train. The check returns the
    list of seeds the recorder trained and the record's text as the first run wrote it, for further
    cases of the caller's.
    """
    def check(run, trainer_module, trainer_name: str, record_path: Path, teacher) -> tuple[list, str]:
        run(teacher)
        on_disk = record_path.read_text()
        for ckpt in (record_path.parent / "checkpoints").glob("*.pt"):
            ckpt.unlink()
        trained = []
        monkeypatch.setattr(trainer_module, trainer_name,
                            lambda config, **k: trained.append(config.seed) or (None, {"trained": 1}))
        assert run(teacher) == json.loads(on_disk)
        assert record_path.read_text() == on_disk and trained == []
        other = copy.deepcopy(teacher)
        with torch.no_grad():
            next(other.parameters()).add_(1.0)
        assert run(other) == {"trained": 1}
        return trained, on_disk

    return check
