"""CIFAR-10 / CIFAR-100 in the official "python version" format: find, extract, download, read.

Where a dataset may live, for a data root ``DIR`` (see :func:`resolve_root`):

- ``DIR/cifar-10-batches-py/`` (or ``DIR/cifar-100-python/``): the extracted official folder;
- ``DIR`` itself being that folder;
- ``DIR/cifar-10-python.tar.gz`` (or ``cifar-100-python.tar.gz``): the official archive, extracted on
  first use next to itself, or into ``~/.cache/prunekit`` when ``DIR`` is read-only.

When none is found and downloading is allowed, the archive is fetched from the official URL into
``DIR`` (or the cache when ``DIR`` is read-only), its MD5 checked, and extracted. Every file written
goes through a temporary name and an atomic rename, so an interrupted run never leaves a
half-written archive or folder under the final name.

Pickles are read with a restricted unpickler that only rebuilds numpy arrays, so a tampered file
cannot run code.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import pickle
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from prunekit.errors import PrunekitError
from prunekit.images import IMAGE_SHAPE

DOWNLOAD_TIMEOUT_S = 60.0  # per socket operation (connect / each read), not for the whole file
_CHUNK_BYTES = 1 << 20
_ROW_LENGTH = 3 * 32 * 32  # one image row in the pickle: R(1024) G(1024) B(1024), row-major


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of one dataset in the official format.

    ``mean`` / ``std`` are per-channel statistics of the training set on [0, 1] pixels.
    ``file_md5`` holds the checksums of the files in the official release. They are not enforced
    when reading, because a shortened copy in the same format (a test subset) is legitimate; the
    archive MD5 is what a download is checked against.
    """

    name: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    url: str
    archive: str
    archive_md5: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    file_md5: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def files(self) -> tuple[str, ...]:
        """Every file the extracted folder must contain."""
        return self.train_files + self.test_files + (self.meta_file,)


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(
        name="cifar10",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        archive="cifar-10-python.tar.gz",
        archive_md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        file_md5={
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
    ),
    "cifar100": DatasetInfo(
        name="cifar100",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        archive="cifar-100-python.tar.gz",
        archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        file_md5={
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48",
        },
    ),
}


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name``; an unknown name lists the valid ones."""
    try:
        return DATASETS[name]
    except KeyError:
        valid = ", ".join(sorted(DATASETS))
        raise PrunekitError(f"Unknown CIFAR dataset {name!r}. Valid names: {valid}.") from None


def default_cache() -> Path:
    """``~/.cache/prunekit``: the root used when none is given, and the fallback for writes."""
    return Path.home() / ".cache" / "prunekit"


def resolve_root(root: str | os.PathLike | None) -> Path:
    """The data root: ``root`` if given, else ``$PRUNEKIT_DATA``, else ``~/.cache/prunekit``."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get("PRUNEKIT_DATA")
    if env:
        return Path(env).expanduser()
    return default_cache()


