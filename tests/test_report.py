"""report.py on small fabricated runs: tables, the README block, the lab page's and the docstring Results."""
import importlib
import json
import math
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from conftest import git_history
from harness.cli import settings_meant_by
from lab import report


def _metrics(model, accs, passed=True, command=None, params=7900):
    history = [dict(epoch=i + 1, train_loss=0.1, train_acc=99.0 + i / 100, test_loss=0.02, test_acc=a, lr=0.01,
                    seconds=10.0) for i, a in enumerate(accs)]
    return dict(model=model, params=params, epochs=len(accs), seed=1, device="cpu (test, 2 threads)",
                command=command or f"python {model}.py", date="2026-11-26 01:00:00 UTC", torch="x", subset=None,
                receptive_field=22, history=history, final_test_acc=accs[-1], last_test_accs=accs[-3:],
                best_train_acc=max(h["train_acc"] for h in history), seconds_per_epoch=10.0, train_seconds=10.0 * len(accs),
                targets=dict(min_test_acc=99.4, last_epochs=3), passed=passed, verdict=f"{model}: PASS ...")


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    _write(root / "model3" / "metrics.json", _metrics("model3", [99.41, 99.45, 99.47, 99.46]))
    _write(root / "model2" / "metrics.json", _metrics("model2", [99.5, 99.55, 99.52], params=400602))
    _write(root / "model1-subset" / "metrics.json", {**_metrics("model1", [50.0, 60.0, 70.0]), "subset": 100})
    _ablation(root, "full", "", [[99.45, 99.46, 99.47], [99.50, 99.52, 99.51]])
    _ablation(root, "no-augment", "--no-augment ", [[99.30, 99.31, 99.32], [99.42, 99.41, 99.44]])
    _write(root / "model3" / "seeds.json", dict(command="python model3.py --seeds 2", device="cpu",
                                                seeds=[dict(seed=1, final_test_acc=99.46, last3_min_test_acc=99.41),
                                                       dict(seed=2, final_test_acc=99.47, last3_min_test_acc=99.45)],
                                                met_target=2, count=2, mean_final_test_acc=99.465,
                                                std_final_test_acc=0.007))
    return root


def _ablation(root, name, flags, accs_per_seed):
    """An ablation variant as `make ablation` leaves it: a --seeds run with one metrics.json per seed. The "full"
    row is the step's own seeds run (`make seeds`)."""
    folder = root / "model3" if name == "full" else root / "ablation" / name
    rows = []
    for seed, accs in enumerate(accs_per_seed, 1):
        m = _metrics("model3", accs, passed=min(accs) >= 99.4,
                     command=f"python model3.py {flags}--seed {seed} --out {folder}/seeds/seed-{seed}")
        _write(folder / "seeds" / f"seed-{seed}" / "metrics.json", m)
        rows.append(dict(seed=seed, final_test_acc=accs[-1], last3_min_test_acc=min(accs), passed=m["passed"]))
    _write(folder / "seeds.json", dict(command=f"python model3.py {flags}--seeds 2 --jobs 2 --out {folder}",
                                       device="cpu", seeds=rows, met_target=sum(r["passed"] for r in rows),
                                       count=len(rows), mean_final_test_acc=0.0, std_final_test_acc=0.0))


def test_steps_table_lists_complete_runs_only(results):
    rows = report.step_rows(results)
    assert [m["model"] for m in rows] == ["model2", "model3"]  # the subset run is not a result
    table = report.steps_table(rows)
    assert "| 7,900 | 22 | 99.45/99.47/99.46 |" in table and "| PASS |" in table
    assert "7,838, 99.22" in table  # beside the original write-up's figures


def test_ablation_table_pools_the_seeds_of_each_variant(results):
    rows = report.ablation_rows(results)
    assert [r["variant"] for r in rows] == ["full", *report.ABLATION_ROWS["model3"]]  # the Makefile's rows, in order
    assert [r["variant"] for r in rows if r["measured"]] == ["full", "no-augment"]
    row = next(r for r in rows if r["variant"] == "no-augment")
    assert row["flags"] == "--no-augment" and row["gap"] == pytest.approx(-0.10)
    assert row["met"] == 1 and row["seeds"] == 2 and row["last3_mean"] == pytest.approx(99.3667, abs=1e-3)
    table = report.ablation_table(rows)
    # final test acc: mean of 99.32 and 99.44; Δ against full's mean of 99.47 and 99.51, its same seeds
    assert (f"| {report.ABLATIONS['no-augment']} | `--no-augment` | 7,900 | 1/2 | 99.38 | 99.37 | 99.30 | -0.10 "
            "| -0.11 "
            "| 0.0200 | 99.02 |") in table
    assert "| nothing (the recipe as is) | `(defaults)` | 7,900 | 2/2 |" in table
    assert "| Δ final vs full, same seeds |" in table
    assert f"| {report.ABLATIONS['rotate-7']} | `--rotate=7` | — | not yet measured on today's recipe |" in table


def test_a_row_s_delta_is_against_its_first_row_over_the_same_seeds(results):
    """A row over fewer seeds than the step's own run is compared with that run's mean over its seeds, not all."""
    _ablation(results, "full", "", [[99.45, 99.46, 99.47], [99.50, 99.52, 99.51], [99.0, 99.0, 99.0]])
    _ablation(results, "no-augment", "--no-augment ", [[99.30, 99.31, 99.32], [99.42, 99.41, 99.44]])
    row = next(r for r in report.ablation_rows(results) if r["variant"] == "no-augment")
    assert row["delta"] == pytest.approx(99.38 - 99.49)  # seeds 1 and 2 of full: 99.47, 99.51 (its third: 99.0)
    _ablation(results, "full", "", [[99.45, 99.46, 99.47]])  # full lacks seed 2: no Δ to show
    rows = report.ablation_rows(results)
    assert next(r for r in rows if r["variant"] == "no-augment")["delta"] is None
    assert "| n/a |" in report.ablation_table(rows)


