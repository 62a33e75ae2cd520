"""The validation split (--val): carved from the end of the training split, never augmented, recorded beside test."""
import json

import pytest

import common
from harness import cli, runs
import model3
import model4
from conftest import assert_clean_failure, run_script


def _config(**changes):
    base = dict(epochs=1, batch_size=64, lr=0.05, momentum=0.9, nesterov=True, scheduler="onecycle", step_size=5,
                gamma=0.1, rotate=7.0, shift=2.0, seed=1)
    return cli.Config(**{**base, **changes})


@pytest.mark.parametrize("subset, val, sizes", [(None, 5000, (55000, 5000)), (None, 0, (60000, 0)),
                                                 (600, 200, (400, 200))])
def test_the_split_holds_out_the_last_training_images(mnist, subset, val, sizes):
    (train_x, train_y), (val_x, val_y) = common.split_training(mnist["train"], _config(subset=subset, val=val))
    assert (len(train_y), len(val_y)) == sizes and len(train_x) == sizes[0] and len(val_x) == sizes[1]
    images, labels = mnist["train"]
    end = subset or len(labels)
    assert (val_x == images[end - val:end]).all() and (val_y == labels[end - val:end]).all()
    assert (train_x == images[:sizes[0]]).all()


def test_validation_is_scored_on_the_plain_images_every_epoch(mnist):
    """Each epoch's val loss is the model's loss on the held-out images as they are: an augmented (randomly rotated
    and shifted) validation split would give another loss."""
    config = _config(epochs=2, subset=600, val=200)
    trained = common.fit(model3.Net, config, mnist, log=lambda *_: None)
    model, history = trained.model, trained.history
    assert [set(h) >= {"val_loss", "val_acc"} for h in history] == [True, True]
    _, (val_x, val_y) = common.split_training(mnist["train"], config)
    plain = common.DeviceLoader(val_x, val_y, 500, "cpu", mnist["mean"], mnist["std"])
    loss, accuracy, _ = common.evaluate(model, plain)
    assert history[-1]["val_loss"] == pytest.approx(loss, abs=1e-5)
    assert history[-1]["val_acc"] == pytest.approx(accuracy, abs=0.005)
    rotated = common.DeviceLoader(val_x, val_y, 500, "cpu", mnist["mean"], mnist["std"], rotate_degrees=7.0,
                                  shift_pixels=2.0, seed=1)
    assert common.evaluate(model, rotated)[0] != pytest.approx(loss, abs=1e-5)


def test_a_run_without_val_has_no_val_fields(mnist):
    history = common.fit(model3.Net, _config(subset=300), mnist, log=lambda *_: None).history
    assert "val_acc" not in history[0] and "test_acc" in history[0]


