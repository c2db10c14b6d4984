"""prunekit.data: official CIFAR format, archives, download, synthetic data, device loader."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from prunekit.data import (
    DATASETS,
    DeviceLoader,
    cutout,
    get_data,
    load_cifar,
    make_synthetic,
    normalize,
    random_crop,
    random_flip,
    resolve_root,
    split_train_val,
)
from prunekit.data import cifar as cifar_module
from prunekit.errors import PrunekitError

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _shared_dir() -> Path:
    env = os.environ.get("PRUNEKIT_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared"


SUBSET_ROOT = _shared_dir() / "data" / "cifar10-subset"
needs_subset = pytest.mark.skipif(
    not (SUBSET_ROOT / "cifar-10-batches-py").is_dir(),
    reason=f"real CIFAR-10 subset not found at {SUBSET_ROOT} (set PRUNEKIT_SHARED to the shared/ folder)",
)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test reads $PRUNEKIT_DATA from the environment or touches the real ~/.cache."""
    monkeypatch.delenv("PRUNEKIT_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


# --- fake datasets in the official format ----------------------------------------------------


def _pixels(n: int, offset: int) -> np.ndarray:
    """(n, 3072) uint8 with a distinct, position-dependent value everywhere."""
    i = np.arange(n)[:, None]
    j = np.arange(3072)[None, :]
    return ((i * 7 + j * 3 + offset) % 256).astype(np.uint8)


def _dump(path: Path, obj: dict, bytes_keys: bool) -> None:
    if bytes_keys:  # what Python 2's cPickle wrote for the official files
        obj = {k.encode(): ([v.encode() for v in val] if k.endswith("names") else val) for k, val in obj.items()}
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, n: int = 4) -> dict[str, tuple[np.ndarray, list[int]]]:
    """``root/cifar-10-batches-py`` with 5 train batches, a test batch and meta (bytes keys)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    content = {}
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data, labels = _pixels(n, offset=k * 11), [(k + i) % 10 for i in range(n)]
        _dump(folder / name, {"batch_label": name, "labels": labels, "data": data}, bytes_keys=True)
        content[name] = (data, labels)
    _dump(folder / "batches.meta", {"label_names": CIFAR10_CLASSES, "num_vis": 3072}, bytes_keys=True)
    return content


def write_cifar100(root: Path, n_train: int = 6, n_test: int = 3) -> dict[str, tuple[np.ndarray, list[int]]]:
    """``root/cifar-100-python`` with train, test and meta (str keys, as pickled by Python 3)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    content = {}
    for name, n, offset in (("train", n_train, 1), ("test", n_test, 2)):
        data, fine = _pixels(n, offset), [(5 * i + offset) % 100 for i in range(n)]
        entry = {"filenames": [f"{i}.png" for i in range(n)], "fine_labels": fine,
                 "coarse_labels": [0] * n, "data": data}
        _dump(folder / name, entry, bytes_keys=False)
        content[name] = (data, fine)
    names = [f"fine{i}" for i in range(100)]
    meta = {"fine_label_names": names, "coarse_label_names": [f"c{i}" for i in range(20)]}
    _dump(folder / "meta", meta, bytes_keys=False)
    return content


def make_archive(root: Path, folder_name: str, archive: Path) -> bytes:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / folder_name, arcname=folder_name)
    return archive.read_bytes()


def fake_urlopen(payload: bytes | Exception, calls: list):
    def urlopen(url, timeout=None, **_):
        calls.append((url, timeout))
        if isinstance(payload, Exception):
            raise payload
        return io.BytesIO(payload)

    return urlopen


# --- the real subset ---------------------------------------------------------------------------


@needs_subset
def test_real_subset_loads_unchanged():
    images, labels, names = load_cifar("cifar10", SUBSET_ROOT, train=True, download=False)
    assert images.dtype == torch.uint8 and images.shape == (5085, 3, 32, 32)
    assert labels.dtype == torch.int64 and labels.shape == (5085,)
    assert 0 <= labels.min() and labels.max() <= 9
    assert names == CIFAR10_CLASSES
    with (SUBSET_ROOT / "cifar-10-batches-py" / "data_batch_2").open("rb") as f:
        raw = pickle.load(f, encoding="latin1")
    assert torch.equal(images[1017], torch.from_numpy(raw["data"][0].reshape(3, 32, 32)))
    assert labels[1017:2034].tolist() == raw["labels"]

    test_images, test_labels, _ = load_cifar("cifar10", SUBSET_ROOT, train=False, download=False)
    assert test_images.shape == (509, 3, 32, 32) and test_labels.shape == (509,)


