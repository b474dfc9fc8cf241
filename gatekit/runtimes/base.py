"""The small interface every runtime backend implements: load an artifact, run a batch, describe itself.

Deploy side: nothing under `gatekit.runtimes` imports torch; each backend imports its runtime lazily.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gatekit.errors import GatekitError

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass
class RuntimeInfo:
    """What actually runs a session: runtime, version, device, provider/plugin, threads and precision."""

    name: str
    version: str
    device: str
    provider: str  # the execution provider / plugin that actually runs the graph
    threads: int | None  # None: the runtime's default
    precision: str  # one of PRECISIONS
    ops: str | None = None  # a graph with native custom ops: "native op" or "fallback" (which path ran)
    ops_library: str | None = None  # the op library or extension that was loaded
    ops_isa: str | None = None  # the kernel path that op library ran: avx512, avx2 or portable
    ops_reason: str | None = None  # why a native-op graph ran its fallback where the op library was wanted

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Runner:
    """One prepared inference: calling it runs the model; `output()` reads (copies) the last result."""

    call: Callable[[], object]
    output: Callable[[], np.ndarray]

    def __call__(self) -> None:
        self.call()


class Session(ABC):
    """One loaded artifact: one float32 NCHW input, one float32 output."""

    info: RuntimeInfo
    input_shape: tuple[int, ...]  # -1 for dynamic dimensions

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Runs one batch; returns a fresh float32 array the caller owns."""

    def runner(self, x: np.ndarray) -> Runner:
        """A zero-argument call that runs one inference on `x` with the least per-call work the runtime allows
        (input bound once, output left in the runtime's buffer): what the latency protocol times, so that
        the harness's own cost stays out of the figure. Backends with binding APIs override it."""
        x = as_input(x, self.input_shape)
        last: list = [None]

        def call():
            last[0] = self.run(x)

        return Runner(call, lambda: last[0])

    def close(self) -> None:
        """Releases native resources; backends that hold any override it. The base session holds none, so here
        closing does nothing."""
        return None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Backend(ABC):
    """A runtime that loads artifacts of one kind into Sessions."""

    name: str
    install_hint: str  # one line, shown when the runtime is missing
    modules: tuple[str, ...]  # the Python packages it imports; the first one carries __version__

    def available(self) -> bool:
        """True when every module the backend needs imports."""
        try:
            for module in self.modules:
                importlib.import_module(module)
        except ImportError:
            return False
        return True

    def version(self) -> str:
        return importlib.import_module(self.modules[0]).__version__

    @abstractmethod
    def load(
        self,
        path: str | os.PathLike,
        *,
        threads: int | None = None,
        precision: str = "fp32",
        device: str | None = None,
        extensions: tuple[str, ...] = (),
    ) -> Session:
        """Loads the artifact at `path`; raises GatekitError when it cannot run as asked."""


def as_input(x: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """`x` as a C-contiguous float32 array, checked against the session's input shape (-1: any)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != len(input_shape) or any(d != -1 and d != n for d, n in zip(input_shape, x.shape)):
        want = "x".join("?" if d == -1 else str(d) for d in input_shape)
        raise GatekitError(f"input of shape {'x'.join(map(str, x.shape))} does not fit the model's {want}")
    return x


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (runtimes raise multi-line ones)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]
