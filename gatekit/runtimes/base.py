"""The small interface every runtime backend implements: load an artifact, run a batch, describe itself.

Deploy side: nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass
class RuntimeInfo:
    name: str
    version: str
    device: str
    provider: str  # execution provider / plugin that actually runs
    threads: int | None
    precision: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Session(ABC):
    """One loaded artifact: one float32 NCHW input, one float32 output."""

    info: RuntimeInfo
    input_shape: tuple[int, ...]  # -1 for dynamic dimensions

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray: ...

    def close(self) -> None:  # backends with native resources override it
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Backend(ABC):
    name: str
    install_hint: str
    modules: tuple[str, ...]  # the Python packages the backend imports

    def available(self) -> bool:
        try:
            for module in self.modules:
                importlib.import_module(module)
        except ImportError:
            return False
        return True

    def version(self) -> str:
        return importlib.import_module(self.modules[0]).__version__

    @abstractmethod
    def load(self, path: str | Path, *, threads: int | None = None, precision: str = "fp32",
             device: str | None = None, extensions: tuple[str, ...] = ()) -> Session: ...