@needs_subset
def test_real_subset_via_env_and_via_folder_itself(monkeypatch):
    monkeypatch.setenv("PRUNEKIT_DATA", str(SUBSET_ROOT))
    assert resolve_root(None) == SUBSET_ROOT
    from_env = load_cifar("cifar10", train=False, download=False)
    monkeypatch.delenv("PRUNEKIT_DATA")
    from_folder = load_cifar("cifar10", SUBSET_ROOT / "cifar-10-batches-py", train=False, download=False)
    assert torch.equal(from_env[0], from_folder[0]) and torch.equal(from_env[1], from_folder[1])
    assert len(from_env[0]) == 509


@needs_subset
def test_get_data_on_real_subset_with_val_split_and_limits():
    bundle = get_data("cifar10", root=str(SUBSET_ROOT), val_split=0.1, seed=1, download=False, limit_test=100)
    assert not bundle.synthetic and bundle.info.class_names == tuple(CIFAR10_CLASSES)
    assert bundle.info.mean == DATASETS["cifar10"].mean and bundle.info.num_classes == 10
    assert len(bundle.val[1]) == 508 and len(bundle.train[1]) == 5085 - 508  # round(508.5)
    assert len(bundle.test[1]) == 100


def test_resolve_root_order(monkeypatch, tmp_path):
    assert resolve_root(None) == tmp_path / "home" / ".cache" / "prunekit"
    monkeypatch.setenv("PRUNEKIT_DATA", str(tmp_path / "env"))
    assert resolve_root(None) == tmp_path / "env"
    assert resolve_root(tmp_path / "explicit") == tmp_path / "explicit"


# --- fake archives of both layouts -------------------------------------------------------------


def test_cifar10_folder_round_trips_exactly(tmp_path):
    content = write_cifar10(tmp_path, n=4)
    images, labels, names = load_cifar("cifar10", tmp_path, train=True, download=False)
    assert images.shape == (20, 3, 32, 32) and names == CIFAR10_CLASSES
    expected = np.concatenate([content[f"data_batch_{i}"][0] for i in range(1, 6)])
    assert torch.equal(images, torch.from_numpy(expected.reshape(-1, 3, 32, 32)))
    # channel-first, row-major: data row = R(1024) G(1024) B(1024); image 5 = data_batch_2 row 1
    row = content["data_batch_2"][0][1]
    assert images[5, 1, 5, 7].item() == row[1024 + 5 * 32 + 7]
    assert images[5, 2, 31, 0].item() == row[2048 + 31 * 32]
    assert labels.tolist() == sum((content[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    test_images, test_labels, _ = load_cifar("cifar10", tmp_path, train=False, download=False)
    assert torch.equal(test_images, torch.from_numpy(content["test_batch"][0].reshape(-1, 3, 32, 32)))
    assert test_labels.tolist() == content["test_batch"][1]


def test_cifar100_folder_round_trips_exactly(tmp_path):
    content = write_cifar100(tmp_path)
    images, labels, names = load_cifar("cifar100", tmp_path / "cifar-100-python", train=True, download=False)
    assert torch.equal(images, torch.from_numpy(content["train"][0].reshape(-1, 3, 32, 32)))
    assert labels.tolist() == content["train"][1] and labels.dtype == torch.int64
    assert len(names) == 100 and names[3] == "fine3"
    test_images, test_labels, _ = load_cifar("cifar100", tmp_path, train=False, download=False)
    assert test_images.shape == (3, 3, 32, 32) and test_labels.tolist() == content["test"][1]


@pytest.mark.parametrize("name,folder,writer", [
    ("cifar10", "cifar-10-batches-py", write_cifar10),
    ("cifar100", "cifar-100-python", write_cifar100),
])
def test_archive_in_root_is_extracted(tmp_path, name, folder, writer):
    src, root = tmp_path / "src", tmp_path / "root"
    content = writer(src)
    root.mkdir()
    make_archive(src, folder, root / DATASETS[name].archive)
    images, labels, _ = load_cifar(name, root, train=False, download=False)
    test_file = DATASETS[name].test_files[0]
    assert torch.equal(images, torch.from_numpy(content[test_file][0].reshape(-1, 3, 32, 32)))
    assert (root / folder / test_file).is_file()
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # temp dir cleaned up


def test_archive_in_read_only_root_goes_to_cache(tmp_path):
    src, root = tmp_path / "src", tmp_path / "readonly"
    write_cifar10(src)
    root.mkdir()
    make_archive(src, "cifar-10-batches-py", root / "cifar-10-python.tar.gz")
    root.chmod(0o555)  # no write bits: treated as read-only even when the tests run as root
    try:
        images, _, _ = load_cifar("cifar10", root, train=False, download=False)
    finally:
        root.chmod(0o755)
    assert len(images) == 4
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-python.tar.gz"]
    assert (tmp_path / "home" / ".cache" / "prunekit" / "cifar-10-batches-py" / "test_batch").is_file()


def test_unsafe_archive_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/../../escape")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(PrunekitError, match="unsafe"):
        load_cifar("cifar10", root, download=False)
    assert not (tmp_path / "escape").exists()


# --- download ------------------------------------------------------------------------------------


def test_download_with_right_md5(tmp_path, monkeypatch):
    src = tmp_path / "src"
    content = write_cifar10(src, n=2)
    payload = make_archive(src, "cifar-10-batches-py", tmp_path / "served.tar.gz")
    info = DATASETS["cifar10"]
    monkeypatch.setitem(DATASETS, "cifar10", dataclasses.replace(info, archive_md5=hashlib.md5(payload).hexdigest()))
    calls = []
    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen(payload, calls))
    root = tmp_path / "data"
    images, _, names = load_cifar("cifar10", root, train=False, download=True)
    assert calls == [(info.url, cifar_module.DOWNLOAD_TIMEOUT_S)] and calls[0][1] > 0
    assert torch.equal(images, torch.from_numpy(content["test_batch"][0].reshape(-1, 3, 32, 32)))
    assert names == CIFAR10_CLASSES
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]
    load_cifar("cifar10", root, train=True, download=True)
    assert len(calls) == 1  # found, not downloaded again


def test_download_with_wrong_md5_fails_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen(b"not the archive", []))
    root = tmp_path / "data"
    with pytest.raises(PrunekitError, match="MD5") as err:
        load_cifar("cifar10", root, download=True)
    assert DATASETS["cifar10"].archive_md5 in str(err.value)
    assert hashlib.md5(b"not the archive").hexdigest() in str(err.value)
    assert not root.exists()  # a folder it only meant to read from is not left behind (issue 16)


