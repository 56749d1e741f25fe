"""Oracle tests of ``akt_lib.data``.

Oracles: tiny datasets written here in the on-disk formats (the cifar10-jpeg ``.npz`` of
../shared/data/README.md, torchvision's pickled ``cifar-10-batches-py``), Pillow's decoding of the
same JPEG bytes, the statistics printed in the data README, and hand-written normalisation.
"""

from __future__ import annotations

import io
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from akt_lib import data
from akt_lib.data import denormalize, fixed_subset, iterate_batches, load_split, normalize

C10_MEAN, C10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # methods.md §1.1


# --- cifar10-jpeg from a synthetic file -------------------------------------------------------------


def _smooth_images(n: int, seed: int) -> np.ndarray:
    """(n, 32, 32, 3) uint8 with a different pattern per channel: R varies along the width, G along
    the height, B is flat. JPEG keeps such images within a few levels, so a decoder that swapped
    channels or transposed H and W would be far off."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, 32)
    out = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for i in range(n):
        a, b, c = rng.uniform(40, 215, size=3)
        out[i, :, :, 0] = a + 40 * ramp[None, :]  # along W
        out[i, :, :, 1] = b - 40 * ramp[:, None]  # along H
        out[i, :, :, 2] = c
    return out


def _write_jpeg_npz(path: Path, images: np.ndarray, labels: np.ndarray) -> list[bytes]:
    """The README's format: concatenated JPEG streams, int64 offsets (N+1), uint8 labels."""
    streams = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=75)
        streams.append(buf.getvalue())
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in streams])]).astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, jpeg=np.frombuffer(b"".join(streams), dtype=np.uint8), offsets=offsets,
             labels=labels.astype(np.uint8))
    return streams


@pytest.fixture
def jpeg_root(tmp_path, monkeypatch, clear_split_cache):
    """A data folder with a 7-image cifar10-jpeg test split; the decode cache goes to tmp_path."""
    root = tmp_path / "data"
    images = _smooth_images(7, seed=0)
    labels = np.array([3, 0, 9, 9, 1, 5, 2])
    streams = _write_jpeg_npz(root / "cifar10-jpeg" / "test.npz", images, labels)
    monkeypatch.setenv("AKT_CACHE_DIR", str(tmp_path / "cache"))
    return root, images, labels, streams


def test_jpeg_split_decodes_like_pillow(jpeg_root):
    root, images, labels, streams = jpeg_root
    x, y = load_split("cifar10-jpeg", "test", root=root)
    assert x.shape == (7, 3, 32, 32) and x.dtype == torch.uint8
    assert y.shape == (7,) and y.dtype == torch.int64
    assert y.tolist() == labels.tolist()
    for i, stream in enumerate(streams):
        pil = np.asarray(Image.open(io.BytesIO(stream)).convert("RGB"))  # (H, W, C)
        assert np.array_equal(x[i].numpy().transpose(1, 2, 0), pil)
    # Channel order and orientation: the decoded images are close to what was encoded.
    err = np.abs(x.numpy().transpose(0, 2, 3, 1).astype(int) - images.astype(int)).mean()
    assert err < 4, err


def test_jpeg_split_is_cached_and_reused(jpeg_root, monkeypatch):
    root, _, labels, _ = jpeg_root
    x1, y1 = load_split("cifar10-jpeg", "test", root=root)
    caches = list((root.parent / "cache").glob("cifar10-jpeg-test-*.npz"))
    assert len(caches) == 1
    assert not list((root.parent / "cache").glob("*.tmp*"))  # written atomically
    assert load_split("cifar10-jpeg", "test", root=root)[0] is x1  # in-process cache

    def no_decoding(*args, **kwargs):
        raise AssertionError("the JPEG streams were decoded again instead of reading the cache")

    monkeypatch.setattr(Image, "open", no_decoding)
    data._load_cached.cache_clear()  # a "new process": only the on-disk cache is left
    x2, y2 = load_split("cifar10-jpeg", "test", root=root)
    assert x2 is not x1 and torch.equal(x2, x1) and torch.equal(y2, y1)


