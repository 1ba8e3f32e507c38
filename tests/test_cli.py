"""The command line on the serving install (no torch, no scipy): every ``--help`` answers,
and a command that needs the train extra says so in one line (exit 2), not a traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest

from poseserve import COMMANDS
from tests.helpers import DATA, ROOT

# Importing these fails as on an install without the train extra.
WITHOUT_TRAIN_EXTRA = ("import sys\n"
                       "for name in ('torch', 'scipy', 'pycocotools', 'matplotlib', 'onnx', 'tqdm'):\n"
                       "    sys.modules[name] = None\n"
                       "import poseserve\n"
                       "poseserve.main(sys.argv[1:])\n")


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_TRAIN_EXTRA, *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_help_works_without_the_train_extra(command):
    r = run(command, "--help")
    assert r.returncode == 0, r.stderr
    assert f"usage: poseserve {command}" in r.stdout and "Traceback" not in r.stderr


@pytest.mark.parametrize("command", ["train", "export", "eval"])
def test_a_command_needing_torch_exits_2_with_one_line(command):
    r = run(command, "--model", "cpm")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "train extra" in r.stderr and "torch" in r.stderr


@pytest.mark.skipif(not (DATA / "lsp").is_dir(), reason="needs ../shared/datasets: eval-pipeline looks for LSP "
                    "before it reaches the lazy import")
def test_a_lazily_imported_dependency_also_gets_one_line():
    """eval-pipeline imports scipy (LSP's .mat files) only when it runs."""
    r = run("eval-pipeline", "--models", "hourglass", "--limit", "1")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "train extra" in r.stderr
