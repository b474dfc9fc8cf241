"""Which family an exported artifact belongs to, read from its manifest: gatekit's gated graphs, or one of
the alternatives a user would deploy instead (a Torch-Pruning-pruned dense encoder with or without a
fine-tune, a dense encoder trained at its width, that encoder in int8).

- gatekit: every graph of a gated checkpoint (vicreg-dual, vicreg-gating; a record that names no method
  too), any precision, its dense path included (the same weights serve it);
- torch-pruning, torch-pruning + fine-tune: a `gatekit prune` checkpoint (`pruned` in the manifest);
- dense: the dense graph of a dense-only checkpoint (`vicreg`), fp32/fp16/bf16, at its width multiplier
  (thinner networks trained from scratch are points of this family);
- dense int8: the same, quantized to int8.
"""

from __future__ import annotations

GATEKIT = "gatekit"
TORCH_PRUNING = "torch-pruning"
TORCH_PRUNING_FT = "torch-pruning + fine-tune"
DENSE = "dense"
DENSE_INT8 = "dense int8"
FAMILIES = (GATEKIT, TORCH_PRUNING, TORCH_PRUNING_FT, DENSE, DENSE_INT8)
DENSE_METHODS = ("vicreg",)  # trains no gates; any other method (vicreg-dual, vicreg-gating) is gatekit's


def family_of(summary: dict) -> str:
    """The family of an artifact, from its manifest (or a bench record's manifest summary)."""
    pruned = summary.get("pruned")
    if isinstance(pruned, dict):
        return TORCH_PRUNING_FT if pruned.get("fine_tune") else TORCH_PRUNING
    if summary.get("method") not in DENSE_METHODS:
        return GATEKIT
    return DENSE_INT8 if summary.get("precision") == "int8" else DENSE


def label_of(summary: dict) -> str:
    """A short name of the artifact within its family."""
    precision = summary.get("precision") or "fp32"
    tail = "" if precision == "fp32" else f" {precision}"
    family = family_of(summary)
    if family == GATEKIT:
        graph = summary.get("graph")
        if graph == "dynamic" and summary.get("dynamic_form"):
            graph = f"dynamic ({summary['dynamic_form']})"
        mu = (summary.get("pruning") or {}).get("min_usage") or 0
        group = (summary.get("model_config") or {}).get("gate_group") or 1
        return (
            f"t_d {summary.get('budget')}{f' g{group}' if group > 1 else ''} {graph}"
            f"{f' min-usage {mu:g}' if mu else ''}{tail}"
        )
    if family in (TORCH_PRUNING, TORCH_PRUNING_FT):
        return f"ratio {summary['pruned'].get('ratio')}{tail}"
    return f"x{(summary.get('model_config') or {}).get('width')}{'' if family == DENSE_INT8 else tail}"