def test_bench_section_shows_each_device_and_the_one_time_costs(tmp_path):
    run = dict(steps=200, warmup=10, speedup=15.8, reference_epoch_s=4.0, project_epoch_s=0.25,
               model3_train_seconds=4.2, model3_final_test_acc=99.5, model3_verdict="model3: PASS params",
               model3_peak_memory_mb=900.0,
               pipelines=[dict(pipeline="reference", samples_per_s=1000.0, epoch_s=60.0, peak_memory_mb=10.0)])
    _write(tmp_path / "bench.json", {**run, "device": "cpu (test)", "model3_setup_seconds": 0.0,
                                     "date": "2026-11-26 09:00:00 UTC"})
    _write(tmp_path / "bench-cuda.json", {**run, "device": "cuda (test)", "model3_setup_seconds": 6.3,
                                          "date": "2026-11-26 06:21:48 UTC"})
    _write(tmp_path / "bench-cuda-rerun.json", {**run, "device": "cuda (test)", "speedup": 20.0,
                                                "reference_epoch_s": 3.0, "project_epoch_s": 0.15,
                                                "date": "2026-11-26 06:23:20 UTC"})
    text = report.bench_section(tmp_path)
    assert text.index("| cpu (test) |") < text.index("| cuda (test) |")
    once = "(+ 6.3 s of one-time warm-up and graph recording, and compilation where the run compiled)"
    assert text.count(once) == 1 and "**4.2 s**" in text
    assert text.count("The 2 runs on cuda (test) above: reference 4.00, 3.00 s/epoch, project 0.25, 0.15 s/epoch; "
                      "speedup 15.8×, 20.0×.") == 1 and "The 2 runs on cpu" not in text
    assert text.count("warm-up steps, one round: speedup") == 3
    first_row = {**run["pipelines"][0], "rounds_samples_per_s": [900.0, 1000.0, 1200.0]}
    rounds = {**run, "repeats": 3, "pipelines": [first_row]}
    _write(tmp_path / "bench.json", {**rounds, "device": "cpu (test)"})
    assert ("the median of 3 interleaved rounds (samples/s over the rounds: reference 900–1,200): speedup"
            in report.bench_section(tmp_path))
    _write(tmp_path / "bench.json", {**rounds, "device": "cpu (test)", "pipelines": [dict(first_row, net="model4")]})
    assert "(samples/s over the rounds: reference, step 4 900–1,200)" in report.bench_section(tmp_path)


def test_results_markdown_has_every_section(results):
    text = report.results_markdown(results)
    for heading in ("## The steps", "## model3 over seeds", "## Ablation of step 3", "## Ablation of step 4",
                    "## The frontier", "## Performance"):
        assert heading in text
    assert "**2/2 seeds met the target**" in text and "99.465 ± 0.007" in text and "lowest 99.46 %" in text
    assert "lowest of any last-3 epoch 99.41 %" in text
    assert "_Not run yet: `make bench`._" in text


def test_docstring_results_are_replaced_between_the_headings():
    source = '"""Step 3.\n\nTarget\n    t\n\nResults\n    old words\n\nAnalysis\n    a\n"""\nimport x\n'
    m = _metrics("model3", [99.41, 99.45, 99.47])
    new = report.replace_docstring_results(source, report.docstring_results(m))
    assert "old words" not in new and "99.41/99.45/99.47 %" in new and new.endswith('"""\nimport x\n')
    assert report.replace_docstring_results(new, report.docstring_results(m)) == new  # idempotent


def test_docstring_results_carry_the_seeds_verdict_wrapped_to_the_docstring(results):
    seeds = json.loads((results / "model3" / "seeds.json").read_text())
    text = report.docstring_results(_metrics("model3", [99.41, 99.45, 99.47]), seeds)
    lines = text.splitlines()
    assert "Over 2 seeds: 2/2 seeds met the target" in text and "99.465 ± 0.007 %" in " ".join(lines)
    assert all(len(line) <= 120 and line.startswith("    ") for line in lines)
    assert not any(line.strip().startswith("%") for line in lines)  # a figure keeps its % sign


def test_readme_block_is_replaced_and_the_rest_kept():
    readme = f"intro\n{report.README_BEGIN}\nold\n{report.README_END}\noutro\n"
    new = report.replace_between(readme, report.README_BEGIN, report.README_END, "TABLE")
    assert new == f"intro\n{report.README_BEGIN}\nTABLE\n{report.README_END}\noutro\n"


def test_the_readme_gets_the_steps_and_the_lab_page_the_bench(results, monkeypatch):
    monkeypatch.chdir(results.parent)
    Path("README.md").write_text(f"intro\n{report.README_BEGIN}\nold\n{report.README_END}\n")
    report.LAB_PAGE.parent.mkdir()
    report.LAB_PAGE.write_text(f"lab\n{report.BENCH_BEGIN}\nold\n{report.BENCH_END}\n")
    _write(results / "bench.json", dict(device="cpu (test)", steps=200, warmup=10, speedup=2.5, pipelines=[
        dict(pipeline="reference", samples_per_s=1000.0, epoch_s=60.0, peak_memory_mb=10.0)]))
    files = report.planned_files(results)
    readme, lab = files[Path("README.md")], files[report.LAB_PAGE]
    assert "| 7,900 | 22 |" in readme and "(results/steps.png)" in readme and "speedup" not in readme
    assert "speedup vs reference **2.5×**" in lab and "old" not in lab


def test_seconds_per_epoch_is_the_median_so_one_disturbed_epoch_does_not_skew_it():
    assert report.median_epoch_seconds({"history": [{"seconds": s} for s in (10.0, 30.0, 11.0)]}) == 11.0
    assert report.median_epoch_seconds({"history": [{"seconds": s} for s in (10.0, 12.0)]}) == 11.0


@pytest.mark.parametrize("damage, words", [("{broken", "not valid JSON"), ('{"model": "model3"}', "lacks params")])
def test_a_damaged_results_file_is_named_and_nothing_is_rewritten(results, monkeypatch, capsys, damage, words):
    monkeypatch.chdir(results.parent)
    (results.parent / "README.md").write_text(f"intro\n{report.README_BEGIN}\nold\n{report.README_END}\n")
    (results.parent / "RESULTS.md").write_text("old results\n")
    damaged = results / "model3" / "metrics.json"
    damaged.write_text(damage)
    assert report.main(["--results", str(results)]) == 1
    err = capsys.readouterr().err
    assert str(damaged) in err and words in err and len(err.strip().splitlines()) == 1
    assert (results.parent / "RESULTS.md").read_text() == "old results\n"
    assert "old" in (results.parent / "README.md").read_text()
    assert not (results / "ablation" / "ablation.json").exists()


def test_the_report_writes_every_file_including_the_one_picture_of_the_story(results, monkeypatch):
    monkeypatch.chdir(results.parent)
    assert report.main(["--results", str(results)]) == 0
    assert (results / "steps.png").stat().st_size > 5_000
    assert "![every step's test accuracy per epoch](results/steps.png)" in (results.parent / "RESULTS.md").read_text()
    assert (results / "ablation" / "ablation.md").exists()


