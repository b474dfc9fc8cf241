"""Numerical verification of an artifact against its PyTorch reference, before anything is written."""

from __future__ import annotations

import numpy as np

from gatekit.errors import GatekitError

# Relative error = max |artifact - reference| / max |reference| over all verification outputs.
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 5e-2, "int8": 5e-2}


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    if actual.shape != reference.shape:
        raise GatekitError(f"output shape {actual.shape} differs from the reference's {reference.shape}")
    scale = float(np.max(np.abs(reference))) or 1.0
    return float(np.max(np.abs(actual.astype(np.float64) - reference.astype(np.float64))) / scale)


def run_batched(session, images: np.ndarray, batch: int) -> np.ndarray:
    """Runs `session` over `images` in batches of `batch` (images must be a multiple of it)."""
    outs = [session.run(np.ascontiguousarray(images[i : i + batch])) for i in range(0, len(images) - batch + 1, batch)]
    return np.concatenate(outs)


def check(name: str, actual: np.ndarray, reference: np.ndarray, precision: str) -> float:
    """The relative error, or a GatekitError saying by how much the artifact missed."""
    err = relative_error(actual, reference)
    tol = TOLERANCE[precision]
    if not np.isfinite(err) or err > tol:
        raise GatekitError(
            f"verification failed for {name}: relative error {err:.3g} against PyTorch exceeds the {precision} "
            f"tolerance {tol:g}; the artifact was not written"
        )
    return err
