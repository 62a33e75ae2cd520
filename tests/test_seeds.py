"""Each step's seed rule (common.Targets.min_seed_share): a --seeds run is judged by it, says it in its last line and
in seeds.md, records it in seeds.json, and exits by it. The runs are stand-ins, completed runs that run_seeds reuses
(the same command, settings and code, harness.runs.reuse), so nothing trains."""
import json

import pytest

import common
import model3
import model4
from conftest import run_script
from harness import runs
from harness.cli import command_line, settings_meant_by
from harness.runs import seed_rule_verdict
from lab import code_meant_by

pytestmark = pytest.mark.slow  # make check: not part of the smoke run


def _completed_seeds(out, step, argv, count, met, diverged=()):
    """Seeds 1..count of `step` as `step.py ARGV` leaves them completed in out/seeds/seed-N, the first `met` of them
    meeting the target (the others one epoch under the line, or stopped on a NaN loss: the seeds in `diverged`)."""
    for seed in range(1, count + 1):
        folder = out / "seeds" / f"seed-{seed}"
        script, *flags = runs.step_argv(f"{step.__name__}.py", runs.seed_flags(argv), seed, folder)[1:]
        accs = [99.5, 99.55, 99.5] if seed <= met else [] if seed in diverged else [99.5, 99.3, 99.5]
        metrics = dict(command=command_line(script, flags), config=settings_meant_by(flags, step.DEFAULTS),
                       code=code_meant_by(step.__name__, []), final_test_acc=accs[-1] if accs else None,
                       last_test_accs=accs, passed=seed <= met, train_seconds=1.0, device="cpu (stand-in)",
                       **({"diverged": "in epoch 4, the training loss became nan at batch 60; the learning rate 0.2 "
                                       "is probably too high (try a smaller --lr)"} if seed in diverged else {}))
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(metrics))


@pytest.mark.parametrize("step, count, met, code, verdict", [
    (model4, 10, 9, 0, "the rule: at least 9 in 10 — met"),
    (model4, 10, 8, 1, "the rule: at least 9 in 10 — not met"),
    (model3, 3, 2, 1, "the rule: every seed — not met"),
], ids=["model4-9-of-10", "model4-8-of-10", "model3-2-of-3"])
def test_a_seeds_run_is_judged_by_its_steps_rule(tmp_path, data_dir, step, count, met, code, verdict):
    argv = ["--seeds", str(count), "--out", str(tmp_path)]
    _completed_seeds(tmp_path, step, argv, count, met)
    result = run_script(f"{step.__name__}.py", *argv, data_dir=data_dir, timeout=120)  # a minute: nothing trains
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert output.count("made by the same code before — kept") == count  # the stand-ins were reused: nothing trained
    assert f"{step.__name__} seeds: {met}/{count} met the target" in output and verdict in output
    summary = json.loads((tmp_path / "seeds.json").read_text())
    assert summary["met_target"] == met and summary["count"] == count  # the fields that were there stay
    assert summary["min_seed_share"] == step.TARGETS.min_seed_share
    assert summary["seeds_needed"] == step.TARGETS.seeds_needed(count) and summary["passed"] is (code == 0)
    assert (tmp_path / "seeds.md").read_text().endswith(f"{met}/{count} met the target; {verdict}.\n")


def test_a_seed_whose_loss_became_nan_counts_as_one_that_did_not_hold(tmp_path, data_dir):
    """Our rule asks each seed to hold the line: one that stopped on a NaN loss did not. The table counts it so,
    says where it stopped, and averages the accuracies of the seeds that trained to the end."""
    argv = ["--seeds", "10", "--out", str(tmp_path)]
    _completed_seeds(tmp_path, model4, argv, 10, met=7, diverged=(9, 10))
    result = run_script("model4.py", *argv, data_dir=data_dir, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert output.count("made by the same code before — kept") == 10  # a diverged seed's record is reused too
    assert ("model4 seeds: 7/10 met the target" in output and "over the 8 seeds that trained to the end (seeds 9, "
            "10 stopped on a NaN loss)" in output)
    summary = json.loads((tmp_path / "seeds.json").read_text())
    assert summary["diverged"] == [9, 10] and summary["met_target"] == 7 and summary["passed"] is False
    assert summary["mean_final_test_acc"] == 99.5 and summary["min_last3_test_acc"] == 99.3
    table = (tmp_path / "seeds.md").read_text()
    assert "| 9 | stopped in epoch 4, the training loss became nan at batch 60 | — | no | 1 |" in table


def test_the_share_is_rounded_up_to_whole_seeds_and_said_in_words():
    rule = common.Targets(min_test_acc=99.4, max_params=5000, min_seed_share=0.9)
    assert [rule.seeds_needed(n) for n in (10, 20, 3, 1)] == [9, 18, 3, 1]
    assert common.Targets(99.4, 5000, min_seed_share=0.3).seeds_needed(10) == 3  # 0.3 × 10 is a hair above 3
    assert common.Targets(99.4, 5000).seeds_needed(7) == 7  # by default every seed
    with pytest.raises(ValueError, match="min_seed_share"):
        common.Targets(99.4, 5000, min_seed_share=0)
    summary = dict(count=20, met_target=18, min_seed_share=0.9, seeds_needed=18, passed=True)
    assert seed_rule_verdict(summary) == "the rule: at least 9 in 10, 18 of these 20 — met"
    # a seeds.json written before the rule was recorded was judged as the code then did: every seed
    assert seed_rule_verdict(dict(count=10, met_target=9)) == "the rule: every seed — not met"
