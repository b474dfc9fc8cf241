"""Loading image-classification datasets into memory as uint8 NHWC arrays.

Each dataset is looked for in a data directory D, in its own npz form first (`D/<name>.npz`), then in
the official layout, then as the official archive (extracted safely), and finally downloaded when a
network is reachable. ImageNet-100 and generic ImageFolder trees are decoded with PIL.
"""

from __future__ import annotations

import math
import os
import pickle
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gatekit.data.download import download_file, network_reachable, safe_extract
from gatekit.errors import GatekitError

DATASETS = ("cifar10", "cifar100", "stl10", "imagenet100", "imagefolder", "npz")

NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "stl10": ((0.4914, 0.4823, 0.4466), (0.247, 0.243, 0.261)),
    "imagenet100": ((0.485, 0.456, 0.406), (0.228, 0.224, 0.225)),
}


def normalization(dataset: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) of a dataset's images; other datasets (npz, image folders) use CIFAR-10's."""
    return NORMALIZATION.get(dataset, NORMALIZATION["cifar10"])


IMAGE_SIZE = {"cifar10": 32, "cifar100": 32, "stl10": 96, "imagenet100": 224}

SPLITS: dict[str, tuple[str, ...]] = {
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": ("train", "test", "unlabeled", "train+unlabeled"),
    "imagenet100": ("train", "val", "test"),
    "imagefolder": ("train", "val", "test"),
    "npz": ("train", "test"),
}

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DEFAULT_FOLDER_SIZE = 224
STL_SIZE = 96
STL_IMAGE_BYTES = 3 * STL_SIZE * STL_SIZE

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
DEFAULT_CLASS_NAMES = {"cifar10": CIFAR10_CLASSES, "stl10": STL10_CLASSES}


@dataclass
class ArrayDataset:
    """An in-memory image dataset: uint8 (N, H, W, 3) RGB images and optional int64 labels."""

    images: np.ndarray
    labels: np.ndarray | None
    class_names: list[str] | None
    name: str

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class OfficialSource:
    """Where a dataset's official files live: the folder inside D, its archive, and where to download it."""

    folder: str
    archive: str
    url: str
    md5: str


SOURCES = {
    "cifar10": OfficialSource(
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": OfficialSource(
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
    ),
    "stl10": OfficialSource(
        "stl10_binary",
        "stl10_binary.tar.gz",
        "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
        "91f7769df0f17e558f3565bffb0c7dfb",
    ),
}


# --------------------------------------------------------------------------------------------- paths


def default_data_dir() -> Path:
    """Where datasets go when neither --data-dir nor $GATEKIT_DATA names a directory: $XDG_CACHE_HOME/gatekit/data,
    else ~/.cache/gatekit/data (a relative $XDG_CACHE_HOME is ignored, as the XDG spec says)."""
    cache = os.environ.get("XDG_CACHE_HOME") or ""
    base = Path(cache) if os.path.isabs(cache) else Path("~/.cache").expanduser()
    return base / "gatekit" / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """`data_dir` if given, else $GATEKIT_DATA, else the default data directory (`default_data_dir`)."""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get("GATEKIT_DATA") or None
    if data_dir is None:
        return default_data_dir()
    return Path(data_dir).expanduser()


def how_to_provide(name: str, root: Path) -> str:
    """One sentence: how to give gatekit dataset `name` without a network (where its archive goes)."""
    source = SOURCES[name]
    return (
        f"download {source.url} (md5 {source.md5}) and place it at {root / source.archive}, or set GATEKIT_DATA "
        f"(or pass --data-dir) to a directory holding {name}.npz, {source.folder}/ or {source.archive}"
    )


def _check_name_and_split(name: str, split: str) -> None:
    """Raises GatekitError for an unknown dataset name or a split the dataset does not have."""
    if name not in DATASETS:
        raise GatekitError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    if split not in SPLITS[name]:
        raise GatekitError(f"unknown split {split!r} for {name}: choose one of {', '.join(SPLITS[name])}")


