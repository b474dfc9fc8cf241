"""Dataset loading on tiny synthetic copies of each official format (plus the real CIFAR-10 when present)."""

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gatekit.data.datasets as datasets_module
from gatekit.data import (
    DATASETS,
    IMAGE_SIZE,
    NORMALIZATION,
    RestrictedUnpickler,
    download_file,
    load_dataset,
    md5_file,
    resolve_data_dir,
    safe_extract,
    verify_md5,
)
from gatekit.errors import GatekitError
from tests.conftest import data_dir

N_PER_BATCH = 4


def official_pickle(obj) -> bytes:
    """Pickles like the official (Python 2) CIFAR files: text GLOBAL opcodes naming numpy.core.multiarray."""
    return pickle.dumps(obj, protocol=3).replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def cifar_chw(images_hwc: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) HWC images as the official (N, 3072) rows in CHW order."""
    return np.ascontiguousarray(images_hwc.transpose(0, 3, 1, 2)).reshape(len(images_hwc), -1)


def make_cifar10_folder(root: Path) -> np.ndarray:
    """Writes a tiny cifar-10-batches-py/ under root; returns all train images (HWC) in order."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train = []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        images = rng.integers(0, 256, (N_PER_BATCH, 32, 32, 3), dtype=np.uint8)
        labels = [(i + j) % 10 for j in range(N_PER_BATCH)]
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": cifar_chw(images),
            b"filenames": [f"{j}.png".encode() for j in range(N_PER_BATCH)],
        }
        (folder / name).write_bytes(official_pickle(batch))
        if name != "test_batch":
            train.append(images)
    meta = {b"label_names": [n.encode() for n in datasets_module.CIFAR10_CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(official_pickle(meta))
    return np.concatenate(train)


def tar_folder(folder: Path, archive: Path) -> None:
    """Packs `folder` into a .tar.gz whose single top-level entry is the folder's name."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)


def write_stl_images(path: Path, images_hwc: np.ndarray) -> None:
    """Writes HWC images in STL-10's column-major layout: (N, C, W, H) in C order."""
    path.write_bytes(np.ascontiguousarray(images_hwc.transpose(0, 3, 2, 1)).tobytes())


# ------------------------------------------------------------------------------------------- basics


def test_constants():
    assert DATASETS == ("cifar10", "cifar100", "stl10", "imagenet100", "imagefolder", "npz")
    assert NORMALIZATION["cifar10"] == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert IMAGE_SIZE == {"cifar10": 32, "cifar100": 32, "stl10": 96, "imagenet100": 224}


def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEKIT_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "x") == tmp_path / "x"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("GATEKIT_DATA")  # neither: the default data directory
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir(None) == tmp_path / "cache" / "gatekit" / "data"
    monkeypatch.setenv("GATEKIT_DATA", "")
    assert resolve_data_dir("") == tmp_path / "cache" / "gatekit" / "data"
    for xdg in ("", "relative/cache"):  # unset or relative (the XDG spec ignores it): ~/.cache
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        assert resolve_data_dir(None) == tmp_path / "home" / ".cache" / "gatekit" / "data"


def test_unknown_name_and_split(tmp_path):
    with pytest.raises(GatekitError, match="unknown dataset 'mnist'.*cifar10, cifar100"):
        load_dataset("mnist", "train", tmp_path)
    with pytest.raises(GatekitError, match="unknown split 'unlabeled' for cifar10.*train, test"):
        load_dataset("cifar10", "unlabeled", tmp_path)
    with pytest.raises(GatekitError, match="limit must be at least 1"):
        load_dataset("cifar10", "train", tmp_path, limit=0)


# -------------------------------------------------------------------------------------------- CIFAR


def test_cifar10_official_folder(tmp_path):
    train_hwc = make_cifar10_folder(tmp_path)
    train = load_dataset("cifar10", "train", tmp_path, download=False)
    assert train.images.shape == (5 * N_PER_BATCH, 32, 32, 3) and train.images.dtype == np.uint8
    assert train.images.flags.c_contiguous
    assert train.labels.dtype == np.int64 and train.labels.tolist()[:N_PER_BATCH] == [0, 1, 2, 3]
    assert train.class_names[0] == "airplane" and len(train.class_names) == 10
    assert train.name == "cifar10/train" and len(train) == 5 * N_PER_BATCH
    np.testing.assert_array_equal(train.images, train_hwc)
    test = load_dataset("cifar10", "test", tmp_path, download=False, limit=3)
    assert test.images.shape == (3, 32, 32, 3) and test.labels.tolist() == [5, 6, 7]


def test_cifar_chw_to_hwc_known_pixel(tmp_path):
    make_cifar10_folder(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch = pickle.loads(path.read_bytes(), encoding="bytes")
    data = np.zeros_like(batch[b"data"])
    channel, row, col = 2, 5, 7
    data[0, channel * 1024 + row * 32 + col] = 200  # CHW row-major offset of (c=2, y=5, x=7)
    batch[b"data"] = data
    path.write_bytes(official_pickle(batch))
    image = load_dataset("cifar10", "train", tmp_path, download=False, limit=1).images[0]
    assert image[row, col, channel] == 200
    assert image.sum() == 200


def test_cifar100_official_folder(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for split, n in (("train", 6), ("test", 2)):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        batch = {b"data": cifar_chw(images), b"fine_labels": list(range(n)), b"coarse_labels": [0] * n}
        (folder / split).write_bytes(official_pickle(batch))
    meta = {b"fine_label_names": [f"c{i}".encode() for i in range(100)], b"coarse_label_names": []}
    (folder / "meta").write_bytes(official_pickle(meta))
    train = load_dataset("cifar100", "train", tmp_path, download=False)
    assert train.images.shape == (6, 32, 32, 3) and train.labels.tolist() == list(range(6))
    assert train.class_names[99] == "c99"
    assert len(load_dataset("cifar100", "test", tmp_path, download=False)) == 2


def test_cifar10_archive_is_extracted(tmp_path):
    source = tmp_path / "source"
    train_hwc = make_cifar10_folder(source)
    data = tmp_path / "data"
    data.mkdir()
    tar_folder(source / "cifar-10-batches-py", data / "cifar-10-python.tar.gz")
    train = load_dataset("cifar10", "train", data, download=False)
    np.testing.assert_array_equal(train.images, train_hwc)
    assert (data / "cifar-10-batches-py" / "batches.meta").is_file()
    assert sorted(p.name for p in data.iterdir()) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]


def test_image_size_resizes_arrays(tmp_path):
    make_cifar10_folder(tmp_path)
    small = load_dataset("cifar10", "test", tmp_path, download=False, image_size=16)
    assert small.images.shape == (N_PER_BATCH, 16, 16, 3) and small.images.dtype == np.uint8


def test_missing_dataset_without_download(tmp_path):
    with pytest.raises(GatekitError, match="dataset cifar10 not found in") as info:
        load_dataset("cifar10", "train", tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / "cifar10.npz") in message and "cifar-10-batches-py" in message
    assert "\n" not in message


def test_missing_dataset_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets_module, "network_reachable", lambda url: False)
    with pytest.raises(GatekitError, match=r"dataset stl10 not found in .*no network to download it"):
        load_dataset("stl10", "train", tmp_path)


# ------------------------------------------------------------------------------------ safety checks


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_unpickler_refuses_os_system(tmp_path):
    payload = pickle.dumps({b"data": _Evil()})
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle global (posix|nt).system"):
        RestrictedUnpickler(io.BytesIO(payload), encoding="bytes").load()
    folder = tmp_path / "cifar-10-batches-py"
    make_cifar10_folder(tmp_path)
    (folder / "data_batch_1").write_bytes(payload)
    with pytest.raises(GatekitError, match="unsafe pickle .*data_batch_1"):
        load_dataset("cifar10", "train", tmp_path, download=False)


def test_unpickler_accepts_numpy_arrays():
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for payload in (official_pickle(array), pickle.dumps(array, protocol=4)):
        loaded = RestrictedUnpickler(io.BytesIO(payload), encoding="bytes").load()
        np.testing.assert_array_equal(loaded, array)


def _tar_with(archive: Path, name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, 0 if kind != tarfile.REGTYPE else 4
    with tarfile.open(archive, "w:gz") as tar:
        tar.addfile(info, io.BytesIO(b"evil") if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize(
    "name, kind, linkname",
    [
        ("../evil.txt", tarfile.REGTYPE, ""),
        ("/tmp/evil.txt", tarfile.REGTYPE, ""),
        ("ok/../../evil.txt", tarfile.REGTYPE, ""),
        ("link", tarfile.SYMTYPE, "/etc/passwd"),
    ],
)
def test_malicious_tar_member_refused(tmp_path, name, kind, linkname):
    archive = tmp_path / "bad.tar.gz"
    _tar_with(archive, name, kind, linkname)
    dest = tmp_path / "out"
    with pytest.raises(GatekitError, match="refusing"):
        safe_extract(archive, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert list(dest.iterdir()) == []  # nothing extracted, no staging folder left


def test_corrupt_archive(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not a tar file")
    with pytest.raises(GatekitError, match="corrupt archive"):
        load_dataset("cifar10", "train", tmp_path, download=False)


def test_md5_helpers(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"hello")
    assert md5_file(path) == "5d41402abc4b2a76b9719d911017c592"
    verify_md5(path, "5D41402ABC4B2A76B9719D911017C592")
    with pytest.raises(GatekitError, match="checksum mismatch for .*file.bin"):
        verify_md5(path, "0" * 32)


def test_download_checks_md5_and_leaves_no_partial_file(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"payload")
    dest_dir = tmp_path / "dest"
    with pytest.raises(GatekitError, match="checksum mismatch"):
        download_file(source.as_uri(), dest_dir / "a.bin", "0" * 32)
    assert list(dest_dir.iterdir()) == []
    download_file(source.as_uri(), dest_dir / "a.bin", md5_file(source))
    assert (dest_dir / "a.bin").read_bytes() == b"payload" and len(list(dest_dir.iterdir())) == 1


# -------------------------------------------------------------------------------------------- STL-10


def make_stl10_folder(root: Path) -> dict[str, np.ndarray]:
    """Writes a tiny stl10_binary/ (3 train, 2 test, 4 unlabeled images); returns the HWC images."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    images = {
        split: rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
        for split, n in (("train", 3), ("test", 2), ("unlabeled", 4))
    }
    for split, array in images.items():
        write_stl_images(folder / f"{split}_X.bin", array)
    (folder / "train_y.bin").write_bytes(bytes([1, 5, 10]))
    (folder / "test_y.bin").write_bytes(bytes([2, 3]))
    (folder / "class_names.txt").write_text("\n".join(datasets_module.STL10_CLASSES) + "\n")
    return images


def test_stl10_binary(tmp_path):
    images = make_stl10_folder(tmp_path)
    train = load_dataset("stl10", "train", tmp_path, download=False)
    assert train.images.shape == (3, 96, 96, 3) and train.images.dtype == np.uint8
    assert train.labels.tolist() == [0, 4, 9] and train.class_names[7] == "monkey"
    np.testing.assert_array_equal(train.images, images["train"])
    unlabeled = load_dataset("stl10", "unlabeled", tmp_path, download=False, limit=2)
    assert unlabeled.labels is None
    np.testing.assert_array_equal(unlabeled.images, images["unlabeled"][:2])
    both = load_dataset("stl10", "train+unlabeled", tmp_path, download=False)
    assert len(both) == 7 and both.labels is None and both.name == "stl10/train+unlabeled"
    np.testing.assert_array_equal(both.images[3:], images["unlabeled"])
    assert len(load_dataset("stl10", "train+unlabeled", tmp_path, download=False, limit=4)) == 4


def test_stl10_column_major_known_pixel(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    raw = np.zeros(2 * 3 * 96 * 96, dtype=np.uint8)
    n, channel, row, col = 1, 1, 10, 20
    raw[n * 3 * 96 * 96 + channel * 96 * 96 + col * 96 + row] = 77  # column-major: row index varies fastest
    (folder / "test_X.bin").write_bytes(raw.tobytes())
    (folder / "test_y.bin").write_bytes(bytes([1, 2]))
    test = load_dataset("stl10", "test", tmp_path, download=False)
    assert test.images[n, row, col, channel] == 77 and int(test.images.sum()) == 77
    assert test.class_names == list(datasets_module.STL10_CLASSES)


def test_stl10_truncated_file(tmp_path):
    make_stl10_folder(tmp_path)
    path = tmp_path / "stl10_binary" / "test_X.bin"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(GatekitError, match="corrupt dataset file .*test_X.bin"):
        load_dataset("stl10", "test", tmp_path, download=False)


# ------------------------------------------------------------------------------------- image folders


def make_image_folder(root: Path, split: str, sizes: dict[str, list[tuple[int, int]]]) -> None:
    """Writes solid-colour PNGs root/split/<class>/<i>.png of the given (width, height) sizes."""
    for k, (cls, dims) in enumerate(sizes.items()):
        (root / split / cls).mkdir(parents=True)
        for i, (w, h) in enumerate(dims):
            Image.new("RGB", (w, h), (50 * k, 10 * i, 200)).save(root / split / cls / f"{i}.png")


def test_image_folder(tmp_path):
    make_image_folder(tmp_path, "train", {"zebra": [(40, 20), (20, 40)], "ant": [(30, 30)]})
    make_image_folder(tmp_path, "val", {"zebra": [(17, 23)], "ant": [(64, 48)]})
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")
    train = load_dataset("imagefolder", "train", tmp_path, image_size=16)
    assert train.images.shape == (3, 16, 16, 3) and train.images.dtype == np.uint8
    assert train.class_names == ["ant", "zebra"] and train.labels.tolist() == [0, 1, 1]
    assert tuple(train.images[0, 8, 8]) == (50, 0, 200)  # ant: the second class written, first sorted
    assert tuple(train.images[2, 8, 8]) == (0, 10, 200)
    test = load_dataset("imagefolder", "test", tmp_path, image_size=8)  # 'test' falls back to val/
    assert test.images.shape == (2, 8, 8, 3)
    assert len(load_dataset("imagefolder", "train", tmp_path, image_size=16, limit=2)) == 2


def test_image_folder_limit_decodes_only_limit(tmp_path, monkeypatch):
    make_image_folder(tmp_path, "train", {"a": [(8, 8)] * 5})
    decoded = []
    original = datasets_module._decode_image
    monkeypatch.setattr(datasets_module, "_decode_image", lambda p, s: decoded.append(p) or original(p, s))
    assert len(load_dataset("imagefolder", "train", tmp_path, image_size=8, limit=2)) == 2
    assert len(decoded) == 2


def test_imagenet100_layout_and_errors(tmp_path):
    make_image_folder(tmp_path / "imagenet100", "val", {"n01": [(300, 260)]})
    test = load_dataset("imagenet100", "test", tmp_path)
    assert test.images.shape == (1, 224, 224, 3) and test.class_names == ["n01"]
    with pytest.raises(GatekitError, match="split train not found"):
        load_dataset("imagenet100", "train", tmp_path)
    with pytest.raises(GatekitError, match="obtained manually"):
        load_dataset("imagenet100", "train", tmp_path / "elsewhere")
    bad = tmp_path / "imagenet100" / "val" / "n01" / "broken.jpg"
    bad.write_bytes(b"garbage")
    with pytest.raises(GatekitError, match="cannot decode image .*broken.jpg"):
        load_dataset("imagenet100", "val", tmp_path)


def test_image_header_claiming_billions_of_pixels(tmp_path):
    """A 4x4 PNG whose header says 100000 x 100000: one line naming the file, not PIL's DecompressionBombError."""
    import struct
    import zlib

    make_image_folder(tmp_path, "train", {"a": [(8, 8)]})
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, "PNG")
    data = bytearray(png.getvalue())
    data[16:24] = struct.pack(">II", 100000, 100000)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (tmp_path / "train" / "a" / "bomb.png").write_bytes(bytes(data))
    with pytest.raises(GatekitError) as e:
        load_dataset("imagefolder", "train", tmp_path, image_size=8)
    assert "\n" not in str(e.value) and "cannot decode image" in str(e.value) and "bomb.png" in str(e.value)


# ----------------------------------------------------------------------------------------------- npz


def _valid_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "x_train": rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8),
        "y_train": np.arange(5, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8),
        "y_test": np.array([1, 0]),
    }


def test_npz_file(tmp_path):
    arrays = _valid_arrays()
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays, class_names=np.array([f"k{i}" for i in range(5)]))
    train = load_dataset("npz", "train", path)
    np.testing.assert_array_equal(train.images, arrays["x_train"])
    assert train.labels.dtype == np.int64 and train.class_names[4] == "k4" and train.name == "npz/train"
    assert load_dataset("npz", "test", path, limit=1).labels.tolist() == [1]


def test_named_npz_in_data_dir(tmp_path):
    np.savez(tmp_path / "cifar10.npz", **_valid_arrays())
    train = load_dataset("cifar10", "train", tmp_path, download=False)
    assert train.images.shape == (5, 8, 8, 3) and train.class_names[0] == "airplane"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("y_train"), "missing key y_train"),
        (lambda a: a.update(x_train=a["x_train"][:, :, :, 0]), r"x_train must be .*found uint8 \(5, 8, 8\)"),
        (lambda a: a.update(x_train=a["x_train"].astype(np.float32)), r"x_train .*found float32 \(5, 8, 8, 3\)"),
        (lambda a: a.update(x_train=np.zeros((5, 8, 8, 4), np.uint8)), r"x_train .*found uint8 \(5, 8, 8, 4\)"),
        (lambda a: a.update(y_train=np.arange(4)), r"y_train has 4 labels but there are 5 images"),
        (lambda a: a.update(y_train=np.zeros((5, 1), np.int64)), r"y_train must be a 1-D integer array.*\(5, 1\)"),
    ],
)
def test_npz_validation(tmp_path, change, message):
    arrays = _valid_arrays()
    change(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(GatekitError, match=message):
        load_dataset("npz", "train", path)


def test_npz_corrupt_or_missing(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(GatekitError, match="corrupt dataset file .*broken.npz"):
        load_dataset("npz", "train", path)
    with pytest.raises(GatekitError, match="needs data_dir to be an .npz file"):
        load_dataset("npz", "train", tmp_path)


def huge_header_npz(path: Path, compressed: bool = False) -> Path:
    """An npz whose x_train.npy header claims a (2**24, 256, 256, 3) uint8 array (3 TiB) over 96 bytes of data;
    y_train and x_test are valid."""
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (1 << 24, 256, 256, 3)}
    )
    arrays = _valid_arrays()
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as zf:
        zf.writestr("x_train.npy", header.getvalue() + bytes(96))
        for key in ("y_train", "x_test", "y_test"):
            member = io.BytesIO()
            np.lib.format.write_array(member, arrays[key])
            zf.writestr(f"{key}.npy", member.getvalue())
    return path


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_header_claiming_more_than_the_file_holds(tmp_path, compressed):
    """numpy would allocate the 3 TiB its header claims (ArrayMemoryError); refused in one line naming file and key,
    while the file's valid arrays still load."""
    path = huge_header_npz(tmp_path / "huge.npz", compressed)
    with pytest.raises(GatekitError) as e:
        load_dataset("npz", "train", path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    assert "x_train claims a uint8 array of shape (16777216, 256, 256, 3) (3.0 TiB)" in message
    assert "more than the file holds for it (96 bytes)" in message
    assert load_dataset("npz", "test", path).images.shape == (2, 8, 8, 3)


def test_npz_header_matching_its_data_loads_from_a_compressed_file(tmp_path):
    """The bound allows deflate's real ratios: a large, highly compressible array loads."""
    arrays = _valid_arrays()
    arrays["x_train"] = np.zeros((64, 64, 64, 3), np.uint8)  # 786 kB, deflated to under 1 kB
    arrays["y_train"] = np.zeros(64, np.int64)
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, **arrays)
    assert load_dataset("npz", "train", path).images.shape == (64, 64, 64, 3)


