"""Dataset loading: CIFAR-10/100, STL-10, ImageNet-100 / ImageFolder trees and plain npz files, as uint8 NHWC arrays."""

from gatekit.data.datasets import (
    DATASETS,
    IMAGE_SIZE,
    NORMALIZATION,
    SPLITS,
    ArrayDataset,
    RestrictedUnpickler,
    default_data_dir,
    load_dataset,
    normalization,
    resolve_data_dir,
)
from gatekit.data.download import download_file, md5_file, safe_extract, verify_md5

__all__ = [
    "DATASETS",
    "IMAGE_SIZE",
    "NORMALIZATION",
    "SPLITS",
    "ArrayDataset",
    "RestrictedUnpickler",
    "default_data_dir",
    "download_file",
    "load_dataset",
    "normalization",
    "md5_file",
    "resolve_data_dir",
    "safe_extract",
    "verify_md5",
]
