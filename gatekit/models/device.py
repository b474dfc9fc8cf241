"""The torch device a training or evaluation run uses."""

from __future__ import annotations

import torch

from gatekit.errors import GatekitError


def pick_device(name: str) -> torch.device:
    """ "auto": CUDA when torch sees a GPU, else the CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GatekitError("device cuda asked for, but torch sees no CUDA GPU")
    return torch.device(name)
