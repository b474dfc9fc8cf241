import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def data_dir() -> Path | None:
    d = os.environ.get("GATEKIT_DATA")
    if d and (Path(d) / "cifar10.npz").is_file():
        return Path(d)
    return None


@pytest.fixture
def cifar_dir() -> Path:
    d = data_dir()
    if d is None:
        pytest.skip("real CIFAR-10 not found: set GATEKIT_DATA to a directory holding cifar10.npz")
    return d


@pytest.fixture(autouse=True)
def _few_threads():
    """Two torch threads once torch is imported; the fixture never imports it, so the deploy side's tests run
    without torch (test_layers.py checks that)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(2)
    yield
