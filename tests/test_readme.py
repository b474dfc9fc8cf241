"""Every `gatekit ...` command in the code blocks of the README and of the pages under docs/ parses against the
real CLI (options, choices, arguments); the ones that read only recorded files run as written."""

import re
import shlex
from pathlib import Path

import click
import pytest

from gatekit.cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"
DOCS = sorted((README.parent / "docs").glob("*.md"))


def page_commands(page: Path) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("gatekit ") or line.startswith("torchrun "):
                commands.append(line)
    return commands


README_COMMANDS = page_commands(README)
COMMANDS = README_COMMANDS + [c for page in DOCS for c in page_commands(page) if c not in README_COMMANDS]


def test_the_readme_has_commands():
    assert len(README_COMMANDS) >= 8
    assert any(c.startswith("gatekit train") for c in README_COMMANDS)
    assert any(c.startswith("gatekit export") for c in README_COMMANDS)


def test_the_docs_pages_have_commands():
    """The pages the README links to for training, export, benchmarking and picking show their commands."""
    names = {p.name for p in DOCS}
    for page in ("training.md", "export.md", "benchmark.md", "profile-and-pick.md", "baselines.md"):
        assert page in names, page
        assert page_commands(README.parent / "docs" / page), page


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_resolve(page):
    """Every relative link (and image) of the README and the docs pages names a file or folder that exists."""
    targets = re.findall(r"\]\(([^)\s]+)\)", page.read_text())
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    missing = [t for t in local if not (page.parent / t).exists()]
    assert not missing, missing


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command):
    argv = shlex.split(command)
    if argv[0] == "torchrun":
        argv = argv[argv.index("gatekit") :]  # torchrun ... -m gatekit ARGS
    assert argv[0] == "gatekit"
    sub = cli.commands.get(argv[1])
    assert sub is not None, f"no command {argv[1]!r}"
    try:
        sub.make_context(argv[1], argv[2:], resilient_parsing=False)
    except click.exceptions.UsageError as e:
        pytest.fail(f"{command}: {e}")


RUNNABLE = [c for c in COMMANDS if c.startswith("gatekit pick") and "--results benchmarks/" in c]


def test_some_readme_commands_are_runnable_here():
    assert any(c in RUNNABLE for c in README_COMMANDS), "the README should show a pick on recorded results"


@pytest.mark.parametrize("command", RUNNABLE)
def test_readme_command_runs_as_written(command, tmp_path):
    """Commands that read only recorded files run for real, in a fresh directory beside the recorded results."""
    import os
    import subprocess
    import sys

    repo = README.parent
    (tmp_path / "benchmarks").symlink_to(repo / "benchmarks")
    argv = shlex.split(command)
    proc = subprocess.run(
        [sys.executable, "-m", "gatekit", *argv[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(repo)),
    )
    assert proc.returncode == 0, proc.stderr
    assert "chosen:" in proc.stdout
    for i, a in enumerate(argv):
        if a == "--plot":
            assert (tmp_path / argv[i + 1]).stat().st_size > 1000


def test_committed_checkpoints_match_the_sha256_their_readme_gives():
    """benchmarks/train_cifar10/README.md names each committed thinner encoder with its sha256: the files
    must be those bytes (later work reuses them instead of retraining)."""
    import hashlib

    bench = README.parent / "benchmarks" / "train_cifar10"
    claims = re.findall(
        r"`(checkpoints/[\w.\-]+\.safetensors)` \(sha256 `([0-9a-f]{64})`\)", (bench / "README.md").read_text()
    )
    assert len(claims) >= 2, claims
    for rel, digest in claims:
        assert hashlib.sha256((bench / rel).read_bytes()).hexdigest() == digest, rel


# Pages a newcomer reads first stay short: the README a tour, each suite's README today's figures and the command
# that re-runs them, native/README.md the ops' design and contract; history lives in git.
PAGE_LIMITS = {
    "README.md": 250,
    "native/README.md": 200,
    **{str(p.relative_to(README.parent)): 200 for p in sorted((README.parent / "benchmarks").glob("*/README.md"))},
}


@pytest.mark.parametrize("page", sorted(PAGE_LIMITS))
def test_pages_stay_within_their_length(page):
    lines = (README.parent / page).read_text().count("\n")
    assert lines <= PAGE_LIMITS[page], f"{page} has {lines} lines, more than {PAGE_LIMITS[page]}"