def _locate_official(name: str, root: Path, download: bool) -> Path:
    """The official folder of `name` in `root`, extracting or downloading its archive when needed."""
    source = SOURCES[name]
    folder, archive = root / source.folder, root / source.archive
    if folder.is_dir():
        return folder
    if not archive.is_file():
        expected = f"expected {root / (name + '.npz')}, {folder}/ or {archive}"
        if not download or os.environ.get("GATEKIT_OFFLINE") == "1":
            raise GatekitError(
                f"dataset {name} not found in {root}: {expected} (download disabled); {how_to_provide(name, root)}"
            )
        if not network_reachable(source.url):
            raise GatekitError(
                f"dataset {name} not found in {root}: {expected} (no network to download it); "
                f"{how_to_provide(name, root)}"
            )
        download_file(source.url, archive, source.md5)
    safe_extract(archive, root)
    if not folder.is_dir():
        raise GatekitError(f"archive {archive} did not contain the folder {source.folder}/")
    return folder


# ----------------------------------------------------------------------------------------------- npz


def _validate_images(images: np.ndarray, key: str, path: Path) -> None:
    """Raises GatekitError unless `images` is uint8 (N, H, W, 3)."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise GatekitError(
            f"{path}: {key} must be uint8 (N, H, W, 3) RGB images, found {images.dtype} {tuple(images.shape)}"
        )


def _validate_labels(labels: np.ndarray, count: int, key: str, path: Path) -> None:
    """Raises GatekitError unless `labels` is a non-negative integer vector of length `count`."""
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise GatekitError(f"{path}: {key} must be a 1-D integer array, found {labels.dtype} {tuple(labels.shape)}")
    if len(labels) != count:
        raise GatekitError(f"{path}: {key} has {len(labels)} labels but there are {count} images, shape {labels.shape}")
    if count and labels.min() < 0:
        raise GatekitError(f"{path}: {key} holds negative labels")


# Deflate expands its input at most about 1032-fold: a compressed member of n bytes holds at most 1032 n bytes.
_DEFLATE_MAX_RATIO = 1032


def _byte_size(n: int) -> str:
    """A byte count for a message: 123 bytes, 4.0 KiB, ..., 4.0 TiB."""
    size, unit = float(n), "bytes"
    for next_unit in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if size < 1024:
            break
        size, unit = size / 1024, next_unit
    return f"{n} bytes" if unit == "bytes" else f"{size:.1f} {unit}"


def _check_npz_member(zf: zipfile.ZipFile, path: Path, key: str) -> None:
    """Raises GatekitError when the .npy header of array `key` claims more bytes than its zip member could hold.

    numpy allocates the array its header describes before reading a byte of it, so a header claiming a few TiB
    would end in a MemoryError; the member's bytes (stored, or deflated at the format's largest ratio) bound the
    array it can really hold. Other compression methods are bounded by the size the archive records."""
    names = set(zf.namelist())
    name = key + ".npy" if key + ".npy" in names else key
    info = zf.getinfo(name)
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0), (3, 0)):
            return  # numpy refuses it when reading
        # format 3.0 differs from 2.0 only in the header's encoding (UTF-8 instead of latin-1)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        offset = f.tell()
    need = math.prod(shape) * dtype.itemsize
    holds = info.file_size - offset
    if info.compress_type == zipfile.ZIP_STORED:
        holds = min(holds, info.compress_size - offset)
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        holds = min(holds, info.compress_size * _DEFLATE_MAX_RATIO)
    if need > holds:
        raise GatekitError(
            f"corrupt dataset file {path}: {key} claims a {dtype} array of shape {tuple(shape)} "
            f"({_byte_size(need)}), more than the file holds for it ({_byte_size(max(holds, 0))})"
        )


def _load_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """Images, labels (None for 'unlabeled') and class names of `split` from an npz file, validated."""
    x_key, y_key = f"x_{split}", f"y_{split}"
    if not zipfile.is_zipfile(path):
        raise GatekitError(f"corrupt dataset file {path}: not an npz (zip) archive")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            needed = [x_key] if split == "unlabeled" else [x_key, y_key]
            missing = [k for k in needed if k not in keys]
            if missing:
                found = ", ".join(sorted(keys)) or "none"
                raise GatekitError(f"{path}: missing key {', '.join(missing)} (found {found})")
            for key in (x_key, y_key, "class_names"):
                if key in keys:
                    _check_npz_member(npz.zip, path, key)
            images = npz[x_key]
            labels = npz[y_key] if y_key in keys else None
            class_names = [str(c) for c in npz["class_names"]] if "class_names" in keys else None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise GatekitError(f"corrupt dataset file {path}: {e}") from e
    except MemoryError as e:  # arrays the file does hold, too large for this machine's memory
        raise GatekitError(f"dataset file {path}: not enough memory to load it ({e})") from e
    _validate_images(images, x_key, path)
    if labels is not None:
        _validate_labels(labels, len(images), y_key, path)
        labels = labels.astype(np.int64)
    return np.ascontiguousarray(images), labels, class_names


# --------------------------------------------------------------------------------------------- CIFAR


def _numpy_reconstruct() -> Callable[..., Any]:
    """numpy's ndarray pickle reconstructor, wherever this numpy version keeps it."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: every other global is refused.

    The official CIFAR python batches are pickled dicts of bytes, ints, lists and one numpy array, so
    the only globals they need are numpy's array reconstructor, ndarray and dtype.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}") from None