@pytest.mark.parametrize("final, word", [(11.35, "holds: without batch norm"), (98.9, "does not hold here")])
def test_the_batchnorm_claim_is_judged_from_the_runs(results, final, word):
    assert report.batchnorm_section(results) is None  # not run yet
    _write(results / report.NO_BATCHNORM / "metrics.json",
           _metrics("model2", [final - 0.2, final - 0.1, final], params=399514,
                    command="python model2.py --no-batchnorm --out results/model2-no-batchnorm"))
    text = report.batchnorm_section(results)
    assert word in text and f"ended at {final:.2f} %" in text and "| model2 --no-batchnorm | 399,514 |" in text
    assert "## What batch norm does for step 2" in report.results_markdown(results)


def test_the_bench_says_what_bf16_and_channels_last_bought(tmp_path):
    rows = [dict(pipeline=name, samples_per_s=rate, epoch_s=60000 / rate, peak_memory_mb=10.0)
            for name, rate in (("reference (x)", 2000.0), ("project (y)", 5000.0), ("project, --precision bf16", 7500.0),
                               ("tiny (z)", 4000.0), ("tiny, --channels-last", 5200.0))]
    _write(tmp_path / "bench.json", dict(device="cpu (test)", steps=200, warmup=10, speedup=2.5, pipelines=rows,
                                         reference_epoch_s=30.0, project_epoch_s=12.0))
    text = report.bench_section(tmp_path)
    assert "With bf16 autocast the project's step ran at 1.50× its fp32 rate here." in text
    assert "The 99 % club's net trained at 0.80× model3's rate, and 1.30× its own with --channels-last." in text


def _frontier_row(design, params, finals, last3_min, met, met_club=None, flags=("--widths", "1,1,1,1,1,1")):
    return dict(design=design, widths=[1] * 6, flags=list(flags), params=params, macs=params * 50,
                seeds=len(finals), completed=len(finals), final_test_accs=finals,
                mean_final_test_acc=sum(finals) / len(finals), min_final_test_acc=min(finals),
                max_final_test_acc=max(finals), min_last3_test_acc=last3_min, met=met,
                met_club=len(finals) if met_club is None else met_club, epochs=15, subset=None, device="cpu")


def test_the_frontier_names_the_smallest_net_of_each_design_that_held_on_every_seed(results):
    rows = [_frontier_row("model3", 2000, [99.1, 99.2], 99.05, 0),
            _frontier_row("model3", 5000, [99.45, 99.5], 99.38, 1),
            _frontier_row("model3", 8000, [99.5, 99.55], 99.42, 2),
            _frontier_row("model4", 2100, [99.3, 99.2], 99.1, 0),
            _frontier_row("model4", 4800, [99.5, 99.48], 99.41, 2),
            _frontier_row("model4", 8200, [99.52, 99.5], 99.44, 2)]
    _write(results / "frontier" / "frontier.json", dict(rows=rows, seeds=2, epochs=15, command="python -m lab.frontier",
                                                       device="cpu", subset=None))
    (results / "frontier" / "frontier.md").write_text("| design | ... |\n")
    text = report.frontier_section(results)
    assert "| 99.40 % (the target) | 8,000 parameters | 4,800 parameters |" in text
    assert "frontier.png" in text and "frontier" in report.results_markdown(results)
    # step 4 against step 3 at the same count: 4,800 lies between step 3's 5,000 and 2,000 nets, 8,200 beyond its last
    gains = dict(report.design_gains(rows))
    step3_at_4800 = 99.15 + (99.475 - 99.15) * math.log(4800 / 2000) / math.log(5000 / 2000)
    assert sorted(gains) == [2100, 4800] and gains[4800] == round(99.49 - step3_at_4800, 2)
    assert "| parameters | 2,100 | 4,800 |" in text
    assert f"| step 4 − step 3 (points) | {gains[2100]:+.2f} | {gains[4800]:+.2f} |" in text
    _write(results / "frontier" / "frontier.json", dict(rows=rows, seeds=2, epochs=1, command="x", device="cpu",
                                                       subset=300))
    assert report.frontier_section(results) is None  # a smoke run on a subset is not a result


def test_the_frontier_names_the_smallest_net_holding_99_and_the_club_beside_the_public_points(results):
    club = ("--widths", "2,3,4,4,5")
    rows = [_frontier_row("model3", 500, [97.1, 97.5], 96.9, 0, met_club=0),
            _frontier_row("model3", 1000, [99.1, 99.2], 99.05, 0),
            _frontier_row("model4", 600, [99.0, 99.1] * 5, 98.95, 0, met_club=9, flags=club),
            _frontier_row("model4", 700, [99.1, 99.0], 98.9, 0, met_club=1),
            _frontier_row("model4", 4800, [99.5, 99.48], 99.41, 2)]
    _write(results / "frontier" / "frontier.json", dict(
        rows=rows, seeds=2, epochs=15, command="python -m lab.frontier", device="cpu", subset=None, club=list(club),
        public=[[697, 99.03, "someone/tiny-mnist", "the best of many runs"]]))
    (results / "frontier" / "frontier.md").write_text("| design | ... |\n")
    text = report.frontier_section(results)
    assert "| 99.0 % | 1,000 parameters | 4,800 parameters |" in text  # the club's 600 held on 9 of 10, not every seed
    assert "9 of its 10 seeds held 99.0 %" in text and "it holds the line" in text
    # at the public point's accuracy, our smallest net whose every seed held it: step 3's 1,000 (the club's lowest
    # epoch, 98.95, is under 99.03)
    assert "| someone/tiny-mnist | 697 | 99.03 % | the best of many runs | 1,000 | 1.43× |" in text
    rows[2]["met_club"] = 8
    _write(results / "frontier" / "frontier.json", dict(
        rows=rows, seeds=2, epochs=15, command="python -m lab.frontier", device="cpu", subset=None, club=list(club)))
    assert "not the 9 of its 10 that holding the line asks" in report.frontier_section(results)


