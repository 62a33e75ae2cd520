"""Which code made a run (harness/provenance.py), and the rule that reuses a run only when today's code is the same
(harness.runs.reuse): what the fingerprint sees, what it leaves alone, and what a sweep says of a run it trains
again."""
import importlib.util
import json
import subprocess
import sys

import pytest
import torch.nn as nn

import common
import model3
import model4
from conftest import ROOT
from harness import cli, provenance, runs
from lab import code_meant_by

HELPERS = '''"""A module of a project."""
import torch.nn.functional as F

SCALE = 2  # a plain constant the code reads


def loss_of(logits, y):
    """The loss."""
    return F.cross_entropy(logits, y) * SCALE


def train_step(model, x, y):
    """One update."""
    loss = loss_of(model(x), y)  # the helper, found by its name
    return loss
'''


def _parts(tmp_path, monkeypatch, source, name):
    """code_parts of `train_step` in a module written from `source` into a project rooted at tmp_path."""
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    try:
        return {key.split(":", 1)[1]: text for key, text in provenance.code_parts((module.train_step,)).items()}
    finally:
        del sys.modules[name]


def test_the_training_path_is_followed_name_by_name_and_a_comment_or_docstring_changes_nothing(tmp_path, monkeypatch):
    parts = _parts(tmp_path, monkeypatch, HELPERS, "first")
    assert set(parts) == {"train_step", "loss_of", "SCALE"} and parts["SCALE"] == "2"
    assert "One update" not in parts["train_step"] and "the helper" not in parts["train_step"]
    reworded = HELPERS.replace('"""The loss."""', '"""The loss, written otherwise."""').replace(
        "# the helper, found by its name", "# reworded").replace("return loss\n", "return (loss)\n")
    assert _parts(tmp_path, monkeypatch, reworded, "second") == parts
    for edit in (("* SCALE", "* SCALE * 0.5"), ("SCALE = 2", "SCALE = 3"), ("model(x)", "model(x * 2)")):
        changed = _parts(tmp_path, monkeypatch, HELPERS.replace(*edit), f"third_{len(edit[1])}")
        assert changed != parts, edit