def test_two_processes_filling_a_cold_cache_at_once(jpeg_root, monkeypatch):
    # Runs started side by side (--jobs) all decode on a cold cache. Interleave two "processes":
    # the second writes and renames its cache file while the first is between writing and renaming.
    root, _, labels, _ = jpeg_root
    real_savez, pid, nested = np.savez, {"now": 1}, []

    def savez(path, **arrays):
        real_savez(path, **arrays)
        if not nested:
            nested.append(True)
            pid["now"] = 2
            data._load_cached.cache_clear()
            assert load_split("cifar10-jpeg", "test", root=root)[1].tolist() == labels.tolist()
            pid["now"] = 1

    monkeypatch.setattr(data.os, "getpid", lambda: pid["now"])
    monkeypatch.setattr(data.np, "savez", savez)
    x, y = load_split("cifar10-jpeg", "test", root=root)  # raised FileNotFoundError with one shared temp name
    assert x.shape[0] == 7 and y.tolist() == labels.tolist() and nested
    cache = root.parent / "cache"
    assert len(list(cache.glob("cifar10-jpeg-test-*.npz"))) == 1 and not list(cache.glob("*.tmp*"))


def test_jpeg_cache_follows_a_changed_source(jpeg_root):
    root, images, _, _ = jpeg_root
    load_split("cifar10-jpeg", "test", root=root)
    new_labels = np.array([1, 1, 1, 1, 1, 1])
    _write_jpeg_npz(root / "cifar10-jpeg" / "test.npz", images[:6], new_labels)
    data._load_cached.cache_clear()
    x, y = load_split("cifar10-jpeg", "test", root=root)
    assert x.shape[0] == 6 and y.tolist() == new_labels.tolist()  # not the stale 7-image cache


def test_jpeg_root_from_environment(jpeg_root, monkeypatch):
    root, _, labels, _ = jpeg_root
    monkeypatch.setenv("AKT_DATA_DIR", str(root))
    assert data.data_dir() == root
    assert load_split("cifar10-jpeg", "test")[1].tolist() == labels.tolist()


def test_missing_jpeg_folder(tmp_path, monkeypatch, clear_split_cache):
    missing = tmp_path / "empty"
    with pytest.raises(FileNotFoundError) as info:
        load_split("cifar10-jpeg", "test", root=missing)
    msg = str(info.value)
    assert str(missing / "cifar10-jpeg" / "test.npz") in msg and "AKT_DATA_DIR" in msg
    monkeypatch.setenv("AKT_DATA_DIR", str(missing))
    with pytest.raises(FileNotFoundError, match="AKT_DATA_DIR"):
        load_split("cifar10-jpeg", "train")