def test_the_frontier_says_which_points_an_older_recipe_trained(results, monkeypatch):
    """A frontier run made before its step's recipe changed is named as such, with the setting that changed."""
    command = "python model3.py --widths 3,7,3,5,7,7 --seed 1 --out results/frontier/runs/model3-1952/seed-1"
    today = report.settings_today(command)
    then = {k: v for k, v in today.items() if k != "clean_epochs"}  # made before --clean-epochs existed
    _write(results / "frontier" / "runs" / "model3-1952" / "seed-1" / "metrics.json", dict(command=command, config=then))
    # a folder left in runs/ by an earlier frontier, of another size and made with the recipe of today, is no point
    # of the picture: the note reads the points frontier.json has
    stale = command.replace("1952", "1320").replace("3,7,3,5,7,7", "3,5,3,4,5,5")
    _write(results / "frontier" / "runs" / "model3-1320" / "seed-1" / "metrics.json",
           dict(command=stale, config=dict(today, clean_epochs=3)))
    _write(results / "frontier" / "frontier.json", dict(rows=[dict(design="model3", params=1952, completed=1)],
                                                         seeds=1, epochs=15, command="", device="cpu"))
    monkeypatch.setattr(report, "settings_today", lambda command: dict(today, clean_epochs=0))
    assert report.frontier_recipe_note(results) == ""  # what the recipe is today: no note
    monkeypatch.setattr(report, "settings_today", lambda command: dict(today, clean_epochs=3))
    note = report.frontier_recipe_note(results)
    assert "step 3's design was trained with clean_epochs 0, where its recipe today has 3" in note
    (results / "frontier" / "frontier.json").unlink()  # the runs of a frontier not drawn are no point of the picture
    assert report.frontier_recipe_note(results) == ""


def test_step4_seeds_and_ablation_have_their_own_sections(results):
    seeds = json.loads((results / "model3" / "seeds.json").read_text())
    _write(results / "model4" / "seeds.json", {**seeds, "command": "python model4.py --seeds 2"})
    text = report.results_markdown(results)
    assert "## model4 over seeds" in text and "python model4.py --seeds 2" in text
    assert "_Not run yet: `make ablation STEP=model4`._" in text


def test_further_seeds_get_a_sentence_of_their_own_that_says_what_they_were_used_for(results, monkeypatch):
    seeds = json.loads((results / "model3" / "seeds.json").read_text())
    later = dict(seeds, command="python model3.py --seed 21 --seeds 2 --out results/model3/seeds-21-22",
                 seeds=[dict(r, seed=r["seed"] + 20) for r in seeds["seeds"]], met_target=1)
    _write(results / "model3" / "seeds-21-22" / "seeds.json", later)
    text = report.seeds_section(results, "model3")
    assert text.startswith(f"Seeds 1–2, {report.SEEDS_USE['model3']}: **2/2 seeds met the target**")
    assert "Seeds 21–22: **1/2 seeds met the target**" in text  # nothing recorded of their use: no claim made
    assert "--seed 21 --seeds 2" in text
    monkeypatch.setitem(report.SEEDS_USE, "model3/seeds-21-22", "which no choice of the recipe saw")
    text = report.seeds_section(results, "model3")
    assert "Seeds 21–22, which no choice of the recipe saw: **1/2 seeds met the target**" in text
    docstring = report.docstring_results(_metrics("model3", [99.41, 99.45, 99.47]), seeds,
                                         report.later_seeds(results, "model3"))
    assert "    Seeds 21–22, which no choice of the recipe saw: 1/2 seeds met the target" in docstring


@pytest.mark.committed
def test_step4_s_seeds_say_what_each_set_of_them_was_used_for():
    """Seeds 11–20 took part in step 4's choice (round 8's net went to the test set on them, and the line it missed
    there sent the search on to rounds 9 and 10): no sentence calls them seeds no choice saw."""
    results = Path(__file__).resolve().parent.parent / "results"
    text = report.seeds_section(results, "model4")
    assert "Seeds 11–20, which no choice" not in text
    assert "Seeds 11–20, which took part in the choice (round 8's net held the line on 8 of them" in text
    assert text.startswith("Seeds 1–10, the recipe's confirmation run on the test set, on the seeds each round's")
    for folder in [*results.glob("model[34]/seeds-*"), *results.glob("**/ablation/**/*-seeds-*")]:
        assert folder.relative_to(results).as_posix() in report.SEEDS_USE, folder



def test_the_club_search_is_told_from_its_recipes_file_with_each_stage_table(results):
    assert "_Not run yet" in report.club_parts(results)[0]
    (results / "club").mkdir()
    (results / "club" / "search-recipes.txt").write_text(
        "# The club.\n#   python -m lab.search designs ...\n# Stage 1: tiny nets.\nx: --epochs 1\n# Stage 2: larger\n"
        "# ones. The choice: the smallest that met.\ny: --epochs 2\n")
    assert "_Not run yet" in report.club_parts(results)[0]  # a recipes file, but no table yet
    _write(results / "club" / "search" / "stage-2.json", dict(step="designs", seed_list="1, 2, 3", min_acc=99.0,
                                                            recipes=[]))
    (results / "club" / "search" / "stage-2.md").write_text("| recipe | ... |\n")
    parts = report.club_parts(results)
    assert parts[0] == "The club."  # the command line is the table's; stage 1 has no table, so no text
    assert parts[2:] == ["### Stage 2", "", "Stage 2: larger ones. The choice: the smallest that met.", "",
                         "| recipe | ... |\n"]
    assert "## The 99 % club" in report.results_markdown(results)
    # more seeds of a stage's recipe (--seed 4, --name stage-2-seeds-4-6) are a table of that stage, after its own
    _write(results / "club" / "search" / "stage-2-seeds-4-6.json", dict(step="designs", seed_list="4, 5, 6",
                                                                      min_acc=99.0, recipes=[]))
    (results / "club" / "search" / "stage-2-seeds-4-6.md").write_text("| seeds 4-6 |\n")
    assert report.club_parts(results)[-3:] == ["| recipe | ... |\n", "", "| seeds 4-6 |\n"]


def test_results_md_opens_with_its_sections_linked():
    text = report.with_contents("# Results\n\nIntro.\n\n## The steps\n\nx\n\n## The 99 % club: chosen\n\ny\n")
    assert text.startswith("# Results\n\nIntro.\n\n**Contents**\n\n- [The steps](#the-steps)\n"
                           "- [The 99 % club: chosen](#the-99--club-chosen)\n\n## The steps")


def test_a_step_s_search_story_sits_above_its_tables(tmp_path):
    (tmp_path / "model3").mkdir()
    assert report.search_story(tmp_path, "model3") == []
    (tmp_path / "model3" / "search-story.md").write_text("Round 1 found X.\n")
    assert report.search_story(tmp_path, "model3") == ["Round 1 found X.", ""]
    assert "Round 1 found X." in report.results_markdown(tmp_path)


