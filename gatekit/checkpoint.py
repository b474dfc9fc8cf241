"""Checkpoints: the encoder as safetensors (what eval and export read) and the full training state.

A run directory holds
- `model.safetensors`: the encoder weights, with the model and training configs in its metadata;
- `checkpoint.pt`: weights of encoder and projector, optimizer state, epoch, step and RNG states,
  for `--resume`. It holds only tensors and plain containers and is read with weights_only=True.
Both are written atomically. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from gatekit import __version__
from gatekit.atomic import atomic_path
from gatekit.errors import GatekitError
from gatekit.models import GatedResNet, ModelConfig

MODEL_FILE = "model.safetensors"
STATE_FILE = "checkpoint.pt"


def save_model(path: str | os.PathLike, backbone: GatedResNet, metadata: dict) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    meta = {"gatekit_version": __version__, "model_config": json.dumps(backbone.cfg.to_dict())}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _resolve(path: str | os.PathLike, file_in_run_dir: str, missing: str) -> Path:
    """A file given directly, or `file_in_run_dir` inside a run directory; GatekitError if absent."""
    path = Path(path)
    if path.is_dir():
        path = path / file_in_run_dir
    if not path.is_file():
        raise GatekitError(f"{missing} at {path}")
    return path


def resolve_model_file(path: str | os.PathLike) -> Path:
    return _resolve(path, MODEL_FILE, "no checkpoint")


def load_model(path: str | os.PathLike, device: str = "cpu") -> tuple[GatedResNet, dict]:
    """Loads the encoder from a run directory or a .safetensors file. Returns (model in eval mode, metadata)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    file = resolve_model_file(path)
    try:
        with safe_open(str(file), framework="pt") as f:
            raw = f.metadata() or {}
        tensors = load_file(str(file), device=device)
    except (SafetensorError, OSError, ValueError) as e:
        raise GatekitError(
            f"corrupt checkpoint {file}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    if "model_config" not in raw:
        raise GatekitError(f"corrupt checkpoint {file}: no model_config in its metadata (not a gatekit model?)")
    meta = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except json.JSONDecodeError:
            meta[k] = v
    bad = [k for k in ("model_config", "train_config") if k in meta and not isinstance(meta[k], dict)]
    if bad:
        raise GatekitError(f"corrupt checkpoint {file}: its metadata's {bad[0]} is not a table")
    try:
        model = GatedResNet(ModelConfig.from_dict(meta["model_config"]))
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except GatekitError as e:
        raise GatekitError(f"corrupt checkpoint {file}: model_config: {e}") from None
    except RuntimeError as e:  # a tensor of another shape: the metadata describes another model
        detail = [x.strip() for x in str(e).splitlines() if x.strip()]
        raise GatekitError(
            f"corrupt checkpoint {file}: its tensors do not fit its model_config "
            f"({(detail[1] if len(detail) > 1 else detail[0] if detail else 'shape mismatch')[:200]})"
        ) from None
    if missing or unexpected:
        raise GatekitError(
            f"corrupt checkpoint {file}: {len(missing)} missing and {len(unexpected)} unexpected tensors"
            f" (e.g. {(missing or unexpected)[0]})"
        )
    meta["sha256"] = sha256_file(file)
    return model.to(device).eval(), meta


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_state(path: str | os.PathLike, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | os.PathLike) -> dict:
    path = _resolve(path, STATE_FILE, f"nothing to resume: no {STATE_FILE}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a truncated or foreign file
        raise GatekitError(
            f"corrupt training state {path}: {(str(e).splitlines() or [type(e).__name__])[0][:200]}"
        ) from None