@pytest.mark.slow
def test_metrics_json_carries_the_validation_results(tmp_path, data_dir):
    result = run_script("model3.py", "--subset", "600", "--val", "200", "--epochs", "2", "--out", tmp_path,
                        data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["val_images"] == 200 and metrics["config"]["val"] == 200
    assert metrics["final_val_acc"] == metrics["history"][-1]["val_acc"]
    assert metrics["last_val_accs"] == [h["val_acc"] for h in metrics["history"]]  # 2 epochs < last 3
    assert " val loss " in result.stdout and " test loss " in result.stdout


@pytest.mark.parametrize("args, words", [
    (["--val", "60000"], "60000 validation images would leave nothing to train on (60,000 training images"),
    (["--val", "600", "--subset", "600"], "600 validation images would leave nothing to train on (600 training"),
    (["--val", "-5"], "argument --val: expected an integer ≥ 0, got '-5'"),
    (["--val", "many"], "argument --val: expected an integer ≥ 0"),
    (["--epochs", "2", "--clean-epochs", "3"], "argument --clean-epochs: 3 is more than the 2 epochs of the run"),
    (["--clean-epochs", "-1"], "argument --clean-epochs: expected an integer ≥ 0, got '-1'"),
])
def test_a_val_or_clean_epochs_that_leave_nothing_to_do_are_refused(args, words, capsys):
    with pytest.raises(SystemExit) as exit_:
        common.run_step("model3", model3.Net, model3.DEFAULTS, model3.TARGETS, "", argv=args)
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and words in captured.err


@pytest.mark.slow
def test_widths_are_a_flag(tmp_path, data_dir):
    result = run_script("model3.py", "--dry-run", "--widths", "4,8,4,6,8,8", data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{common.count_params(model3.Net(widths=(4, 8, 4, 6, 8, 8))):,} parameters" in result.stdout
    assert_clean_failure(run_script("model3.py", "--dry-run", "--widths", "4,8,4"), 2,
                         "argument --widths: expected 6 channel counts")


def test_the_last_clean_epochs_train_on_the_digits_as_they_are(mnist, monkeypatch):
    """--clean-epochs 1 of 3: the first two epochs augment their batches, the last one does not."""
    events, augment = [], common.DeviceLoader.augment
    monkeypatch.setattr(common.DeviceLoader, "augment", lambda self, x: events.append("augment") or augment(self, x))
    common.fit(model3.Net, _config(epochs=3, subset=300, clean_epochs=1), mnist, log=lambda *_: events.append("|"))
    per_epoch = [len(part) for part in "".join("a" if e == "augment" else "|" for e in events).split("|")[:3]]
    assert per_epoch[0] > 0 and per_epoch[1] > 0 and per_epoch[2] == 0


def test_the_clean_epochs_turn_a_scale_off_too(mnist, monkeypatch):
    events, augment = [], common.DeviceLoader.augment
    monkeypatch.setattr(common.DeviceLoader, "augment", lambda self, x: events.append("augment") or augment(self, x))
    common.fit(model3.Net, _config(epochs=2, subset=300, clean_epochs=1, rotate=0.0, shift=0.0, scale=0.1), mnist,
               log=lambda *_: events.append("|"))
    per_epoch = [len(part) for part in "".join("a" if e == "augment" else "|" for e in events).split("|")[:2]]
    assert per_epoch[0] > 0 and per_epoch[1] == 0


def test_a_steps_clean_epochs_fit_a_shorter_run():
    """model3's recipe ends on 3 clean epochs; `--epochs 2` (or --dry-run) makes both clean rather than failing."""
    parse = cli.build_parser("model3", model3.DEFAULTS, "").parse_args
    assert cli.config_from_args(parse(["--device", "cpu"])).clean_epochs == model3.DEFAULTS["clean_epochs"] == 3
    assert cli.config_from_args(parse(["--device", "cpu", "--epochs", "2"])).clean_epochs == 2
    assert cli.config_from_args(parse(["--device", "cpu", "--clean-epochs", "0"])).clean_epochs == 0


def test_epoch_line_keeps_its_columns():
    rows = [dict(epoch=e, train_loss=l, train_acc=a, val_loss=l, val_acc=a, test_loss=l, test_acc=a, lr=lr, seconds=s)
            for e, l, a, lr, s in [(1, 0.4541, 87.09, 0.004, 8.7), (9, 0.0213, 99.5, 0.01524, 12.25),
                                   (15, 0.0105, 100.0, 0.002212, 110.0)]]
    lines = [common.epoch_line(row, 15) for row in rows]
    assert len({len(line) for line in lines}) == 1, lines
    assert "lr 4.00e-03" in lines[0] and "lr 1.52e-02" in lines[1] and "lr 2.21e-03" in lines[2]
    assert lines[0].startswith("epoch  1/15  train loss 0.4541 acc  87.09%  val loss")


def test_the_search_chooses_on_validation_with_ties_going_to_the_worst_seed():
    from lab import search
    rows = [dict(recipe="a", completed=3, last3_val_mean=99.470, last3_val_min=99.43),
            dict(recipe="b", completed=3, last3_val_mean=99.473, last3_val_min=99.37),
            dict(recipe="c", completed=3, last3_val_mean=99.440, last3_val_min=99.45),
            dict(recipe="d", completed=2, last3_val_mean=99.600, last3_val_min=99.55)]
    assert search.choose(rows, 3) == "a"  # b's mean is within the tie, its worst epoch lower; c is not tied; d is
    rows[0]["last3_val_mean"] = 99.45     # incomplete
    assert search.choose(rows, 3) == "b"


def test_the_club_search_chooses_the_fewest_parameters_that_met_on_every_seed():
    from lab import search
    rows = [dict(recipe="big", completed=3, met=3, params=1500, last3_val_mean=99.2, last3_val_min=99.1),
            dict(recipe="small", completed=3, met=3, params=1400, last3_val_mean=99.1, last3_val_min=99.02),
            dict(recipe="smaller", completed=3, met=2, params=1200, last3_val_mean=99.0, last3_val_min=98.9),
            dict(recipe="tiny", completed=2, met=2, params=700, last3_val_mean=99.3, last3_val_min=99.2)]
    assert search.choose(rows, 3, "smallest") == "small"  # smaller missed a seed; tiny did not complete
    assert search.choose(rows, 3) == "big"
    assert search.choose(rows[2:], 3, "smallest") is None  # none held: no choice, not the least bad


@pytest.mark.slow
def test_search_screens_recipes_on_validation_and_reuses_completed_runs(tmp_path, data_dir):
    recipes = tmp_path / "recipes.txt"
    recipes.write_text("# two tiny recipes\nplain: --subset 400 --epochs 1\nlr: --subset 400 --epochs 1 --lr 0.05\n")
    args = ("lab.search", "model3", recipes, "--seeds", "1", "--val", "100", "--jobs", "2", "--out", tmp_path / "s")
    result = run_script(*args, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "s" / "search.json").read_text())
    assert [r["recipe"] for r in summary["recipes"]] == ["plain", "lr"] and summary["chosen"] in ("plain", "lr")
    metrics = json.loads((tmp_path / "s" / "runs" / "lr" / "seed-1" / "metrics.json").read_text())
    assert metrics["val_images"] == 100 and "--val 100" in metrics["command"]
    assert "test" not in (tmp_path / "s" / "search.md").read_text().split("| recipe |")[1]  # no test column
    before = (tmp_path / "s" / "runs" / "lr" / "seed-1" / "metrics.json").stat().st_mtime_ns
    assert run_script(*args, data_dir=data_dir).returncode == 0
    assert (tmp_path / "s" / "runs" / "lr" / "seed-1" / "metrics.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_a_malformed_recipes_file_is_one_line_and_exit_2(tmp_path):
    recipes = tmp_path / "recipes.txt"
    recipes.write_text("good: --lr 0.1\nno colon here\n")
    result = run_script("lab.search", "model3", recipes)
    assert_clean_failure(result, 2, f"{recipes}:2: expected 'name: flags'")


@pytest.mark.slow
def test_a_recipe_of_retired_flags_is_refused_before_any_run_and_the_table_is_kept(tmp_path):
    recipes, out = tmp_path / "recipes.txt", tmp_path / "search"
    recipes.write_text("good: --lr 0.1\nsmoothed: --label-smoothing 0.1\n")
    out.mkdir()
    (out / "search.json").write_text("the table made then")
    result = run_script("lab.search", "model3", recipes, "--out", out)
    assert_clean_failure(result, 2, "model3.py today refuses the flags of smoothed")
    assert (out / "search.json").read_text() == "the table made then" and not (out / "runs").exists()


def test_a_completed_run_is_reused_only_while_its_command_means_the_same_recipe(tmp_path):
    """`python model4.py --seed 1` trains another net once model4's DEFAULTS change: a run made before is stale.
    A setting added since a run was made counts at its default, which is what that run did."""
    flags = ["--seed", "1", "--out", str(tmp_path)]
    command, config = cli.command_line("model4.py", flags), cli.settings_meant_by(flags, model4.DEFAULTS)
    assert config["net_kwargs"]["widths"] == list(model4.DEFAULTS["widths"]) and config["seed"] == 1
    metrics = dict(command=command, config=dict(config))
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert runs.completed_run(tmp_path, command, config) == metrics
    assert runs.completed_run(tmp_path, command.replace("--seed 1", "--seed 2"), config) is None
    stale = dict(config, net_kwargs=dict(config["net_kwargs"], widths=[6, 12, 8, 12, 12, 14]))
    (tmp_path / "metrics.json").write_text(json.dumps(dict(command=command, config=stale)))
    assert runs.completed_run(tmp_path, command, config) is None
    older = {k: v for k, v in config.items() if k != "clean_epochs"}  # made before --clean-epochs: it trained none
    (tmp_path / "metrics.json").write_text(json.dumps(dict(command=command, config=older)))
    assert runs.completed_run(tmp_path, command, dict(config, clean_epochs=0)) is not None
    assert model4.DEFAULTS["clean_epochs"] > 0 and runs.completed_run(tmp_path, command, config) is None