def test_bad_jpeg_npz(tmp_path, monkeypatch, clear_split_cache):
    monkeypatch.setenv("AKT_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "cifar10-jpeg" / "test.npz"
    path.parent.mkdir()
    np.savez(path, jpeg=np.zeros(10, np.uint8), labels=np.zeros(1, np.uint8))  # no offsets
    with pytest.raises(ValueError, match="offsets"):
        load_split("cifar10-jpeg", "test", root=tmp_path)
    # Label count disagreeing with the number of streams.
    _write_jpeg_npz(tmp_path / "cifar10-jpeg" / "train.npz", _smooth_images(3, 1), np.array([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        load_split("cifar10-jpeg", "train", root=tmp_path)


def test_unknown_dataset_or_split(clear_split_cache):
    with pytest.raises(ValueError) as info:
        load_split("cifar-10", "test")
    assert all(name in str(info.value) for name in ("cifar10", "cifar100", "cifar10-jpeg"))
    with pytest.raises(ValueError) as info:
        load_split("cifar10-jpeg", "val")
    assert "train" in str(info.value) and "test" in str(info.value)
    with pytest.raises(ValueError, match="cifar10-jpeg"):
        normalize(torch.zeros(1, 3, 2, 2), "imagenet")


# --- cifar10 / cifar100 through torchvision (offline: a fake folder) --------------------------------


def _fake_batches(folder: Path, files: dict[str, int], label_key: str, seed: int) -> dict[str, tuple]:
    """Pickled dicts like the real CIFAR python batches: 'data' (N, 3072) uint8 in CHW order."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    out = {}
    for name, n in files.items():
        rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows, label_key: labels, "batch_label": name}, f)
        out[name] = (rows, labels)
    return out


@pytest.fixture
def no_md5_checks(monkeypatch):
    """Our fake files cannot have the real MD5s: accept them (and never download)."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)


@pytest.mark.parametrize("split", ["train", "test"])
def test_torchvision_cifar10_offline(tmp_path, no_md5_checks, clear_split_cache, split):
    folder = tmp_path / "cifar-10-batches-py"
    names = {f"data_batch_{i}": 2 + i for i in range(1, 6)} | {"test_batch": 4}
    batches = _fake_batches(folder, names, "labels", seed=0)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(data.CIFAR10_CLASSES)}, f)
    x, y = load_split("cifar10", split, root=tmp_path, download=False)
    used = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    rows = np.concatenate([batches[n][0] for n in used])
    labels = sum((batches[n][1] for n in used), [])
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    assert x.shape == (len(labels), 3, 32, 32) and x.is_contiguous()
    assert np.array_equal(x.numpy(), rows.reshape(-1, 3, 32, 32))  # rows are R, G, B planes of 32x32
    assert y.tolist() == labels


def test_torchvision_cifar100_offline(tmp_path, no_md5_checks, clear_split_cache):
    folder = tmp_path / "cifar-100-python"
    batches = _fake_batches(folder, {"train": 3, "test": 5}, "fine_labels", seed=1)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)
    x, y = load_split("cifar100", "test", root=tmp_path, download=False)
    assert np.array_equal(x.numpy(), batches["test"][0].reshape(-1, 3, 32, 32))
    assert y.tolist() == batches["test"][1]


def test_torchvision_missing_offline_says_what_to_do(tmp_path, clear_split_cache):
    with pytest.raises(FileNotFoundError) as info:
        load_split("cifar10", "test", root=tmp_path, download=False)
    msg = str(info.value)
    assert "download=True" in msg and "online" in msg and "cifar10-jpeg" in msg and str(tmp_path) in msg


def test_torchvision_failed_download(tmp_path, monkeypatch, clear_split_cache):
    import torchvision.datasets.cifar as tv_cifar

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", no_network)
    with pytest.raises(FileNotFoundError, match="cifar10-jpeg") as info:
        load_split("cifar100", "train", root=tmp_path, download=True)
    assert "CIFAR-100" in str(info.value)


# --- the real CIFAR-10 (JPEG q75) test split --------------------------------------------------------


def test_real_jpeg_test_split(jpeg_test_split):
    x, y = jpeg_test_split
    assert x.shape == (10_000, 3, 32, 32) and x.dtype == torch.uint8
    assert y.dtype == torch.int64
    assert torch.bincount(y, minlength=10).tolist() == [1000] * 10
    assert torch.equal(y, torch.arange(10).repeat_interleave(1000))  # sorted by class (README)
    mean = x.double().mean(dim=(0, 2, 3)) / 255
    torch.testing.assert_close(mean, torch.tensor([0.4941, 0.4851, 0.4504], dtype=torch.float64),
                               rtol=0, atol=1e-4)
    assert data.DATASETS["cifar10-jpeg"].display_name == "CIFAR-10 (JPEG q75)"


# --- normalisation ----------------------------------------------------------------------------------


def test_normalize_by_hand_and_round_trip():
    x = torch.randint(0, 256, (4, 3, 5, 6), dtype=torch.uint8)
    mean = torch.tensor(C10_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(C10_STD, dtype=torch.float64).view(1, 3, 1, 1)
    expected = ((x.double() / 255 - mean) / std).float()
    out = normalize(x, "cifar10-jpeg")
    assert out.dtype == torch.float32 and x.dtype == torch.uint8
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(normalize(x.float() / 255, "cifar10"), expected)  # float input in [0, 1]
    torch.testing.assert_close(denormalize(out, "cifar10-jpeg"), x.float() / 255, rtol=0, atol=1e-6)
    c100 = normalize(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8), "cifar100").flatten()
    torch.testing.assert_close(c100, torch.tensor([(1 - 0.5071) / 0.2675, (1 - 0.4867) / 0.2557,
                                                   (1 - 0.4408) / 0.2761]))
    assert denormalize(torch.full((1, 3, 1, 1), 100.0), "cifar10").max() == 1.0  # clamped for display


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 1, 32, 32), (2, 32, 32, 3), (2, 3, 4, 4, 1)])
def test_normalize_bad_shape(shape):
    with pytest.raises(ValueError, match="N, 3, H, W"):
        normalize(torch.zeros(shape, dtype=torch.uint8), "cifar10")


