"""torch eager, the reference runtime of `gatekit bench`: rebuilds an exported graph's PyTorch module
from its manifest. Training side (needs torch); the deploy side finds it by name through the
`gatekit.reference_runtimes` entry point, only when "torch" is asked for.

The artifact is the manifest JSON (`GRAPH.FORMAT.json`): its checkpoint, graph kind, kept channels,
dynamic form and skipping blocks, and probe give exactly the deploy module the exporter traced.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gatekit.errors import GatekitError
from gatekit.runtimes.base import Backend, RuntimeInfo, Session


class TorchSession(Session):
    def __init__(self, module, info: RuntimeInfo, input_shape):
        import torch

        self._torch = torch
        self._module = module
        self.info = info
        self.input_shape = tuple(input_shape)

    def run(self, x: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self._module(self._torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


class TorchBackend(Backend):
    name = "torch"
    install_hint = "pip install torch (the training side of gatekit)"
    modules = ("torch",)

    def load(self, path, *, threads=None, precision="fp32", device=None, extensions=()) -> Session:
        import torch

        from gatekit.checkpoint import load_model
        from gatekit.export.graphs import build_graph

        path = Path(path)
        if path.suffix != ".json" or not path.is_file():
            raise GatekitError(f"the torch runtime runs an export manifest (.json), got {path}")
        if precision != "fp32" or (device or "cpu") != "cpu":
            raise GatekitError("the torch reference runtime runs fp32 on the CPU")
        manifest = json.loads(path.read_text())
        model, meta = load_model(manifest["checkpoint"])
        if meta["sha256"] != manifest["checkpoint_sha256"]:
            raise GatekitError(f"checkpoint {manifest['checkpoint']} changed since {path.name} was exported")
        head = None
        if manifest["output"].get("probe"):
            from gatekit.evaluate.linear_probe import load_probe

            p = load_probe(manifest["output"]["probe"])
            head = torch.nn.Linear(p.weight.shape[1], p.weight.shape[0])
            head.weight.data, head.bias.data = p.weight.float(), p.bias.float()
        channels = [torch.tensor(c) for c in manifest["channels"]] or None
        skipping = manifest.get("dynamic_skipping") or {}
        net, spec = build_graph(
            model,
            manifest["graph"],
            channels,
            head,
            dynamic_form=manifest.get("dynamic_form") or "conv",
            dynamic_min_size=skipping.get("min_size", 0),
        )
        if skipping.get("blocks") is not None and spec.skipping != skipping["blocks"]:
            raise GatekitError(
                f"{path.name} skips in blocks {skipping['blocks']}, the rebuilt module in {spec.skipping}"
            )
        if threads:
            torch.set_num_threads(threads)
        info = RuntimeInfo("torch", torch.__version__, "cpu", "eager", torch.get_num_threads(), "fp32")
        return TorchSession(net.eval(), info, manifest["input"]["shape"])
