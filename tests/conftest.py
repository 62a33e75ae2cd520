"""Shared fixtures. The tests never download: they read MNIST from $MNIST_DATA_DIR (set by `make test`, which runs
`make data` first), else from ../shared/mnist beside the checkout, else from ./data.

Two suites: `make test`, the learner's smoke run (every step trained end to end on a small subset, and the unit tests
that take a second or so), green on any device and after any edit of a step that still runs; and `make check`, the
tests marked `slow` (Dask clusters, the browser, processes killed at every point of a write, the lab's drivers, many
processes of training) and those marked `committed` (the committed results/ and the steps' stories are today's
code's: what a maintainer checks before publishing)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import common  # noqa: E402
from harness import mnist as mnist_files  # noqa: E402
from common import STEPS  # noqa: E402


def _data_dir():
    for candidate in (os.environ.get("MNIST_DATA_DIR"), ROOT.parent / "shared" / "mnist", ROOT / "data"):
        if candidate and all((Path(candidate) / mnist_files.RAW_SUBDIR / f).is_file()
                                for f in mnist_files.MNIST_FILES):
            return Path(candidate).resolve()  # absolute: tests link to these files from other folders
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: not part of `make test`'s smoke run; `make check` runs these")
    config.addinivalue_line("markers", "committed: checks that the committed results/ and the steps' stories match "
                                       "today's code; `make check` runs these, `make test` (a learner's) does not")


@pytest.fixture(scope="session")
def data_dir():
    found = _data_dir()
    if found is None:
        pytest.fail("MNIST is not available to the tests: run `make data` (or `make test`, which does) first")
    return found


@pytest.fixture(scope="session")
def mnist(data_dir):
    """Both splits loaded once for the in-process tests."""
    return common.prepare_data(data_dir, log=lambda *_: None)


def git_history():
    """Whether this checkout holds the project's history (a .git, not a shallow clone): tests that check a commit
    named in RESULTS.md skip without it."""
    if not (ROOT / ".git").exists():
        return False
    done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--is-shallow-repository"], capture_output=True,
                          text=True)
    return done.returncode == 0 and done.stdout.strip() == "false"


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory, data_dir):
    """Each step once, as a user runs it, 2 epochs on 1,000 images of each split, in batches of 32, the four at once
    on a thread each, on the device `--device auto` picks (a GPU where there is one); steps 3 and 4 train only their
    last epoch clean, so their first is augmented (their default clean epochs would leave none). Their folders make a
    results/ of today's code, which the page's tests serve: {step: (CompletedProcess, folder)}."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MNIST_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    started, results = {}, tmp_path_factory.mktemp("results")
    for step in STEPS:
        out = results / step
        clean = ["--clean-epochs", "1"] if step in ("model3", "model4") else []
        started[step] = out, subprocess.Popen(
            [*program(f"{step}.py"), "--subset", "1000", "--epochs", "2", "--batch-size", "32", *clean, "--out",
             str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = {}
    for step, (out, process) in started.items():
        stdout, stderr = process.communicate(timeout=600)
        runs[step] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), out
    return runs


def program(script):
    """The command line that starts `script` as a user would: a step's file (model3.py) or a lab module (lab.search,
    run with -m from the project's folder)."""
    return [sys.executable, str(ROOT / script)] if script.endswith(".py") else [sys.executable, "-m", script]


def run_script(script, *args, data_dir=None, timeout=600, **kwargs):
    """Run a step or a lab module as a user would, in a subprocess; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if data_dir is not None:
        env["MNIST_DATA_DIR"] = str(data_dir)
    return subprocess.run([*program(script), *map(str, args)], cwd=kwargs.pop("cwd", ROOT),
                          env=env, capture_output=True, text=True, timeout=timeout, **kwargs)


def assert_clean_failure(result, code, *fragments):
    """The run ended with `code`, said so in words that contain `fragments`, and showed no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output, output
    for fragment in fragments:
        assert fragment in output, output