def test_the_seeds_headline_says_the_rule_its_seeds_json_records(results):
    seeds = json.loads((results / "model3" / "seeds.json").read_text())
    assert "**2/2 seeds met the target** (the rule: every seed — met);" in report.seeds_headline(seeds)  # as then
    step4 = dict(seeds, count=10, met_target=8, min_seed_share=0.9, seeds_needed=9, passed=False)
    assert "**8/10 seeds met the target** (the rule: at least 9 in 10 — not met);" in report.seeds_headline(step4)
    _write(results / "model4" / "seeds.json", dict(step4, passed=True, met_target=9))
    assert "Over 10 seeds: 9/10 seeds met the target (the rule: at least 9 in 10 — met)" in report.docstring_results(
        _metrics("model4", [99.41, 99.45, 99.47]), json.loads((results / "model4" / "seeds.json").read_text()))


def test_a_frontier_point_whose_seeds_did_not_all_complete_holds_no_line_and_is_named(results):
    club = ("--widths", "2,3,4,4,5")
    rows = [_frontier_row("model3", 1000, [99.5], 99.45, 1),  # 1 of 3 seeds completed, and it met both lines
            _frontier_row("model3", 3000, [99.5, 99.5, 99.55], 99.42, 3),
            _frontier_row("model4", 600, [99.1] * 9, 99.02, 0, flags=club),  # 9 of 10 completed and held 99.0
            _frontier_row("model4", 4800, [99.5, 99.48, 99.5], 99.41, 3)]
    rows[0]["seeds"] = 3
    rows[2]["seeds"] = 10
    _write(results / "frontier" / "frontier.json", dict(
        rows=rows, seeds=3, epochs=15, command="python frontier.py", device="cpu", subset=None, club=list(club),
        public=[[697, 99.03, "someone/tiny-mnist", "the best of many runs"]]))
    (results / "frontier" / "frontier.md").write_text("| design | ... |\n")
    text = report.frontier_section(results)
    assert "| 99.40 % (the target) | 3,000 parameters | 4,800 parameters |" in text
    assert "| 99.0 % | 3,000 parameters |" in text
    assert ("Not every seed completed at model3 at 1,000 parameters (1 of 3 seeds), model4 at 600 parameters (9 of "
            "10 seeds)") in text
    assert "9 of its 10 seeds held 99.0 % on each of their last 3 epochs (1 did not complete)" in text
    assert "it holds the line" in text  # 9 in 10 held, whatever the tenth would have done
    assert "| someone/tiny-mnist | 697 | 99.03 % | the best of many runs | 3,000 |" in text


def test_every_recipe_under_a_thousand_parameters_is_one_table_best_first_each_run_once(tmp_path):
    def recipe(name, params, mean, finals, met, completed=3):
        return dict(recipe=name, flags=f"--design {name}", seeds=3, completed=completed, params=params,
                    last3_val_mean=mean, last3_val_min=min(finals) - 0.01, final_val=finals, met=met)
    folder = tmp_path / "club" / "search"
    _write(folder / "stage-2.json", dict(step="designs", seed_list="1, 2, 3", min_acc=99.0, recipes=[
        recipe("a", 970, 98.9, [98.9, 98.8, 99.0], 0), recipe("big", 1218, 99.1, [99.1, 99.1, 99.1], 3)]))
    _write(folder / "stage-10.json", dict(step="designs", seed_list="1, 2, 3", min_acc=99.0, recipes=[
        recipe("b", 990, 99.0, [99.0, 99.1, 98.95], 2), recipe("a", 970, 98.9, [98.9, 98.8, 99.0], 0),
        recipe("unfinished", 900, 99.5, [99.5], 1, completed=1)]))
    _write(folder / "stage-10-seeds-4-6.json", dict(step="designs", seed_list="4, 5, 6", min_acc=99.0, recipes=[
        recipe("a", 970, 98.7, [98.7, 98.6, 98.8], 0)]))
    table = report.under_a_thousand(folder)
    rows = [line.split(" | ")[:2] for line in table.splitlines()[2:5]]
    assert rows == [["| b", "stage-10"], ["| a", "stage-2"], ["| a", "stage-10-seeds-4-6"]]  # stage 2's a once
    assert table.count("| a |") == 2 and "big" not in table and "unfinished" not in table
    assert table.rstrip().endswith("3 recipes under 1,000 parameters, 9 runs: their means from 98.70 to 99.00 %, "
                                   "while the final accuracies of one recipe's seeds lie up to 0.20 points apart. "
                                   "None held 99.0 % on every seed.")


def test_an_ablation_row_run_on_an_earlier_recipe_is_not_measured_on_today_s(results):
    """A row whose runs recorded another recipe than its flags make today (made before the step's defaults changed)
    is no change to today's recipe: its table says it is not yet measured, and which settings differ, and shows no
    Δ against today's first row. A row whose runs recorded today's settings is measured."""
    _ablation(results, "no-augment", "--no-augment ", [[99.30, 99.31, 99.32], [99.42, 99.41, 99.44]])
    paths = [results / "ablation" / "no-augment" / "seeds" / f"seed-{seed}" / "metrics.json" for seed in (1, 2)]
    for path in paths:  # the settings today's code records for this command, and its net's size
        metrics = json.loads(path.read_text())
        today = report.settings_today(metrics["command"])
        _write(path, dict(metrics, config=today, params=report.made_today("model3.py", ("--no-augment",))[1]))
    row = next(r for r in report.ablation_rows(results) if r["variant"] == "no-augment")
    assert row["measured"] and "earlier" not in row
    for path in paths:  # an earlier recipe: half the peak rate, other widths
        metrics = json.loads(path.read_text())
        _write(path, dict(metrics, config=dict(today, lr=today["lr"] / 2, net_kwargs=dict(
            today["net_kwargs"], widths=[9, 9, 9, 9, 9, 9]))))
    rows = report.ablation_rows(results)
    row = next(r for r in rows if r["variant"] == "no-augment")
    assert not row["measured"] and row["earlier"] == ["lr", "net.widths"]
    assert f"| {report.ABLATIONS['no-augment']} | `--no-augment` | — | not yet measured on today's recipe |" in (
        report.ablation_table(rows))
    assert "(lr, net.widths differ)" in report.ablation_text(results, "model3", rows)
    # a run with a setting of a retired flag at another value than its off: another recipe too
    for path in paths:
        metrics = json.loads(path.read_text())
        _write(path, dict(metrics, config=dict(today, precision="bf16")))
    assert next(r for r in report.ablation_rows(results) if r["variant"] == "no-augment")["earlier"] == ["precision"]