def test_npz_not_a_zip(tmp_path):
    path = tmp_path / "plain.npz"
    np.save(tmp_path / "plain.npy", _valid_arrays()["x_train"])
    (tmp_path / "plain.npy").rename(path)
    with pytest.raises(GatekitError, match=r"corrupt dataset file .*plain.npz: not an npz \(zip\) archive"):
        load_dataset("npz", "train", path)


# -------------------------------------------------------------------------------------- real CIFAR-10


def test_real_cifar10():
    root = data_dir()
    if root is None:
        pytest.skip("real CIFAR-10 not found: set GATEKIT_DATA to a directory holding cifar10.npz")
    train = load_dataset("cifar10", "train", root, download=False)
    assert train.images.shape == (50000, 32, 32, 3) and train.labels.shape == (50000,)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    assert train.labels.min() == 0 and train.labels.max() == 9
    assert train.labels[:5].tolist() == [6, 9, 9, 4, 1]
    test = load_dataset("cifar10", "test", root, download=False)
    assert test.images.shape == (10000, 32, 32, 3) and test.labels.shape == (10000,)
    assert np.bincount(test.labels).tolist() == [1000] * 10
    small = load_dataset("cifar10", "train", root, download=False, limit=100)
    assert small.images.shape == (100, 32, 32, 3) and small.labels.shape == (100,)
    np.testing.assert_array_equal(small.images, train.images[:100])