# --- subsets and batches ----------------------------------------------------------------------------


def test_fixed_subset():
    a = fixed_subset(500, 10_000, seed=0)
    assert torch.equal(a, fixed_subset(500, 10_000, seed=0))
    assert not torch.equal(a, fixed_subset(500, 10_000, seed=1))
    assert a.dtype == torch.int64 and a.numel() == 500 and a.unique().numel() == 500
    assert torch.equal(a, a.sort().values) and int(a.min()) >= 0 and int(a.max()) < 10_000
    # A class-sorted set (as the JPEG test split is) is sampled across classes.
    assert torch.bincount(a // 1000, minlength=10).min() > 20
    assert torch.equal(fixed_subset(7, 7, seed=3), torch.arange(7))
    for bad in (0, -1, 10_001):
        with pytest.raises(ValueError, match="subset size"):
            fixed_subset(bad, 10_000)
    # True == 1 would pass the range check and quietly give a one-image "subset".
    for n, total, match in ((True, 10, "n must be an int, got True"), (5.0, 10, "n must be an int, got 5.0"),
                            (3, True, "total must be an int, got True")):
        with pytest.raises(TypeError, match=match):
            fixed_subset(n, total)


def test_iterate_batches_in_order_and_drop_last():
    x, y = torch.arange(10), torch.arange(10) * 10
    batches = list(iterate_batches(x, y, 3))
    assert [b[0].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert all(torch.equal(yb, xb * 10) for xb, yb in batches)
    assert [b[0].numel() for b in iterate_batches(x, y, 3, drop_last=True)] == [3, 3, 3]
    assert [b[0].numel() for b in iterate_batches(x, y, 5, drop_last=True)] == [5, 5]
    assert all(yb is None for _, yb in iterate_batches(x, None, 4))


def test_iterate_batches_shuffle_covers_everything_once():
    x = torch.arange(23)
    g = torch.Generator().manual_seed(0)
    batches = [xb for xb, _ in iterate_batches(x, x * 2, 5, shuffle=True, generator=g)]
    seen = torch.cat(batches)
    assert [b.numel() for b in batches] == [5, 5, 5, 5, 3]
    assert torch.equal(seen.sort().values, x) and not torch.equal(seen, x)
    again = torch.cat([xb for xb, _ in iterate_batches(x, None, 5, shuffle=True,
                                                       generator=torch.Generator().manual_seed(0))])
    assert torch.equal(seen, again)  # reproducible with the same generator
    dropped = torch.cat([xb for xb, _ in iterate_batches(x, None, 5, shuffle=True, drop_last=True)])
    assert dropped.numel() == 20 and dropped.unique().numel() == 20
    for xb, yb in iterate_batches(x, x * 2, 4, shuffle=True):
        assert torch.equal(yb, xb * 2)  # labels stay with their images


@pytest.mark.parametrize("bad", [0, -3, True, 2.0])
def test_iterate_batches_bad_size(bad):
    with pytest.raises(ValueError, match=f"batch_size must be an int >= 1, got {bad!r}"):
        next(iterate_batches(torch.arange(4), None, bad))


@pytest.mark.parametrize("n_labels", [3, 6])
def test_iterate_batches_needs_one_label_per_image(n_labels):
    # 5 images and 3 labels used to give batches whose labels ran out: ((2,), (2,)), ((2,), (1,)), ((1,), (0,)).
    with pytest.raises(ValueError, match=f"one label per row of x: x has 5 rows, y has shape \\({n_labels},\\)"):
        next(iterate_batches(torch.zeros(5, 3), torch.arange(n_labels), 2))