def test_a_run_of_today_s_step_4_is_made_today_though_its_net_builds_in_batch_norm_and_activation():
    """Step 4's net builds in its batch norm (one scale and shift a layer) and PReLU, with no setting to record them:
    a run that recorded a fingerprint of its code is told apart by that, so its settings alone make it today's; a run
    with neither (made before runs recorded them) had the kinds that were the only ones then: ReLU, a channel's."""
    config = report.settings_today("python model4.py --clean-epochs=0 --seed 1")
    fingerprinted = dict(config=config, params=3915, code=dict(fingerprint="f016ebe4483a3b8a"))
    assert report.not_made_today("model4.py", ("--clean-epochs=0",), [fingerprinted]) == []
    assert report.not_made_today("model4.py", ("--clean-epochs=0",), [dict(config=config, params=3915)]) == [
        "activation", "bn_affine"]
    assert report.not_made_today("model4.py", (), [fingerprinted]) == ["clean_epochs"]


def test_an_ablation_row_over_further_seeds_gets_a_sentence_under_the_table(results):
    """A row's net run again on seeds no choice saw (its folder's twin NAME-seeds-A-B, as step 4's round-8-net)
    is told under the table: a row's 9 of 10 must not stand alone where ten more seeds gave 8."""
    assert "further:" not in report.results_markdown(results)
    seeds = json.loads((results / "ablation" / "no-augment" / "seeds.json").read_text())
    later = dict(seeds, command="python model3.py --no-augment --seed 21 --seeds 2",
                 seeds=[dict(r, seed=r["seed"] + 20) for r in seeds["seeds"]], met_target=0)
    _write(results / "ablation" / "no-augment-seeds-21-22" / "seeds.json", later)
    assert "Row no-augment (`--no-augment`), further: Seeds 21–22: **0/2 seeds met the target**" in (
        report.results_markdown(results))
    assert "no-augment-seeds-21-22" not in [r["variant"] for r in report.ablation_rows(results)]  # no row of its own


ROOT = Path(__file__).resolve().parent.parent