def load_cifar(
    name: str,
    root: str | os.PathLike | None = None,
    train: bool = True,
    download: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Read one split of CIFAR-10 or CIFAR-100 exactly as stored.

    Returns ``(images, labels, class_names)``: ``images`` a ``torch.uint8`` tensor (N, 3, 32, 32),
    ``labels`` ``torch.int64`` (N,), class names from the metadata file (CIFAR-100: fine labels).
    May extract an archive or download one (see the module docstring); never writes elsewhere.
    """
    info = dataset_info(name)
    folder = _locate(info, resolve_root(root), download)
    _check_complete(info, folder)
    batches = [_read_batch(info, folder / f) for f in (info.train_files if train else info.test_files)]
    images = torch.from_numpy(np.concatenate([data for data, _ in batches]))
    labels = torch.from_numpy(np.concatenate([lab for _, lab in batches]))
    return images, labels, _read_class_names(info, folder / info.meta_file)


# --- finding the data -------------------------------------------------------------------------


def _locate(info: DatasetInfo, base: Path, download: bool) -> Path:
    """The extracted folder, extracting or downloading the archive when needed."""
    places = _search_places(base)
    for place in places:
        folder = _folder_in(info, place)
        if folder is not None:
            return folder
    for place in places:
        if (place / info.archive).is_file():
            return _extract(info, place / info.archive, _writable_dir(info, [place, *places]))
    others = _other_datasets(info, places)
    if others and others[0][1] == base:  # DIR is itself another dataset's folder: never download into it
        raise PrunekitError(_wrong_dataset_message(info, others))
    try:
        if not download:
            raise PrunekitError(_not_found_message(info, places))
        dest = _writable_dir(info, places)
        return _extract(info, _download(info, dest), dest)
    except PrunekitError as exc:
        if not others:
            raise
        raise PrunekitError(f"{_wrong_dataset_message(info, others)} ({exc})") from None


def _other_datasets(info: DatasetInfo, places: list[Path]) -> list[tuple[DatasetInfo, Path]]:
    """Other registered datasets present in ``places`` (as the place itself, its folder or its archive)."""
    found = []
    for place in places:
        for other in DATASETS.values():
            if other.name == info.name:
                continue
            if place.name == other.folder and place.is_dir():
                found.append((other, place))
            elif (place / other.folder).is_dir() or (place / other.archive).is_file():
                found.append((other, place / (other.folder if (place / other.folder).is_dir() else other.archive)))
    return found


def _wrong_dataset_message(info: DatasetInfo, others: list[tuple[DatasetInfo, Path]]) -> str:
    other, where = others[0]
    return (f"{info.name} was asked for, but {where} is {other.name} ({other.folder}/) and no {info.folder}/ "
            f"or {info.archive} was found: pass --dataset {other.name} to use it, or --data a folder holding "
            f"{info.folder}/")


def _search_places(base: Path) -> list[Path]:
    """The root, then the cache (where a read-only root's archive gets extracted)."""
    cache = default_cache()
    return [base] if _same_path(base, cache) else [base, cache]


def _same_path(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def _folder_in(info: DatasetInfo, place: Path) -> Path | None:
    """``place`` if it is the dataset folder itself, ``place/<folder>`` if that exists, else None."""
    if place.is_dir() and (place.name == info.folder or (place / info.meta_file).is_file()):
        return place
    if (place / info.folder).is_dir():
        return place / info.folder
    return None


def _is_writable(directory: Path) -> bool:
    """Writable, or creatable (its nearest existing ancestor is a writable folder); creates nothing. A
    folder without write bits counts as read-only even for root."""
    try:
        while not directory.exists():
            if directory.parent == directory:
                return False
            directory = directory.parent
        has_write_bits = directory.is_dir() and bool(directory.stat().st_mode & 0o222)
    except OSError:
        return False
    return has_write_bits and os.access(directory, os.W_OK)


def _missing_folders(directory: Path) -> list[Path]:
    """``directory`` and its ancestors that do not exist yet, outermost first."""
    missing = []
    while not directory.exists() and directory.parent != directory:
        missing.insert(0, directory)
        directory = directory.parent
    return missing


def _writable_dir(info: DatasetInfo, places: list[Path]) -> Path:
    for place in places:
        if _is_writable(place):
            return place
    tried = ", ".join(str(p) for p in places)
    raise PrunekitError(
        f"No writable directory to store {info.archive} or its extracted folder (tried {tried}). "
        f"Pass a writable directory with --data DIR or set PRUNEKIT_DATA=DIR."
    )


def _check_complete(info: DatasetInfo, folder: Path) -> None:
    missing = [f for f in info.files if not (folder / f).is_file()]
    if missing:
        raise PrunekitError(
            f"The {info.name} folder {folder} is incomplete: missing {', '.join(missing)}. "
            f"{_layout_hint(info)} Re-extract {info.archive} (from {info.url}) into a directory "
            f"DIR, then pass --data DIR or set PRUNEKIT_DATA=DIR."
        )


def _layout_hint(info: DatasetInfo) -> str:
    return (
        f"Expected layout: DIR/{info.folder}/ holding {', '.join(info.files)} "
        f"(the folder extracted from {info.archive}), or DIR/{info.archive} itself."
    )


def _not_found_message(info: DatasetInfo, places: list[Path]) -> str:
    searched = ", ".join(str(p) for p in places)
    return (
        f"{info.name} not found (searched {searched}). {_layout_hint(info)} "
        f"Get it from {info.url}, then pass --data DIR or set PRUNEKIT_DATA=DIR; "
        f"or allow downloading."
    )


# --- extracting and downloading ---------------------------------------------------------------


def _extract(info: DatasetInfo, archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into ``dest/<folder>`` through a temporary directory and one rename."""
    final = dest / info.folder
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".prunekit-extract-", dir=dest))
    try:
        _extract_members(info, archive, tmp)
        if not (tmp / info.folder).is_dir():
            raise PrunekitError(
                f"{archive} does not contain the folder {info.folder}/: it is not the official "
                f"{info.archive}. Download the official archive from {info.url}."
            )
        try:
            os.rename(tmp / info.folder, final)
        except OSError:
            if not final.is_dir():  # a concurrent run that finished first is fine; anything else is not
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _extract_members(info: DatasetInfo, archive: Path, into: Path) -> None:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(info, archive, member)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12: a second safety net
                tar.extractall(into, members=members, filter="data")
            else:
                tar.extractall(into, members=members)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise PrunekitError(
            f"{archive} is corrupt or not a .tar.gz archive ({exc}). Delete it and download "
            f"{info.archive} again from {info.url}."
        ) from None


def _check_member(info: DatasetInfo, archive: Path, member: tarfile.TarInfo) -> None:
    """Refuse absolute paths, ``..``, links and devices: an archive may only add plain files."""
    parts = Path(member.name).parts
    unsafe = (
        member.name.startswith(("/", "\\"))
        or ".." in parts
        or not (member.isfile() or member.isdir())
        or not parts
        or parts[0] != info.folder
    )
    if unsafe:
        raise PrunekitError(
            f"{archive} contains an unexpected or unsafe entry {member.name!r}; refusing to "
            f"extract it. Use the official {info.archive} from {info.url}."
        )


def _download(info: DatasetInfo, dest: Path) -> Path:
    """Fetch the archive into ``dest`` (temporary name, MD5 check, rename) and return its path. Folders
    created for it are removed again when the download fails."""
    created = _missing_folders(dest)
    dest.mkdir(parents=True, exist_ok=True)
    fd, part_name = tempfile.mkstemp(prefix=f".{info.archive}.", suffix=".part", dir=dest)
    part = Path(part_name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual = _fetch(info, out)
        if actual != info.archive_md5:
            raise PrunekitError(
                f"MD5 mismatch for the downloaded {info.archive}: expected {info.archive_md5}, "
                f"got {actual}. The download was incomplete or altered and has been deleted. "
                f"Retry, or download it by hand from {info.url} and pass --data DIR."
            )
        target = dest / info.archive
        os.replace(part, target)
        return target
    except BaseException:
        part.unlink(missing_ok=True)
        for folder in reversed(created):
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    finally:
        part.unlink(missing_ok=True)


def _fetch(info: DatasetInfo, out) -> str:
    """Stream ``info.url`` into ``out``; return the MD5 hex digest of what was written."""
    from tqdm import tqdm

    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(info.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            headers = getattr(response, "headers", None)
            total = int(headers.get("Content-Length", 0) or 0) if headers is not None else 0
            with tqdm(total=total or None, unit="B", unit_scale=True, desc=info.archive, disable=None) as bar:
                while chunk := response.read(_CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException) as exc:
        raise PrunekitError(_offline_message(info, exc)) from None
    return digest.hexdigest()


def _offline_message(info: DatasetInfo, exc: BaseException) -> str:
    reason = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
    return (
        f"Could not download {info.name} from {info.url} ({reason}): this machine looks offline "
        f"or the server is unreachable. On a connected machine download {info.archive}, put it "
        f"(or its extracted {info.folder}/ folder) in a directory DIR, then pass --data DIR or "
        f"set PRUNEKIT_DATA=DIR."
    )


# --- reading the pickles ----------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and nothing else (no arbitrary code)."""

    _NUMPY_NAMES = frozenset({"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"})

    def find_class(self, module: str, name: str):
        is_numpy = module == "numpy" or module.startswith("numpy.")
        # _codecs.encode: how Python 3 writes bytes in a protocol-2 pickle
        if (is_numpy and name in self._NUMPY_NAMES) or (module, name) == ("_codecs", "encode"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name}")


def _read_pickle(info: DatasetInfo, path: Path) -> dict[str, object]:
    """The pickled dict at ``path`` with its keys as ``str`` (official files have bytes keys)."""
    try:
        with path.open("rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # unpickling bad bytes can raise almost any exception type
        raise PrunekitError(_corrupt_message(info, path, f"{type(exc).__name__}: {exc}")) from None
    if not isinstance(obj, dict):
        raise PrunekitError(_corrupt_message(info, path, f"holds a {type(obj).__name__}, not a dict"))
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _corrupt_message(info: DatasetInfo, path: Path, detail: str) -> str:
    return (
        f"{path} is corrupt or not an official {info.name} file ({detail}). Delete the "
        f"{info.folder}/ folder and extract {info.archive} again (from {info.url})."
    )


def _read_batch(info: DatasetInfo, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(data uint8 (N, 3, 32, 32), labels int64 (N,))`` from one batch file, validated."""
    entry = _read_pickle(info, path)
    if "data" not in entry or info.label_key not in entry:
        raise PrunekitError(_corrupt_message(info, path, f"no 'data' or '{info.label_key}' entry"))
    data, labels = np.asarray(entry["data"]), np.asarray(entry[info.label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _ROW_LENGTH:
        detail = f"data is {data.dtype} {data.shape}, expected uint8 (N, {_ROW_LENGTH})"
        raise PrunekitError(_corrupt_message(info, path, detail))
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        detail = f"{len(data)} images but labels of shape {labels.shape}"
        raise PrunekitError(_corrupt_message(info, path, detail))
    if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
        detail = f"labels outside 0..{info.num_classes - 1}"
        raise PrunekitError(_corrupt_message(info, path, detail))
    return data.reshape(-1, *IMAGE_SHAPE), labels.astype(np.int64)


def _read_class_names(info: DatasetInfo, path: Path) -> list[str]:
    names = _read_pickle(info, path).get(info.names_key)
    if not isinstance(names, (list, tuple)) or len(names) != info.num_classes:
        detail = f"'{info.names_key}' is not a list of {info.num_classes} names"
        raise PrunekitError(_corrupt_message(info, path, detail))
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