@pytest.mark.parametrize("failure", [urllib.error.URLError("Name or service not known"), TimeoutError("timed out")])
def test_offline_download_gives_clear_error(tmp_path, monkeypatch, failure):
    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen(failure, []))
    with pytest.raises(PrunekitError) as err:
        load_cifar("cifar10", tmp_path / "data", download=True)
    message = str(err.value)
    assert "offline" in message and "download" in message and "--data" in message
    assert "PRUNEKIT_DATA" in message and DATASETS["cifar10"].url in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no socket traceback
    assert not (tmp_path / "data").exists()  # not created for a download that failed (issue 16)


def test_not_found_without_download_explains_layout(tmp_path):
    with pytest.raises(PrunekitError) as err:
        load_cifar("cifar100", tmp_path / "nothing", download=False)
    message = str(err.value)
    assert "cifar-100-python" in message and "cifar-100-python.tar.gz" in message
    assert DATASETS["cifar100"].url in message and "--data" in message and "PRUNEKIT_DATA" in message


def test_missing_file_is_named(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(PrunekitError, match="data_batch_3") as err:
        load_cifar("cifar10", tmp_path, download=False)
    assert "cifar-10-batches-py" in str(err.value) and "--data" in str(err.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape"])
def test_corrupt_file_is_reported(tmp_path, damage):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    if damage == "garbage":
        path.write_bytes(b"\x00\x01 definitely not a pickle")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:
        _dump(path, {"labels": [0, 1], "data": np.zeros((2, 100), np.uint8)}, bytes_keys=True)
    with pytest.raises(PrunekitError, match="corrupt") as err:
        load_cifar("cifar10", tmp_path, download=False)
    assert "data_batch_2" in str(err.value)


def test_pickle_with_code_is_refused(tmp_path):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(pickle.dumps({"data": os.getcwd, "labels": []}, protocol=2))
    with pytest.raises(PrunekitError, match="corrupt"):
        load_cifar("cifar10", tmp_path, train=False, download=False)


def test_unknown_names_list_valid_ones():
    with pytest.raises(PrunekitError, match="cifar10, cifar100"):
        load_cifar("mnist")
    with pytest.raises(PrunekitError, match="cifar10, cifar100, synthetic"):
        get_data("imagenet")


# --- synthetic -------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_balanced_and_pairs_need_texture():
    images, labels = make_synthetic(300, num_classes=10, seed=5)
    again = make_synthetic(300, num_classes=10, seed=5)
    other = make_synthetic(300, num_classes=10, seed=6)
    assert images.dtype == torch.uint8 and images.shape == (300, 3, 32, 32) and labels.dtype == torch.int64
    assert torch.equal(images, again[0]) and torch.equal(labels, again[1])
    assert not torch.equal(images, other[0])
    assert labels.bincount(minlength=10).tolist() == [30] * 10
    # nearest class mean (fitted on one seed, scored on another) always finds the pair of classes that share a
    # coarse pattern, but not the class within the pair: that takes the finer textures, which a mean blurs away
    means = torch.stack([images[labels == c].float().mean(0) for c in range(10)])
    nearest = torch.cdist(other[0].float().flatten(1), means.flatten(1)).argmin(1)
    assert (nearest // 2 == other[1] // 2).float().mean() > 0.95
    assert 0.4 < (nearest == other[1]).float().mean() < 0.7


def test_get_data_synthetic_sizes_and_limits():
    bundle = get_data("synthetic", seed=0)
    assert bundle.synthetic and bundle.val is None and bundle.info.num_classes == 10
    assert len(bundle.train[1]) == 2000 and len(bundle.test[1]) == 500
    assert len(bundle.info.mean) == 3 and all(0 < s < 1 for s in bundle.info.std)
    assert not torch.equal(bundle.train[0][:500], bundle.test[0])  # different seed streams
    small = get_data("synthetic", val_split=0.1, limit_train=64, limit_test=32)
    assert len(small.train[1]) == 64 and len(small.test[1]) == 32 and len(small.val[1]) >= 1


def test_val_split_is_seeded_disjoint_and_sized():
    split = (torch.zeros(100, 3, 32, 32, dtype=torch.uint8), torch.arange(100))
    (train_x, train_y), (val_x, val_y) = split_train_val(split, 0.2, seed=3)
    assert len(train_y) == 80 and len(val_y) == 20 and train_x.shape[0] == 80 and val_x.shape[0] == 20
    assert set(train_y.tolist()).isdisjoint(val_y.tolist())
    assert sorted(train_y.tolist() + val_y.tolist()) == list(range(100))
    assert torch.equal(split_train_val(split, 0.2, seed=3)[1][1], val_y)
    assert not torch.equal(split_train_val(split, 0.2, seed=4)[1][1], val_y)
    assert split_train_val(split, 0.0, seed=3)[1] is None
    for bad in (-0.1, 1.0):
        with pytest.raises(PrunekitError, match="val_split"):
            get_data("synthetic", val_split=bad)


# --- augmentation ----------------------------------------------------------------------------------


def _asymmetric_batch(n: int = 16) -> torch.Tensor:
    return torch.randint(1, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_flip_mirrors_exactly_where_flipped():
    batch = _asymmetric_batch(32)
    out = random_flip(batch, torch.Generator().manual_seed(1))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    flipped = torch.tensor([torch.equal(o, b.flip(2)) for o, b in zip(out, batch)])
    same = torch.tensor([torch.equal(o, b) for o, b in zip(out, batch)])
    assert torch.all(flipped ^ same) and 0 < flipped.sum() < 32


def test_crop_is_a_window_of_the_zero_padded_image():
    batch, pad = _asymmetric_batch(16), 4
    out = random_crop(batch, pad, torch.Generator().manual_seed(2))
    assert out.shape == batch.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(batch, (pad,) * 4)
    offsets = []
    for o, p in zip(out, padded):
        matches = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   if torch.equal(o, p[:, dy:dy + 32, dx:dx + 32])]
        assert len(matches) == 1
        offsets.append(matches[0])
    assert len(set(offsets)) > 1


def test_cutout_zeroes_one_square_inside_the_image():
    batch = torch.ones(8, 3, 32, 32)
    out = cutout(batch, 8, torch.Generator().manual_seed(3))
    for image in out:
        zero = image[0] == 0
        assert torch.equal(zero, image[1] == 0) and zero.sum() == 64
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7
    assert torch.equal(batch, torch.ones(8, 3, 32, 32))  # input untouched


def test_normalize_hand_computed_pixel():
    batch = torch.zeros(1, 3, 1, 1, dtype=torch.uint8)
    batch[0, 0, 0, 0] = 51  # 0.2
    out = normalize(batch, (0.1, 0.2, 0.3), (0.5, 0.5, 0.25))
    assert out.dtype == torch.float32
    assert torch.allclose(out.flatten(), torch.tensor([0.2, -0.4, -1.2]))


def _loader(images, labels, batch_size=8, **kw):
    options = dict(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), train=True, seed=0)
    options.update(kw)
    return DeviceLoader(images, labels, batch_size, **options)


def _epoch(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def test_train_loader_shapes_and_seeded_repeatability():
    images, labels = _asymmetric_batch(20), torch.arange(20)
    loader = _loader(images, labels, batch_size=8, cutout=4)
    assert len(loader) == 3 and loader.images.dtype == torch.uint8
    first = _epoch(loader)
    assert [x.shape for x, _ in first] == [(8, 3, 32, 32), (8, 3, 32, 32), (4, 3, 32, 32)]
    assert all(x.dtype == torch.float32 and y.dtype == torch.int64 for x, y in first)
    assert sorted(torch.cat([y for _, y in first]).tolist()) == list(range(20))
    assert _same(first, _epoch(_loader(images, labels, batch_size=8, cutout=4)))
    assert not _same(first, _epoch(_loader(images, labels, batch_size=8, cutout=4, seed=1)))
    assert not _same(first, _epoch(loader))  # next epoch, new draw
    assert len(_loader(images, labels, batch_size=8, drop_last=True)) == 2


def test_eval_loader_is_ordered_and_deterministic():
    images, labels = _asymmetric_batch(20), torch.arange(20)
    loader = _loader(images, labels, batch_size=8, train=False, cutout=4)
    first = _epoch(loader)
    assert torch.equal(torch.cat([y for _, y in first]), labels)
    assert torch.equal(torch.cat([x for x, _ in first]), normalize(images, (0.5,) * 3, (0.25,) * 3))
    assert _same(first, _epoch(loader))


def test_ddp_shards_are_disjoint_and_cover_the_permutation():
    images, labels = _asymmetric_batch(50), torch.arange(50)
    single = torch.cat([y for _, y in _loader(images, labels, batch_size=50, seed=7)])
    shards = [torch.cat([y for _, y in _loader(images, labels, batch_size=4, seed=7, rank=r, world_size=3)])
              for r in range(3)]
    assert [len(s) for s in shards] == [16, 16, 16]
    assert len(set(torch.cat(shards).tolist())) == 48
    interleaved = torch.stack(shards, dim=1).flatten()
    assert torch.equal(interleaved, single[:48])
    evals = [torch.cat([y for _, y in _loader(images, labels, batch_size=4, train=False, rank=r, world_size=3)])
             for r in range(3)]
    assert sorted(torch.cat(evals).tolist()) == list(range(50))


def test_state_dict_resume_matches_uninterrupted_run():
    images, labels = _asymmetric_batch(20), torch.arange(20)
    uninterrupted = _loader(images, labels, batch_size=8, cutout=6)
    _epoch(uninterrupted)
    epoch2 = _epoch(uninterrupted)

    first = _loader(images, labels, batch_size=8, cutout=6)
    for _ in first:  # epoch 1, then "crash"
        pass
    state = first.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    resumed = _loader(images, labels, batch_size=8, cutout=6)
    resumed.load_state_dict(torch.load(buffer))
    assert resumed.epoch == 1
    assert _same(_epoch(resumed), epoch2)
    with pytest.raises(PrunekitError, match="state"):
        resumed.load_state_dict({"epoch": 1})


def test_channels_last_and_bad_arguments():
    images, labels = _asymmetric_batch(8), torch.arange(8)
    x, _ = next(iter(_loader(images, labels, batch_size=4, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(PrunekitError, match="uint8"):
        _loader(images.float(), labels)
    with pytest.raises(PrunekitError, match="no batches"):
        _loader(images, labels, batch_size=16, drop_last=True)
    with pytest.raises(PrunekitError, match="rank"):
        _loader(images, labels, rank=2, world_size=2)
