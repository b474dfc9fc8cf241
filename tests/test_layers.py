"""The package's import graph, built from the source (imports inside functions included): acyclic, in the
order data -> models -> train -> evaluate -> export -> runtimes -> bench -> pick, with only the CLI, the
demo and their shared chains reaching across stages; and the deploy side never reaches torch."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PKG = REPO / "gatekit"
FOUNDATION = {
    "errors",
    "atomic",
    "paths",
    "clitypes",
    "jetson",
    "sysinfo",
    "plotting",
    "__init__",
}  # any part may use these
TOP = {"cli", "demo", "chains", "__main__"}  # the only places that chain stages; they may use anything
# What each stage may import besides the foundation. Every edge points from a stage to one whose output
# it consumes (data -> models -> train -> evaluate -> export -> runtimes -> bench -> pick), plus one
# documented exception: export runs each artifact in its runtime before writing it (export -> runtimes).
ALLOWED = {
    "data": set(),
    "models": set(),
    "checkpoint": {"models"},
    "artifacts": {"data"},  # the contract: formats, manifests, and the artifact's real inputs
    "native_ops": set(),
    "train": {"data", "models", "checkpoint"},
    "evaluate": {"data", "models", "checkpoint"},
    "export": {"data", "models", "checkpoint", "evaluate", "artifacts", "native_ops", "runtimes"},
    "runtimes": {"artifacts", "native_ops"},
    "bench": {"data", "artifacts", "native_ops", "runtimes"},  # says when a native-op graph ran its fallback
    "pick": {"data", "models", "artifacts", "native_ops", "runtimes", "bench"},
}
ORDER = ["data", "models", "train", "evaluate", "export", "runtimes", "bench", "pick"]
DEPLOY = ("artifacts", "native_ops", "runtimes", "bench", "pick")
TRAINING_PACKAGES = {"torch", "safetensors", "kornia", "torchvision"}
# gatekit.models is shared: its structure and FLOPs are torch-free, its modules are not
TORCH_FREE_MODELS = {
    "gatekit.models",
    "gatekit.models.arch",
    "gatekit.models.config",
    "gatekit.models.flops",
    "gatekit.models.channels",
}


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at module level or inside functions (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    me = module_name(path)
    base = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                anchor = base.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                mod = ".".join(anchor + ([mod] if mod else []))
            found.add(mod)
            # `from gatekit.pick import synth`: the submodule is imported too
            found |= {
                f"{mod}.{a.name}"
                for a in node.names
                if (PKG.parent / (mod + "." + a.name).replace(".", "/")).with_suffix(".py").exists()
            }
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PKG.rglob("*.py"))}


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_of_gatekit_has_a_place():
    assert {stage(m) for m in graph()} <= FOUNDATION | TOP | set(ALLOWED), (
        "a new package or module needs its place here"
    )


def test_the_allowed_edges_follow_the_pipeline():
    """Among the pipeline's stages, every allowed edge points to an earlier stage, except export -> runtimes."""
    for s, deps in ALLOWED.items():
        for d in deps & set(ORDER):
            if s in ORDER:
                assert ORDER.index(d) < ORDER.index(s) or (s, d) == ("export", "runtimes"), (s, d)


def test_imports_follow_the_stages():
    wrong = []
    for mod, deps in graph().items():
        s = stage(mod)
        if s in TOP:
            continue
        for dep in deps:
            if not dep.startswith("gatekit.") and dep != "gatekit":
                continue
            d = stage(dep) if dep != "gatekit" else "__init__"
            if d == s or d in FOUNDATION and s in FOUNDATION | set(ALLOWED):
                continue
            if s in FOUNDATION or d in TOP or d not in ALLOWED.get(s, ()):
                wrong.append(f"{mod} imports {dep} ({s} -> {d})")
    assert not wrong, "\n".join(wrong)