# ------------------------------------------------------------------- the default data directory, no network


def _no_data_env(monkeypatch, tmp_path) -> Path:
    """GATEKIT_DATA unset, the cache in tmp_path, no network: returns the default data directory."""
    monkeypatch.delenv("GATEKIT_DATA", raising=False)
    monkeypatch.delenv("GATEKIT_OFFLINE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets_module, "network_reachable", lambda url: False)
    return tmp_path / "cache" / "gatekit" / "data"


def test_missing_data_without_network_says_in_one_line_how_to_provide_it(tmp_path, monkeypatch):
    default = _no_data_env(monkeypatch, tmp_path)
    with pytest.raises(GatekitError) as info:
        load_dataset("cifar10", "train")
    message = str(info.value)
    assert "\n" not in message
    assert f"dataset cifar10 not found in {default}" in message and "no network to download it" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert f"place it at {default / 'cifar-10-python.tar.gz'}" in message and "GATEKIT_DATA" in message
    assert not (tmp_path / "cache").exists(), "nothing is created when nothing can be fetched"


def test_the_official_archive_in_the_default_directory_is_used(tmp_path, monkeypatch):
    default = _no_data_env(monkeypatch, tmp_path)
    source = tmp_path / "source"
    train_hwc = make_cifar10_folder(source)
    default.mkdir(parents=True)
    tar_folder(source / "cifar-10-batches-py", default / "cifar-10-python.tar.gz")
    train = load_dataset("cifar10", "train")
    np.testing.assert_array_equal(train.images, train_hwc)
    assert (default / "cifar-10-batches-py").is_dir()


def test_demo_without_data_or_network_ends_in_one_line(tmp_path, monkeypatch, capsys):
    from gatekit import demo

    default = _no_data_env(monkeypatch, tmp_path)
    with pytest.raises(SystemExit) as e:
        demo.main(["--out", str(tmp_path / "demo"), "--epochs", "1"])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and "Traceback" not in out + err
    lines = [x for x in (out + err).splitlines() if x.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("gatekit demo: error: dataset cifar10 not found in") and str(default) in lines[0]
    assert "cifar-10-python.tar.gz" in lines[0] and "GATEKIT_DATA" in lines[0]
    assert not (tmp_path / "demo").exists()