def _tiny(width=4, dilation=2):
    return nn.Sequential(common.conv_bn_relu(1, width, norm=common.LayerBatchNorm, activation=nn.PReLU),
                         common.conv_bn_relu(width, 10, dilation=dilation), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_the_fingerprint_sees_the_net_as_built_and_the_classes_among_its_layers():
    """Of a net of its own (a learner's edits of the steps must leave this test as it is)."""
    parts = provenance.fingerprint_parts(_tiny(), common.TRAINING_PATH)
    assert {"net", "common.py:LayerBatchNorm", "common.py:train_step", "common.py:train_epoch", "common.py:evaluate",
            "common.py:DeviceLoader", "common.py:fit", "common.py:make_optimizer_and_scheduler",
            "harness/cuda_graph.py:GraphedStep", "harness/mnist.py:load_split"} <= set(parts)
    for other in (_tiny(dilation=1), _tiny(width=5)):  # another receptive field; other widths
        changed = provenance.fingerprint_parts(other, common.TRAINING_PATH)
        assert provenance.what_differs(parts, changed) == "net"
        assert provenance.fingerprint(parts) != provenance.fingerprint(changed)
    assert provenance.fingerprint_parts(_tiny(), common.TRAINING_PATH) == parts  # new weights, the same code


@pytest.mark.slow
def test_a_step_run_as_a_script_and_the_same_step_imported_give_the_same_fingerprint(tmp_path, data_dir):
    """A run records its fingerprint as `python model3.py` (its module is __main__); a sweep's driver computes it
    with model3 imported: both the same, whichever folder the project is in."""
    done = subprocess.run([sys.executable, "model3.py", "--dry-run", "--data-dir", str(data_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "run"
    subprocess.run([sys.executable, "model3.py", "--subset", "300", "--epochs", "1", "--out", str(out),
                    "--data-dir", str(data_dir)], cwd=ROOT, check=True, capture_output=True, timeout=300)
    code = json.loads((out / "metrics.json").read_text())["code"]
    assert code == {**code_meant_by("model3", []), "commit": code["commit"], "uncommitted": code["uncommitted"]}


def _completed(folder, flags, code, step=model3):
    """A stand-in for a run that `python STEP.py FLAGS --seed 1 --out FOLDER` completed, made by `code`."""
    argv = runs.step_argv(f"{step.__name__}.py", flags, 1, folder)
    command = cli.command_line(argv[1], argv[2:])
    metrics = dict(command=command, config=cli.settings_meant_by(argv[2:], step.DEFAULTS), code=code, run=str(code))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return runs.Run(argv, folder, cli.settings_meant_by(argv[2:], step.DEFAULTS), code_meant_by(step.__name__, flags)), command


def test_a_run_is_reused_only_when_its_code_is_today_s_and_otherwise_says_why(tmp_path):
    today = code_meant_by("model3", [])
    run, command = _completed(tmp_path / "seed-1", [], today)
    assert runs.reuse(run.out, command, run.settings, run.code) == (json.loads((run.out / "metrics.json").read_text()),
                                                                   "")
    other = dict(today, parts=dict(today["parts"], net="0" * 16, **{"common.py:train_step": "1" * 16}))
    other["fingerprint"] = provenance.fingerprint(other["parts"])
    _completed(tmp_path / "seed-1", [], other)
    assert runs.reuse(run.out, command, run.settings, run.code) == (
        None, "made by other code (net, train_step changed)")
    _completed(tmp_path / "seed-1", [], None)
    assert runs.reuse(run.out, command, run.settings, run.code) == (
        None, "made by unknown code (before runs recorded theirs)")
    assert runs.reuse(tmp_path / "seed-2", command, run.settings, run.code) == (None, "not run yet")


def test_a_run_shown_the_same_is_reused_though_it_recorded_a_setting_retired_since(tmp_path):
    """Step 4's seeds recorded --bn-affine layer and PReLU, which its Net now builds in: lab/vouch.py showed their
    code computes what today's does, so a sweep reuses them; the same record without that evidence is not."""
    today = code_meant_by("model4", [])
    run, command = _completed(tmp_path / "seed-1", [], dict(today, shown_same={"checks": ["…"]}), step=model4)
    metrics = json.loads((run.out / "metrics.json").read_text())
    metrics["config"].update(bn_affine="layer", activation="prelu")
    (run.out / "metrics.json").write_text(json.dumps(metrics))
    assert runs.reuse(run.out, command, run.settings, run.code)[0] == metrics
    del metrics["code"]["shown_same"]
    (run.out / "metrics.json").write_text(json.dumps(metrics))
    assert runs.reuse(run.out, command, run.settings, run.code)[1].startswith("made with other settings")


def test_a_run_trained_again_is_set_aside_and_comes_back_when_its_code_does(tmp_path):
    today = code_meant_by("model3", [])
    other = dict(today, parts=dict(today["parts"], net="0" * 16))
    other["fingerprint"] = provenance.fingerprint(other["parts"])
    run, command = _completed(tmp_path / "seeds" / "seed-1", [], today)
    runs.set_aside(run.out)  # as a sweep of the edited code does before it trains
    kept = tmp_path / "seeds" / runs.OTHER_CODE / today["fingerprint"] / "seed-1"
    assert not run.out.exists() and json.loads((kept / "metrics.json").read_text())["run"] == str(today)
    _completed(run.out, [], other)  # what the edited code trained
    metrics, why = runs.reusable_run(run, command)  # the edit undone: today's code is the first run's again
    assert why == "brought back" and metrics["run"] == str(today) and not kept.exists()
    assert json.loads((kept.parent.parent / other["fingerprint"] / "seed-1" / "metrics.json").read_text())["run"] \
        == str(other)


def test_vouch_compares_recipes_beside_their_seed_length_and_retired_settings():
    """lab.vouch passes over a commit where a run's command meant another recipe; a check's own seed and length,
    and what a run did with a setting retired since (its code's history decides), are no difference."""
    from lab.vouch import recipe
    config = cli.settings_meant_by(["--seed", "3"], model4.DEFAULTS)
    run = dict(config=dict(config, bn_affine="layer", activation="prelu"))
    check = dict(config=dict(config, seed=1, epochs=7))
    assert recipe(run) == recipe(check)
    assert recipe(dict(config=dict(config, scale=config["scale"] + 0.05))) != recipe(check)


@pytest.mark.committed
def test_vouch_looks_for_a_run_s_code_from_before_it_started_to_the_commit_that_committed_it():
    """Seeds 11–20 of step 4 ran with the defaults bcdcfc2 committed, before it was committed: the commits that may
    have made them are the one before they started (ab63a46, where `python model4.py` was still round 5's recipe)
    and bcdcfc2; a later stamp of the file (lab.vouch's own) is not one of them."""
    from conftest import git_history
    from lab.vouch import commits_that_may_have_made
    if not git_history():
        pytest.skip("not a git checkout with its history")
    path = ROOT / "results" / "model4" / "seeds-11-20" / "seeds" / "seed-11" / "metrics.json"
    commits = commits_that_may_have_made(path, json.loads(path.read_text()))
    assert [sha[:7] for sha in commits] == ["ab63a46", "bcdcfc2"]


def test_vouch_since_a_commit_checks_a_run_against_that_commit_alone_when_its_code_gives_the_run_s_fingerprint(
        monkeypatch):
    """After a change to the training path (lab.vouch --since COMMIT): a run whose recorded fingerprint is the one
    COMMIT's code gives its command is checked against COMMIT only, and keeps the commit it records; any other run
    against every commit that may have made it."""
    from lab import vouch
    metrics = json.loads((ROOT / "results" / "model1" / "metrics.json").read_text())
    recorded = metrics["code"]["fingerprint"]

    class Checks:
        def __init__(self, fingerprint_then):
            self.fingerprint_then, self.checked, self.today = fingerprint_then, [], "d" * 40

        def fingerprint(self, commit, script, flags):
            return self.fingerprint_then

        def at(self, commit, script, flags, epochs):
            self.checked.append(commit)
            return None, vouch.recipe(metrics), f"`{script}` at {commit[:7]}: the same history"

    monkeypatch.setattr(vouch, "commits_that_may_have_made", lambda path, m: ["a" * 40, "b" * 40])
    checks = Checks(recorded)
    record = vouch.code_of(None, metrics, checks, since="c" * 40)
    assert checks.checked == ["c" * 40] and record["commit"] == metrics["code"]["commit"]
    assert "ccccccc's code gives the command the fingerprint the run records" in record["shown_same"]["checks"][0]
    checks = Checks("another")
    record = vouch.code_of(None, metrics, checks, since="c" * 40)
    assert checks.checked == ["a" * 40, "b" * 40] and record["commit"] == "a" * 40