def test_package_graph_is_acyclic():
    edges: dict[str, set[str]] = {}
    for mod, deps in graph().items():
        edges.setdefault(stage(mod), set()).update(
            stage(d) for d in deps if d.startswith("gatekit.") and stage(d) != stage(mod)
        )
    state: dict[str, int] = {}

    def visit(node, path):
        if state.get(node) == 1:
            pytest.fail("import cycle: " + " -> ".join(path + [node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(edges):
        visit(node, [])


def _reach(start: str, g: dict[str, set[str]]) -> dict[str, str]:
    """Every module reachable from `start` through gatekit's imports, with one module that imports it."""
    seen, todo = {start: ""}, [start]
    while todo:
        mod = todo.pop()
        for dep in g.get(mod, ()):
            top = dep.split(".")[0]
            if top in TRAINING_PACKAGES and dep not in seen:
                seen[dep] = mod
            elif dep.startswith("gatekit") and dep in g and dep not in seen:
                seen[dep] = mod
                todo.append(dep)
    return seen


@pytest.mark.parametrize("root", ["gatekit.artifacts", "gatekit.runtimes", "gatekit.bench", "gatekit.pick"])
def test_deploy_side_never_reaches_torch(root):
    """Transitively, imports inside functions included: a device carries numpy and its runtime only."""
    g = graph()
    mods = [m for m in g if m == root or m.startswith(root + ".")]
    for mod in mods:
        reached = _reach(mod, g)
        bad = [
            f"{m} (imported by {by})"
            for m, by in reached.items()
            if m.split(".")[0] in TRAINING_PACKAGES
            or (m.startswith("gatekit.") and stage(m) in ("checkpoint", "train", "evaluate", "export"))
            or (stage(m) == "models" and m not in TORCH_FREE_MODELS)
        ]
        assert not bad, f"{mod} reaches the training side: " + ", ".join(sorted(bad))


def test_the_graph_builder_sees_function_level_imports(tmp_path):
    """The checks above would be blind if imports inside functions were missed."""
    src = PKG / "bench" / "fresh.py"
    assert "gatekit.bench.run" in imports_of(src)  # imported inside _main only


# The deploy side's test modules: importing them (and conftest) must not import torch, and the tests of
# TORCH_FREE_RUNS must run without it. Tests that export an artifact first import torch inside the test.
DEPLOY_TESTS = (
    "test_artifact_integrity",
    "test_bench",
    "test_compare",
    "test_jetson",
    "test_native_export",
    "test_native_ops",
    "test_pick",
    "test_precision",
    "test_report_targets",
    "test_runtimes",
    "test_tensorrt",
)
TORCH_FREE_RUNS = ("test_pick", "test_report_targets", "test_runtimes")
_TORCH_WATCH = r"""
import sys
import pytest

class TorchWatch:
    first = None  # when torch first appeared: while collecting, or after which test
    ran = set()  # the modules whose tests ran

    def pytest_collection_modifyitems(self, items):
        if "torch" in sys.modules:
            self.first = "collecting"
        run = sys.argv[1].split(",")
        items[:] = [item for item in items if item.path.stem in run]

    def pytest_runtest_logfinish(self, nodeid):
        self.ran.add(nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py"))
        if self.first is None and "torch" in sys.modules:
            self.first = nodeid

watch = TorchWatch()
code = pytest.main(sys.argv[2:], plugins=[watch])
print(f"torch first imported: {watch.first}")
print(f"ran: {','.join(sorted(watch.ran))}")
sys.exit(code)
"""


def test_deploy_side_tests_never_import_torch(tmp_path):
    """In a fresh Python: conftest and the deploy side's test modules collected, then the tests of
    TORCH_FREE_RUNS run, with torch never imported (a test setup that imports torch for every test breaks this)."""
    files = [str(REPO / "tests" / f"{name}.py") for name in DEPLOY_TESTS]
    argv = [",".join(TORCH_FREE_RUNS), "-q", "-p", "no:cacheprovider", "--basetemp", str(tmp_path / "t"), *files]
    proc = subprocess.run(
        [sys.executable, "-c", _TORCH_WATCH, *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "torch first imported: None" in proc.stdout, proc.stdout[-3000:]
    assert f"ran: {','.join(sorted(TORCH_FREE_RUNS))}" in proc.stdout, proc.stdout[-3000:]
