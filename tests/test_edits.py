"""The loop the exercise invites, on a copy of the project: a learner edits a step's net or the update, runs `make
test` (green for as long as the edited code runs), then runs the step over seeds (the seeds train again, and say
why); undone, the edit's runs are set aside and those of the code before come back."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

# Each edit the issue names: another receptive field for the same parameters, other widths, another loss.
# (file, text before, text after, why the seeds' runs of the code before are trained again)
EDITS = {
    "dilation": ("model3.py", "conv_bn_relu(e, 10, dilation=2)", "conv_bn_relu(e, 10, dilation=1)",
                 "made by other code (net, model3.py:Net changed)"),
    "widths": ("model3.py", "widths=(8, 16, 8, 12, 16, 16)", "widths=(8, 16, 8, 12, 16, 14)",
               "made with other settings (the step's defaults have changed since)"),
    "label smoothing": ("common.py", "loss = F.cross_entropy(logits, y)",
                        "loss = F.cross_entropy(logits, y, label_smoothing=0.1)",
                        "made by other code (train_step changed)"),
}
SEEDS = ["model3.py", "--seeds", "2", "--subset", "500", "--epochs", "1", "--batch-size", "64", "--device", "cpu",
         "--out", "results/edit-check"]
SKIP = shutil.ignore_patterns(".git", ".venv", "data", "__pycache__", ".pytest_cache", "*-subset")


def _seeds(where, data_dir):
    done = subprocess.run([sys.executable, *SEEDS], cwd=where, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MNIST_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    return [line for line in done.stdout.splitlines() if line.startswith("=== results/edit-check/seeds/")]


@pytest.fixture(scope="module")
def project(tmp_path_factory, data_dir):
    """A copy of the project (no git: what a learner may download), its model3 run over two seeds on a subset."""
    copy = tmp_path_factory.mktemp("learner") / "project"
    shutil.copytree(ROOT, copy, ignore=SKIP)
    assert [line.endswith("not run yet — training ===") for line in _seeds(copy, data_dir)] == [True, True]
    return copy


@pytest.mark.slow
@pytest.mark.parametrize("edit", EDITS)
def test_an_edit_keeps_make_test_green_and_its_seeds_train_again_then_the_old_ones_come_back(edit, project, data_dir,
                                                                                              tmp_path):
    where = tmp_path / "project"
    shutil.copytree(project, where)
    file, before, after, why = EDITS[edit]
    source = (where / file).read_text()
    assert source.count(before) == 1
    (where / file).write_text(source.replace(before, after))
    done = subprocess.run(["make", "test", f"PYTHON={sys.executable}", f"DATA_DIR={data_dir}"], cwd=where,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
    lines = _seeds(where, data_dir)  # the runs of the code before are not this code's: trained again, and why
    assert len(lines) == 2 and all(line.endswith(f": {why} — training ===") for line in lines), lines
    assert all(line.endswith("made by the same code before — kept ===") for line in _seeds(where, data_dir))
    (where / file).write_text(source)  # undone: the first runs come back, the edit's go aside
    lines = _seeds(where, data_dir)
    assert all(line.endswith("brought back from runs-of-other-code/ ===") for line in lines), lines
    assert (where / "results" / "edit-check" / "seeds" / "runs-of-other-code").is_dir()