def _tables(text):
    """Each markdown table of `text` as (the text above it back to the previous table or heading, its lines)."""
    above, table, found = [], [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            table.append(line)
            continue
        if table:
            found.append(("\n".join(above), table))
            above, table = [], []
        above = [] if line.startswith("#") else above
        above.append(line)
    return found


def _cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _recorded_flags(above, table):
    """(step, [flags]) of a table's rows: a search table's flags column (its step from the lab.search command its
    caption records), a bench table's flags in its pipeline names (model3's pipeline); (None, []) for any other."""
    head = _cells(table[0])
    if "flags" in head:
        command = re.findall(r"python -m lab\.search (\w+)", above)
        column = head.index("flags")
        return (command[-1] if command else None,
                [_cells(row)[column].strip("`") for row in table[2:] if _cells(row)[column].strip("`") != "(defaults)"])
    if head[0] == "pipeline":
        return "model3", [" ".join(match) for row in table[2:]
                          for match in re.findall(r"(--[a-z][a-z-]*)(?: ([a-z0-9][a-z0-9.]*))?", _cells(row)[0])]
    return None, []


def _commit_exists(sha):
    if not git_history():
        return None
    done = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{sha}^{{commit}}"], capture_output=True)
    return done.returncode == 0


@pytest.mark.parametrize("page", ["RESULTS.md", "lab/README.md"])
@pytest.mark.committed
def test_every_table_of_flags_today_s_code_refuses_names_the_commit_that_ran_it(page):
    """A table whose recorded flags (a retired flag, a layout family designs.py no longer has) today's parser refuses
    is history: right above it, it names the commit its runs were made at (`git checkout SHA`, then its command, runs
    it again), a commit this repository has."""
    checked = 0
    for above, table in _tables((ROOT / page).read_text()):
        step, flag_sets = _recorded_flags(above, table)
        if not step:
            continue
        defaults = importlib.import_module(step).DEFAULTS
        refused = [flags for flags in flag_sets if settings_meant_by(shlex.split(flags), defaults) is None]
        if not refused:
            continue
        checked += 1
        commit = re.findall(r"`git checkout ([0-9a-f]{7,40})`", above)
        assert commit, f"{page}: the table under {above.strip().splitlines()[0][:80]!r} ran {refused[0]!r} " \
                       f"(refused today) but names no commit"
        assert _commit_exists(commit[-1]) is not False, f"{page}: no commit {commit[-1]} in this repository"
    # RESULTS.md: the club's stages, step 4's rounds, step 3's, the 2026-12-02 bench; the lab's page shows each
    # device's latest bench, of today's flags
    assert checked >= (31 if page == "RESULTS.md" else 0)


def test_a_table_made_at_an_earlier_commit_says_so_between_its_caption_and_its_rows(tmp_path, monkeypatch):
    """A search table or a bench run that records the commit it was made at ("made_at") says so: the line sits under
    the caption that holds its command; a bench file rewritten since and a table with no recorded command get none."""
    _write(tmp_path / "club" / "search" / "stage-2.json", dict(step="designs", recipes=[], command="python -m x",
                                                                made_at="abc1234"))
    (tmp_path / "club" / "search" / "stage-2.md").write_text("Caption. Command: `python -m x`.\n\n| recipe |\n")
    assert report.search_section(tmp_path, "club", "search", "stage-2") == (
        "Caption. Command: `python -m x`.\n\nMade at commit abc1234: `git checkout abc1234`, then the command above, "
        "runs it again.\n\n| recipe |\n")
    monkeypatch.setattr(report, "BEFORE_LAB", {"abc1234"})
    assert ("then the command above with `python search.py` for `python -m lab.search`, runs it again.\n\n| recipe"
            in report.search_section(tmp_path, "club", "search", "stage-2"))
    _write(tmp_path / "club" / "search" / "stage-2.json", dict(step="designs", recipes=[], made_at="abc1234"))
    assert "abc1234" not in report.search_section(tmp_path, "club", "search", "stage-2")
    rows = [dict(pipeline="reference", samples_per_s=1000.0, epoch_s=60.0, peak_memory_mb=10.0)]
    bench = dict(device="cpu (test)", steps=200, warmup=10, speedup=1.0, pipelines=rows, command="python -m lab.bench",
                 date="2026-12-02 16:19:59 UTC", made_at="def5678")
    _write(tmp_path / "bench.json", bench)
    assert report.bench_section(tmp_path).startswith("Made at commit def5678: `git checkout def5678`, then "
                                                     "`python -m lab.bench`, runs it again.\n\n| pipeline |")
    _write(tmp_path / "bench.json", {key: value for key, value in bench.items() if key != "made_at"})  # run again
    assert "def5678" not in report.bench_section(tmp_path)


def _git_show(commit, path):
    done = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


@pytest.mark.committed
def test_each_made_at_table_is_the_one_its_commit_committed():
    """Each search table and bench run that names the commit it was made at ("made_at") is, apart from that name and
    the driver's name (search.py before the drivers moved into lab/, BEFORE_LAB), the file that commit committed: a
    table rewritten since (a search run again under the same name, `make bench`) would name a commit that did not
    make it."""
    if not git_history():
        pytest.skip("not a git checkout with its history")
    results = ROOT / "results"
    tables = {path: report.made_at(path) for path in results.glob("*/search*/*.json") if report.made_at(path)}
    assert len(tables) >= 33  # step 3's 5 tables, step 4's 12, the club's 16
    for path, commit in tables.items():
        key = path.relative_to(ROOT).as_posix()
        then = json.loads(_git_show(commit, key))
        now = {name: value for name, value in json.loads(path.read_text()).items() if name != "made_at"}
        driver = "python search.py" if commit in report.BEFORE_LAB else "python -m lab.search"
        assert then == {**now, "command": now["command"].replace("python -m lab.search", driver, 1)}, key
        assert (_git_show(commit, "lab/search.py") is None) == (commit in report.BEFORE_LAB), (key, commit)
    for name, b in report.bench_runs(results):
        if b.get("made_at"):
            then = {key: value for key, value in b.items() if key != "made_at"}
            # a CPU run kept under its date once a newer `make bench` took bench.json was bench.json then
            committed = _git_show(b["made_at"], f"results/{name}") or _git_show(b["made_at"], "results/bench.json")
            assert json.loads(committed) == then, name


def test_a_recorded_command_with_a_retired_flag_means_nothing_today_and_prints_nothing(capsys):
    """The report reads recorded commands with today's parser (harness.cli.settings_meant_by): a retired flag or
    layout is None there, not an argparse error on stderr while RESULTS.md is written."""
    import designs
    assert settings_meant_by(["--teacher", "results/club/teacher"], designs.DEFAULTS) is None
    assert settings_meant_by(["--design", "twopool-8.13.13.13"], designs.DEFAULTS) is None
    assert settings_meant_by(["--design", "pool1_ds-8.13.13.13"], designs.DEFAULTS) is not None
    assert capsys.readouterr() == ("", "")


def test_bench_section_gives_each_nets_speedup_and_each_steps_full_run(tmp_path):
    rows = [dict(pipeline=f"{kind} row, {net}", kind=kind, net=net, samples_per_s=rate, epoch_s=round(60000 / rate, 2),
                 peak_memory_mb=800.0) for kind, net, rate in
            (("reference", "model3", 5000.0), ("project", "model3", 10000.0), ("reference", "model4", 4000.0),
             ("project", "model4", 6000.0), ("reference", "club", 5000.0), ("project", "club", 8000.0),
             ("project-1-thread", "club", 6000.0))]
    full = [dict(step=step, epochs=15, train_seconds=seconds, setup_seconds=0.0, final_test_acc=acc,
                 verdict=f"{step}: PASS params", peak_memory_mb=900.0)
            for step, seconds, acc in (("model3", 101.2, 99.56), ("model4", 208.4, 99.53))]
    _write(tmp_path / "bench.json", dict(device="cpu (test)", steps=200, warmup=10, pipelines=rows, speedup=2.0,
                                         speedups=dict(model3=2.0, model4=1.5, club=1.6), full_runs=full,
                                         reference_epoch_s=12.0, project_epoch_s=6.0))
    text = report.bench_section(tmp_path)
    assert ("speedup vs reference step 3's net **2.0×**, step 4's net **1.5×**, the club's net **1.6×**" in text)
    assert "`make model3` (15 epochs, training and per-epoch evaluation, the data already loaded) took **101.2 s**" in text
    assert "`make model4` (15 epochs" in text and "**208.4 s**, final test accuracy 99.53 % (PASS)" in text
    assert "the club's net trained at 0.75× its rate on all of them (more than half" in text
    profile = dict(model4=[dict(operator="aten::_prelu_kernel_backward", shapes="[[128, 12, 24, 24]]", ms=5.95,
                                share=0.103)])
    _write(tmp_path / "bench.json", dict(json.loads((tmp_path / "bench.json").read_text()), profile=profile))
    text = report.bench_section(tmp_path)
    assert text.rstrip().endswith("| model4 | `aten::_prelu_kernel_backward` | [[128, 12, 24, 24]] | 5.95 | 10 % |")
    assert "peak memory 900 MB.\n\nWhere a training step's time goes (torch.profiler" in text  # after the runs


def _public_run(root, net, recipe, accs_per_seed, line, lr=0.2, epochs=15):
    """A published net's --seeds run as `python public.py --net NET --seeds N --out results/public/NET/RECIPE`
    leaves it."""
    folder = root / "public" / net / recipe
    rows = []
    for seed, accs in enumerate(accs_per_seed, 1):  # no accuracies: a seed whose loss became NaN in epoch 4
        command = f"python public.py --net {net} --lr {lr} --seed {seed} --out {folder}/seeds/seed-{seed}"
        m = {**(_metrics("public", accs, passed=min(accs[-3:]) >= line, params=697, command=command) if accs else
                dict(_metrics("public", [99.0] * 3, passed=False, params=697, command=command), history=[],
                     final_test_acc=None, last_test_accs=[], diverged="in epoch 4, the training loss became nan")),
             "config": dict(lr=lr, epochs=epochs)}
        _write(folder / "seeds" / f"seed-{seed}" / "metrics.json", m)
        rows.append(dict(seed=seed, final_test_acc=m["final_test_acc"], passed=m["passed"],
                         last3_min_test_acc=min(accs[-3:]) if accs else None,
                         **({"diverged": m["diverged"]} if not accs else {})))
    met = sum(r["passed"] for r in rows)
    _write(folder / "seeds.json", dict(command=f"python public.py --net {net} --lr {lr} --seeds {len(rows)} --out {folder}",
                                       device="cpu", seeds=rows, met_target=met, count=len(rows), min_seed_share=0.9,
                                       mean_final_test_acc=0.0, std_final_test_acc=0.0,
                                       diverged=[r["seed"] for r in rows if r.get("diverged")]))


def test_the_public_nets_table_judges_each_net_at_its_line_and_says_when_one_beats_ours(results):
    held = [[99.1, 99.2, 99.1]] * 9 + [[98.9, 99.0, 99.1]]
    _public_run(results, "joshwarn-697", "step4", held, 99.0, lr=0.05)
    text = report.public_section(results)
    row = next(line for line in text.splitlines() if line.startswith("| JoshWarn"))
    assert "| 697 | 99.03 % (" in row and "**9/10** held 99.00 % (the rule met); final 99.10 ± 0.00 %" in row
    assert "lowest last-3 epoch 98.90 % (peak rate 0.05); made by unknown code" in row
    cells = [cell.strip() for cell in row.split("|")]
    assert cells.count("not run yet") == 1 and "the 99 % club: not run yet" in cells  # its own recipe; no frontier
    assert "JoshWarn/Parameter-Efficient-MNIST's net holds our rule at 99.00 % under step 4's recipe with 697" in text
    woolly = next(line for line in text.splitlines() if line.startswith("| woolly-of-cv"))
    cells = [cell.strip() for cell in woolly.split("|")]
    assert cells.count("not run yet") == 2 and "step 4: not run yet" in cells
    standing = report.public_standing(results)
    assert ("JoshWarn/Parameter-Efficient-MNIST's 697-parameter net held 99.00 % on 9 of its 10 seeds at a peak rate "
            "of 0.05 (published: 99.03 %)") in standing and "their authors' own" not in standing
    club = dict(_frontier_row("model4", 1218, [99.1] * 10, 99.02, 0, met_club=10), line="club")
    _write(results / "frontier" / "frontier.json", dict(rows=[club], seeds=3, club_seeds=10, epochs=15, command="x",
                                                        device="cpu"))
    assert ("**JoshWarn/Parameter-Efficient-MNIST's net holds our rule at 99.00 % under step 4's recipe with 697 "
            "parameters, fewer than our 1,218: the number to beat.**") in report.public_section(results)
    assert "it holds our rule with fewer parameters than ours: the number to beat" in report.public_standing(results)
    club.update(params=600)
    _write(results / "frontier" / "frontier.json", dict(rows=[club], seeds=3, club_seeds=10, epochs=15, command="x",
                                                        device="cpu"))
    assert ("with 697 parameters (ours: the 99 % club, 600: 10/10)." in report.public_section(results)
            and "the number to beat" not in report.public_section(results) + report.public_standing(results))


def test_a_public_net_under_its_author_s_recipe_is_a_cell_of_its_own_and_a_clause_of_the_standing(results):
    _public_run(results, "joshwarn-697", "step4", [[99.1, 98.8, 99.1]] * 10, 99.0, lr=0.05)
    _public_run(results, "joshwarn-697", "own", [[99.1, 99.2, 99.1]] * 9 + [[98.9, 99.0, 99.1]], 99.0, lr=0.01,
                epochs=75)
    row = next(line for line in report.public_section(results).splitlines() if line.startswith("| JoshWarn"))
    cells = [cell.strip() for cell in row.split("|")]
    assert cells[4].startswith("**0/10** held 99.00 % (the rule not met)") and "(peak rate 0.05)" in cells[4]
    assert cells[5].startswith("**9/10** held 99.00 % (the rule met)") and "(75 epochs)" in cells[5]
    assert ("held 99.00 % on 0 of its 10 seeds at a peak rate of 0.05 and on 9 of its 10 seeds under its author's "
            "recipe (75 epochs) (published: 99.03 %)") in report.public_standing(results)
    assert "for a net without batch norm, and their authors' own;" in report.public_standing(results)


def test_a_public_net_that_misses_the_rule_is_said_to(results):
    _public_run(results, "joshwarn-697", "step4", [[99.1, 98.8, 99.1]] * 2 + [[99.1, 99.2, 99.1]] * 8, 99.0)
    text = report.public_section(results)
    assert "**8/10** held 99.00 % (the rule not met)" in text and "holds our rule" not in text
    assert report.public_standing(results) is not None


def test_a_public_seed_whose_loss_became_nan_counts_as_not_held_and_stays_out_of_the_mean(results):
    _public_run(results, "joshwarn-697", "step4", [[99.1, 99.2, 99.1], [], [98.0, 98.1, 98.2], []] + [[99.1] * 3] * 6,
                99.0, lr=0.1)
    row = next(line for line in report.public_section(results).splitlines() if line.startswith("| JoshWarn"))
    assert ("**7/10** held 99.00 % (the rule not met); final 98.99 ± 0.32 %, over the 8 seeds that trained to the end "
            "(seeds 2, 4 stopped on a NaN loss), lowest last-3 epoch 98.00 % (peak rate 0.1)") in row


def test_the_speed_trials_table_gives_each_trial_against_the_step_as_it_is(tmp_path):
    assert report.speed_trials_section(tmp_path) is None
    rows = [dict(step="model4", trial="today", ms_per_step=50.0, rounds_ms=[49.0, 50.0, 52.0], speedup=1.0,
                 first_update_s=0.1, same_weights=True),
            dict(step="model4", trial="torch.compile", ms_per_step=40.0, rounds_ms=[39.5, 40.0, 41.0], speedup=1.25,
                 first_update_s=21.0, same_weights=False)]
    _write(tmp_path / "speed-trials.json", dict(rows=rows, device="cpu (test)", command="python -m lab.speed_trials",
                                                rounds=3, steps=30, date="2026-12-07", made_at="abc1234"))
    text = report.speed_trials_section(tmp_path)
    assert text.startswith("Made at commit abc1234: `git checkout abc1234`, then `python -m lab.speed_trials`")
    assert "| model4 | the step as it is | 50.0 (49.0–52.0) | 1.00× | 0.1 | the same to the bit |" in text
    assert "| model4 | `torch.compile(common.train_step)` | 40.0 (39.5–41.0) | 1.25× | 21.0 | others |" in text


def test_a_frontier_run_of_todays_code_is_no_older_recipe():
    """A run that records its command's fingerprint of today is what the command makes again: step 4's PReLU and
    one scale a layer, built into its Net and not among its settings, are not read as a recipe changed since."""
    from lab import code_meant_by
    command = "python model4.py --widths 2,3,8,8,8 --seed 1 --out results/frontier/runs/model4-500/seed-1"
    metrics = dict(command=command, config=report.settings_today(command))
    assert report.recipe_changes(metrics)  # no code recorded: its settings alone read as the net's of before
    metrics["code"] = code_meant_by("model4", ["--widths", "2,3,8,8,8"])
    assert report.recipe_changes(metrics) == []
