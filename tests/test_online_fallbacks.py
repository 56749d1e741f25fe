"""What readers without ../shared get (Colab): the CIFAR-10 fallback and the weights download.

The network is never touched: ``urllib.request.urlretrieve`` is replaced by a local copy (or a
failure), so these tests check the library's logic, not GitHub.
"""

from __future__ import annotations

import shutil
import urllib.request

import pytest

from akt_lib import models
from akt_lib.data import default_dataset


def test_default_dataset_prefers_the_offline_copy(tmp_path):
    assert default_dataset(tmp_path) == "cifar10"  # no JPEG copy: the original, via torchvision
    (tmp_path / "cifar10-jpeg").mkdir()
    (tmp_path / "cifar10-jpeg" / "test.npz").write_bytes(b"")
    assert default_dataset(tmp_path) == "cifar10-jpeg"


def test_akamaster_download_is_pinned_and_hash_checked(akamaster_path, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AKT_WEIGHTS_DIR", str(tmp_path / "empty"))
    fetched = []

    def fake_urlretrieve(url, dest):
        fetched.append(url)
        shutil.copy(akamaster_path, dest)

    monkeypatch.setattr(urllib.request, "urlretrieve", fake_urlretrieve)
    with pytest.raises(FileNotFoundError, match="download=True"):
        models.load_akamaster_resnet20()  # no download unless asked
    model = models.load_akamaster_resnet20(download=True)
    assert fetched == [models.AKAMASTER_URL] and "d5489e8995e81e91ce6b1d69dcc98ad579b0b153" in fetched[0]
    assert (tmp_path / ".cache/akt_lib/weights" / models.AKAMASTER_FILE).is_file()
    models.load_akamaster_resnet20(download=True)  # cached: no second download
    assert len(fetched) == 1 and not model.training


def test_akamaster_download_of_wrong_bytes_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AKT_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(urllib.request, "urlretrieve", lambda url, dest: open(dest, "wb").write(b"<html>"))
    with pytest.raises(ValueError, match="SHA-256"):
        models.load_akamaster_resnet20(download=True)


def test_akamaster_download_failure_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AKT_WEIGHTS_DIR", str(tmp_path / "empty"))

    def offline(url, dest):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlretrieve", offline)
    with pytest.raises(FileNotFoundError, match="AKT_WEIGHTS_DIR"):
        models.load_akamaster_resnet20(download=True)
    assert not list((tmp_path / ".cache/akt_lib/weights").glob("*"))  # no partial file left