def load_pickle(path: Path) -> Any:
    """Loads an official CIFAR pickle with RestrictedUnpickler; errors become GatekitError."""
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise GatekitError(f"corrupt or unsafe pickle {path}: {e}") from e
    except (EOFError, OSError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise GatekitError(f"corrupt dataset file {path}: {e}") from e


def _cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """HWC images and int64 labels of one official CIFAR batch file (rows of 3072 bytes in CHW order)."""
    batch = load_pickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise GatekitError(f"corrupt dataset file {path}: expected a dict with b'data' and {label_key!r}")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise GatekitError(
            f"corrupt dataset file {path}: data is {data.dtype} {data.shape} with {len(labels)} labels, "
            "expected uint8 (N, 3072) with N labels"
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _load_cifar_folder(name: str, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images, labels and class names of `split` from the official cifar-10-batches-py / cifar-100-python."""
    if name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key, meta_file, names_key = b"labels", "batches.meta", b"label_names"
    else:
        files = [split]
        label_key, meta_file, names_key = b"fine_labels", "meta", b"fine_label_names"
    missing = [f for f in files + [meta_file] if not (folder / f).is_file()]
    if missing:
        raise GatekitError(f"incomplete dataset folder {folder}: missing {', '.join(missing)}")
    parts = [_cifar_batch(folder / f, label_key) for f in files]
    meta = load_pickle(folder / meta_file)
    if not isinstance(meta, dict) or names_key not in meta:
        raise GatekitError(f"corrupt dataset file {folder / meta_file}: no {names_key!r}")
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key]]
    images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
    labels = np.concatenate([p[1] for p in parts])
    return images, labels, class_names


# -------------------------------------------------------------------------------------------- STL-10


def _stl_count(x_file: Path) -> int:
    """Number of images in an STL-10 X file, checking its size is a whole number of images."""
    size = x_file.stat().st_size
    if size % STL_IMAGE_BYTES:
        raise GatekitError(f"corrupt dataset file {x_file}: {size} bytes is not a multiple of {STL_IMAGE_BYTES}")
    return size // STL_IMAGE_BYTES


def _read_stl_images(x_file: Path, count: int, chunk: int = 4096) -> np.ndarray:
    """The first `count` images of an STL-10 X file as (count, 96, 96, 3) HWC, converted chunk by chunk.

    The file stores each image column-major as (3, 96, 96): read as (N, 3, 96, 96) it is (N, C, W, H).
    """
    raw = np.memmap(x_file, dtype=np.uint8, mode="r", shape=(count, 3, STL_SIZE, STL_SIZE)) if count else None
    out = np.empty((count, STL_SIZE, STL_SIZE, 3), dtype=np.uint8)
    for start in range(0, count, chunk):
        out[start : start + chunk] = raw[start : start + chunk].transpose(0, 3, 2, 1)
    del raw
    return out


def _read_stl_labels(y_file: Path, count: int) -> np.ndarray:
    """The first `count` labels of an STL-10 y file (stored 1..10) as int64 0..9."""
    labels = np.fromfile(y_file, dtype=np.uint8, count=count).astype(np.int64)
    if len(labels) != count or (count and labels.min() < 1):
        raise GatekitError(f"corrupt dataset file {y_file}: expected {count} labels in 1..10")
    return labels - 1


def _stl_class_names(folder: Path) -> list[str]:
    """Class names from class_names.txt, or the standard STL-10 names if that file is missing."""
    path = folder / "class_names.txt"
    if not path.is_file():
        return list(STL10_CLASSES)
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _load_stl_folder(folder: Path, split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Images, labels (None for 'unlabeled') and class names of one STL-10 split from stl10_binary/."""
    x_file = folder / f"{split}_X.bin"
    y_file = folder / f"{split}_y.bin"
    if not x_file.is_file() or (split != "unlabeled" and not y_file.is_file()):
        raise GatekitError(f"incomplete dataset folder {folder}: missing {x_file.name} or {y_file.name}")
    count = _stl_count(x_file)
    if limit is not None:
        count = min(count, limit)
    labels = None if split == "unlabeled" else _read_stl_labels(y_file, count)
    return _read_stl_images(x_file, count), labels, _stl_class_names(folder)


# ------------------------------------------------------------------------------------- image folders


def _list_image_folder(split_dir: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """(file, label) pairs of an ImageFolder split, classes and files sorted alphabetically."""
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if not classes:
        raise GatekitError(f"no class folders in {split_dir}: expected {split_dir}/<class>/<image>")
    samples = [
        (path, label)
        for label, cls in enumerate(classes)
        for path in sorted((split_dir / cls).iterdir())
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
    ]
    if not samples:
        raise GatekitError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {split_dir}")
    return samples, classes


def _square_resize(image: Any, size: int) -> np.ndarray:
    """A PIL image resized (bicubic) so its shorter side is `size`, center-cropped to size x size, as uint8 HWC."""
    from PIL import Image

    image = image.convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _decode_image(path: Path, size: int) -> np.ndarray:
    """Decodes one image file to a size x size uint8 RGB array."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at the smallest DCT scale still >= size
            return _square_resize(image, size)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise GatekitError(f"cannot decode image {path}: {e}") from e
    except (Image.DecompressionBombError, MemoryError) as e:  # a header claiming billions of pixels
        raise GatekitError(f"cannot decode image {path}: {e}") from e


def _decode_all(paths: list[Path], size: int) -> np.ndarray:
    """Decodes `paths` in parallel on a small thread pool into one (N, size, size, 3) array."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)

    def fill(i: int) -> None:
        out[i] = _decode_image(paths[i], size)

    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(fill, range(len(paths))))
    return out


def _image_folder_split(root: Path, split: str) -> Path:
    """The folder of `split` under an ImageFolder root; 'test' and 'val' fall back to each other."""
    candidates = {"train": ["train"], "val": ["val", "test"], "test": ["test", "val"]}[split]
    for candidate in candidates:
        if (root / candidate).is_dir():
            return root / candidate
    raise GatekitError(
        f"split {split} not found in {root}: expected {' or '.join(str(root / c) + '/' for c in candidates)}"
        " holding <class>/<image> folders"
    )


def _load_image_folder(
    root: Path, split: str, size: int, limit: int | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decodes the first `limit` images (all if None) of an ImageFolder split, in class-then-file order."""
    samples, classes = _list_image_folder(_image_folder_split(root, split))
    if limit is not None:
        samples = samples[:limit]
    images = _decode_all([path for path, _ in samples], size)
    labels = np.array([label for _, label in samples], dtype=np.int64)
    return images, labels, classes


# ------------------------------------------------------------------------------------------- loading


def _resize_array(images: np.ndarray, size: int) -> np.ndarray:
    """Resizes every image of a uint8 NHWC array to size x size (shorter side bicubic, center crop)."""
    from PIL import Image

    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = _square_resize(Image.fromarray(image), size)
    return out


def _take(images: np.ndarray, labels: np.ndarray | None, limit: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The first `limit` images and labels, copied so the full arrays can be freed."""
    if limit is None or limit >= len(images):
        return np.ascontiguousarray(images), labels
    return images[:limit].copy(), None if labels is None else labels[:limit].copy()


def _load_part(
    name: str, split: str, root: Path, download: bool, image_size: int | None, limit: int | None
) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """Images, labels and class names of one plain split (no '+') of dataset `name`."""
    if name == "npz":
        if not root.is_file():
            raise GatekitError(f"dataset npz needs data_dir to be an .npz file; {root} is not a file")
        return _load_npz(root, split)
    if name in ("imagenet100", "imagefolder"):
        folder = root / "imagenet100" if name == "imagenet100" else root
        if not folder.is_dir():
            raise GatekitError(
                f"dataset {name} not found: expected {folder}/{{train,val}}/<class>/<image>; "
                "ImageNet cannot be downloaded automatically and must be obtained manually"
            )
        return _load_image_folder(
            folder,
            "val" if name == "imagenet100" and split == "test" else split,
            image_size or IMAGE_SIZE.get(name, DEFAULT_FOLDER_SIZE),
            limit,
        )
    npz_path = root / f"{name}.npz"
    if npz_path.is_file():
        images, labels, class_names = _load_npz(npz_path, split)
        if class_names is None and name in DEFAULT_CLASS_NAMES:
            class_names = list(DEFAULT_CLASS_NAMES[name])
        return images, labels, class_names
    folder = _locate_official(name, root, download)
    if name == "stl10":
        return _load_stl_folder(folder, split, limit)
    return _load_cifar_folder(name, folder, split)


def load_dataset(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    image_size: int | None = None,
    limit: int | None = None,
) -> ArrayDataset:
    """Loads `split` of dataset `name` from `data_dir` (or $GATEKIT_DATA) as uint8 NHWC RGB arrays.

    `split` is 'train' or 'test' ('val' for image folders; 'unlabeled' and 'train+unlabeled' for
    stl10, which have no labels). `image_size` resizes to a square (default: the dataset's own size,
    224 for image folders); `limit` keeps only the first `limit` images. For `name='npz'`, `data_dir`
    is the .npz file itself. Setting GATEKIT_OFFLINE=1 disables downloads, as download=False does.
    """
    _check_name_and_split(name, split)
    if limit is not None and limit < 1:
        raise GatekitError(f"limit must be at least 1, got {limit}")
    if image_size is not None and image_size < 1:
        raise GatekitError(f"image_size must be at least 1, got {image_size}")
    root = resolve_data_dir(data_dir)
    images_parts, labels_parts, class_names = [], [], None
    remaining = limit
    for part in split.split("+"):
        images, labels, class_names_part = _load_part(name, part, root, download, image_size, remaining)
        images, labels = _take(images, labels, remaining)
        images_parts.append(images)
        labels_parts.append(labels)
        class_names = class_names or class_names_part
        if remaining is not None:
            remaining -= len(images)
            if remaining == 0:
                break
    images = images_parts[0] if len(images_parts) == 1 else np.concatenate(images_parts)
    labels = labels_parts[0] if "+" not in split else None
    if image_size is not None:
        images = _resize_array(images, image_size)
    return ArrayDataset(np.ascontiguousarray(images), labels, class_names, f"{name}/{split}")
