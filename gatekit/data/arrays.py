"""Small numpy helpers shared by export and bench (torch-free)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def normalize_images(images_uint8_nhwc: np.ndarray, mean, std, scale: float = 1 / 255) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W), scaled and normalised per channel, C-contiguous."""
    x = images_uint8_nhwc.astype(np.float32).transpose(0, 3, 1, 2) * np.float32(scale)
    x = (x - np.asarray(mean, np.float32).reshape(1, 3, 1, 1)) / np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def recorded_dir(path: str | None) -> str | None:
    """A data directory recorded in a checkpoint or manifest, if it exists on this machine (else None,
    so that the caller falls back to $GATEKIT_DATA)."""
    return path if path and Path(path).exists() else None
