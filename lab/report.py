"""Builds RESULTS.md from the runs in results/, and writes the measured Results into the README and into each step's
docstring, so that no figure is ever typed by hand.

    python -m lab.report                  # RESULTS.md, the Results in README.md and model1-4.py, lab/README.md
    python -m lab.report --ablation-only  # results/ablation/ablation.md and .json (run by `make ablation`)
"""
import argparse
import importlib
import json
import math
import re
import shlex
import statistics
import sys
import textwrap
from functools import lru_cache
from pathlib import Path

import torch.nn as nn

from common import STEPS, count_params, pyplot, seeds_needed
from harness.cli import OWN_RECIPE_OFF, RETIRED_SETTINGS, OneLineParser, settings_meant_by
from harness.errors import DataError, run_main
from harness.files import atomic_save_figure, atomic_write_json, atomic_write_text
from harness.runs import completed_runs, diverged_words, seed_rule_verdict
import public
from lab import code_words, net_of
# The original write-up's figures, for comparison (its step 1 and 2 report the best test epoch).
ORIGINAL = {"model1": ("1.6M", "99.31 (best epoch)"), "model2": ("~400k", "99.57 (best epoch)"),
            "model3": ("7,838", "99.22"), "model4": ("—", "no such step")}
# Ablation rows: folder name -> what it changes. A step's table (`make ablation STEP=...`) shows "full", the step's
# own --seeds run (results/STEP, `make seeds`), then the rows of ABLATION_ROWS, in that order.
ABLATIONS = {"full": "nothing (the recipe as is)",
             "scale-0": "no zoom: round 8's net as it went to the test set, the recipe before round 10",
             "clean-0": "no clean epochs: augmentation to the last epoch",
             "rotate-7": "rotation ±7° (step 3's recipe before its first search)",
             "no-augment": "no augmentation (rotation and shift, and the zoom where the recipe has one)",
             "aug-5-1": "lighter augmentation: ±5°, ±1 px"}
# Each step's rows as its Makefile's ABLATIONS_<step> runs them (NAME: FLAGS, its + as spaces) over its
# ABLATION_SEEDS_<step> seeds; tests/test_ablation.py holds the two equal. `make ablation STEP=...` runs
# `python STEP.py FLAGS --seeds N --out results/ABLATION_DIRS[STEP]/NAME` for each: a row is shown as measured only
# where its runs are what these flags make with today's code.
ABLATION_ROWS = {"model3": {"clean-0": "--clean-epochs=0", "rotate-7": "--rotate=7", "no-augment": "--no-augment"},
                 "model4": {"scale-0": "--scale=0", "clean-0": "--clean-epochs=0", "no-augment": "--no-augment",
                            "aug-5-1": "--rotate=5 --shift=1"}}
ABLATION_SEEDS = {"model3": 3, "model4": 10}
# Where each step's ablation runs live, under results/; the "full" row is the step's own --seeds run.
ABLATION_DIRS = {"model3": "ablation", "model4": "model4/ablation"}
# Rows that today's code cannot make again (a retired flag, a net no script builds now, a run from before its flag
# existed), each step's in a table of its own: rendered from the committed runs under its folder (in results/), its
# first row the "nothing changed" of its recipe ("full": the step's own run), so that each Δ is against the recipe
# the row changed. "sets": the settings a row's change sets ("net": another net), which the settings its runs
# recorded are held to (tests/test_ablation.py).
HISTORY = {
    "model3": dict(
        folder="ablation/earlier-code", title="Step 3: rows today's code does not make again",
        caption="Each row is one change to step 3's recipe of today, against the step's own run (the first row, as "
                "in the table above) over the same seeds. clean-0 is the recipe run over the step's twenty seeds "
                "before `--clean-epochs` existed, when the recipe had no clean epochs: a run of twenty seeds where "
                "`make ablation` runs three (the table above's row clean-0 is the same change over three). bf16 used "
                "`--precision`, a flag since retired (it measured no gain).",
        rows={"full": dict(change="nothing (the recipe as is)", sets=()),
              "clean-0": dict(change="no clean epochs: the recipe before --clean-epochs 3 joined it, its 20 seeds",
                              sets=("clean_epochs",)),
              "bf16": dict(change="bf16 autocast in the training forward pass (--precision, since retired)",
                           sets=("precision",))}),
    "model4": dict(
        folder="model4/ablation/round-5-recipe",
        title="Step 4: one change to round 5's recipe (rounds 5 to 9, 4,966 parameters)",
        caption="Step 4's net and recipe of rounds 5 to 9 (the first row) and one change to it a row, each Δ against "
                "that first row over the same seeds: these rows measured each ingredient of the recipe before round "
                "7 changed the net and round 10 added the zoom (the table above measures them on today's recipe "
                "where it has run them). Today's code builds none of these nets (step 4's net now has one scale and "
                "shift a batch norm and PReLU, and designs.py no longer has round 4's layout), so the table is rendered "
                "from the committed runs.",
        rows={"round-5-net": dict(change="nothing: step 4's net and recipe of rounds 5 to 9 (8,12,32,32,40 channels, "
                                         "batch norm's own scale and shift per channel, ReLU, a peak rate of 0.1, "
                                         "no zoom)", sets=()),
              "clean-0": dict(change=ABLATIONS["clean-0"], sets=("clean_epochs",)),
              "no-augment": dict(change="no augmentation (rotation and shift)", sets=("rotate", "shift")),
              "aug-5-1": dict(change=ABLATIONS["aug-5-1"], sets=("rotate", "shift")),
              "round-6-net": dict(change="round 6's choice under 4,000 parameters: the same net, thinner "
                                         "(6,12,28,28,32)", sets=("net",)),
              "round-4-net": dict(change="step 4's net of rounds 1 to 4 (a strided transition and full 3×3s, "
                                         "6,12,6,12,14,14) and no clean epochs", sets=("net", "clean_epochs"))}),
}
# A results file made at a commit whose code today's does not match records that commit itself (its "made_at"): a
# --seeds run's seeds.json, a search table, a bench run. At that commit the command it records means what its runs
# did, so `git checkout COMMIT`, then the command, makes it again. tests/test_ablation.py finds every such run.


def made_at(path):
    """The commit a results file (seeds.json, a search table's .json, bench.json) says it was made at, or None."""
    try:
        return json.loads(Path(path).read_text()).get("made_at")
    except (OSError, ValueError, AttributeError):
        return None


# Commits before the drivers moved into lab/ (7da39f5): there `python -m lab.search` was `python search.py`.
BEFORE_LAB = {"4a9f60a", "adb7cdb", "3e8e7a1", "e9c279a", "f8041f5", "b816e8c", "79bc324"}
# What each set of test seeds was used for, by the folder of its runs under results/ (a step's own --seeds run,
# results/STEP; its seeds-A-B; an ablation row's NAME-seeds-A-B): seeds that took part in a choice say less of how
# often the choice holds than seeds that no choice saw.
SEEDS_USE = {
    "model3": "the recipe's run on the test set, chosen on the validation split (the recipe before it had held on "
              "these seeds with no margin, which sent round 3 looking for one)",
    "model3/seeds-21-30": "which no choice of the recipe saw",
    "model4": "the recipe's confirmation run on the test set, on the seeds each round's choice was sent to first "
              "(a choice that fell short on them went no further)",
    "model4/seeds-11-20": "which took part in the choice (round 8's net held the line on 8 of them, so the line "
                          "stayed at 5,000 and rounds 9 and 10 followed; round 10's recipe was then confirmed on "
                          "them)",
    "model4/seeds-21-30": "which no choice of the recipe saw",
    "model4/ablation/scale-0-seeds-11-20": "on which round 8 sent this net to the test set after seeds 1–10 (it held "
                                           "on 8 of them, so the line stayed at 5,000 and rounds 9 and 10 followed)",
    "model4/ablation/round-5-recipe/round-5-net-seeds-11-20": "which no choice of round 5's recipe saw (rounds 8 to 10 "
                                                              "used them later)",
    "model4/ablation/round-5-recipe/round-4-net-seeds-11-20": "which no choice of round 4's net saw",
}
# What a run did about a setting it did not record: made before the setting's flag existed, or after the flag was
# retired, it ran with this value (the flag's "off"). The net's own arguments are net.NAME (run_settings).
SETTINGS_OFF = {**RETIRED_SETTINGS, "clean_epochs": 0, "scale": 0.0, "val": 0, "batchnorm": True, "net.dropout": 0.0,
                **OWN_RECIPE_OFF}
# `make bench` writes bench.json; runs on other devices, or repeated ones, go to bench-<name>.json (`--out`).
BENCH_GLOB = "bench*.json"
README_BEGIN, README_END = "<!-- results:begin (written by lab/report.py) -->", "<!-- results:end -->"
BENCH_BEGIN, BENCH_END = "<!-- bench:begin (written by lab/report.py) -->", "<!-- bench:end -->"
FRONTIER_BEGIN, FRONTIER_END = "<!-- frontier:begin (written by lab/report.py) -->", "<!-- frontier:end -->"
PUBLIC_BEGIN, PUBLIC_END = "<!-- public:begin (written by lab/report.py) -->", "<!-- public:end -->"
LAB_PAGE = Path("lab") / "README.md"  # the lab's page: the frontier's summary and the bench (the README links it)


class DamagedResults(DataError):
    """A results file that exists but cannot be read as the run that wrote it meant: the report stops, naming it,
    rather than leaving that run out of RESULTS.md and the README without a word."""


def load_json(path, required=()):
    """A results file as a dict; None if it does not exist (that run has not been made yet)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise DamagedResults(f"{path}: cannot be read ({e.strerror or e})") from None
    except ValueError as e:
        raise DamagedResults(f"{path}: not valid JSON ({e})") from None
    missing = [key for key in required if not isinstance(data, dict) or key not in data]
    if missing:
        raise DamagedResults(f"{path}: lacks {', '.join(missing)}")
    return data


METRICS_KEYS = ("model", "params", "history", "last_test_accs", "final_test_acc", "passed", "command", "device")


def fmt_accs(values):
    return "/".join(f"{v:.2f}" for v in values)


def median_epoch_seconds(m):
    """Median seconds per epoch: robust to an epoch slowed by other work on the machine; the mean is in the JSON."""
    seconds = sorted(h["seconds"] for h in m["history"])
    middle = len(seconds) // 2
    return seconds[middle] if len(seconds) % 2 else (seconds[middle - 1] + seconds[middle]) / 2


def step_rows(results):
    """One row per step that has a complete (non-smoke) run."""
    rows = []
    for step in STEPS:
        m = load_json(Path(results) / step / "metrics.json", METRICS_KEYS)
        if not m or m.get("subset"):
            continue
        rows.append(m)
    return rows


def steps_figure(rows):
    """The whole story in one picture: every step's test accuracy per epoch, its parameter count in the legend."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for m in rows:
        epochs = [h["epoch"] for h in m["history"]]
        ax.plot(epochs, [h["test_acc"] for h in m["history"]], marker="o", markersize=3,
                label=f"{m['model']}: {m['params']:,} params")
    target = max(m["targets"]["min_test_acc"] for m in rows)
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"{target:.2f} % target")
    low = min(min(h["test_acc"] for h in m["history"][1:]) for m in rows if len(m["history"]) > 1)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", ylim=(max(low - 0.1, 97.0), 99.8),
           title="Every step's test accuracy per epoch")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    return fig


def steps_table(rows, links=True):
    head = ("| step | params | RF | test acc, last 3 epochs (%) | best train acc (%) | epochs | s/epoch (median) "
            "| training time | device | verdict | original write-up (params, test %) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for m in rows:
        name = f"[{m['model']}](results/{m['model']}/)" if links else m["model"]
        verdict = "PASS" if m["passed"] else "FAIL"
        params, acc = ORIGINAL[m["model"]]
        lines.append(f"| {name} | {m['params']:,} | {m['receptive_field']} | {fmt_accs(m['last_test_accs'])} "
                     f"| {m['best_train_acc']:.2f} | {m['epochs']} | {median_epoch_seconds(m):.1f} "
                     f"| {m['train_seconds'] / 60:.1f} min | {m['device']} "
                     f"| {verdict} | {params}, {acc} |")
    return "\n".join(lines)


def seeds_run(folder):
    """(seeds.json, [each seed's metrics.json]) of the --seeds run in `folder`; None where it has not completed, or
    is a smoke run on a subset."""
    summary = load_json(Path(folder) / "seeds.json", SEEDS_KEYS)
    if not summary:
        return None
    runs = [load_json(Path(folder) / "seeds" / f"seed-{r['seed']}" / "metrics.json", METRICS_KEYS)
            for r in summary["seeds"]]
    if not runs or any(m is None or m.get("subset") for m in runs):
        return None
    return summary, runs


def run_settings(config):
    """What a run did, from the settings it recorded (its metrics.json's config, or what a command means:
    settings_meant_by) as one flat dict, its net's arguments as net.NAME, and any setting it did not record at
    SETTINGS_OFF."""
    config = json.loads(json.dumps(config))
    net = config.pop("net_kwargs", None) or {}
    return {**SETTINGS_OFF, **{key: value for key, value in config.items() if key not in ("device", "subset")},
            **{f"net.{key}": value for key, value in net.items()}}


def differences(a, b):
    """The settings in which two run_settings differ, their seed aside."""
    return sorted(key for key in a.keys() | b.keys()
                  if key != "seed" and a.get(key, SETTINGS_OFF.get(key)) != b.get(key, SETTINGS_OFF.get(key)))


ACTIVATION_KINDS = {nn.ReLU: "relu", nn.LeakyReLU: "leaky", nn.SiLU: "silu"}


def net_kinds(net):
    """The kind of batch norm and of activation `net` is built with, as runs recorded them (bn_affine, activation),
    where it has one of each: a step's net may build them in, with no flag to say so."""
    norms = {"channel" if m.affine else "layer" if list(m.parameters(recurse=False)) else "none"
             for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    acts = {("prelu" if m.num_parameters == 1 else "prelu-channel") if isinstance(m, nn.PReLU)
            else ACTIVATION_KINDS[type(m)] for m in net.modules() if isinstance(m, (nn.PReLU, *ACTIVATION_KINDS))}
    return {**({"bn_affine": norms.pop()} if len(norms) == 1 else {}),
            **({"activation": acts.pop()} if len(acts) == 1 else {})}


@lru_cache(maxsize=None)
def made_today(script, flags):
    """(run_settings, parameters) of a run of `python SCRIPT FLAGS` (a tuple) with today's code; None where today's
    parser refuses the flags (a retired flag, a net no script builds now)."""
    step = Path(script).stem
    settings = settings_meant_by(list(flags), importlib.import_module(step).DEFAULTS)
    if settings is None:
        return None
    net = net_of(step, list(flags))
    return {**run_settings(settings), **net_kinds(net)}, count_params(net)


def not_made_today(script, flags, runs):
    """The settings in which `runs` (metrics.json each) differ from what `python SCRIPT FLAGS` makes with today's code
    ("parameters" where the nets differ in size): [] where today's code makes them again, or where they recorded no
    settings to tell; ["its flags"] where today's parser refuses the flags."""
    today = made_today(script, tuple(flags))
    if today is None:
        return ["its flags"]
    settings, params = today
    differ = set()
    for m in runs:
        if m.get("config"):
            # the kinds read off today's net count where the run recorded them, or recorded no fingerprint of its net;
            # with one, the fingerprint tells the nets apart (a step's net builds them in, with no setting for them)
            fingerprinted = bool((m.get("code") or {}).get("fingerprint"))
            today_settings = {key: value for key, value in settings.items()
                              if key not in ("activation", "bn_affine") or key in m["config"] or not fingerprinted}
            differ |= set(differences(run_settings(m["config"]), today_settings))
            differ |= {"parameters"} if m["params"] != params else set()
    return sorted(differ)


def row_figures(made, base=None):
    """A table row's figures from a --seeds run `made` (seeds_run), its Δ against the --seeds run `base` over the same
    seeds (None where `base` lacks one of them)."""
    summary, runs = made
    trained = completed_runs(runs)  # a seed whose loss became NaN counts as not met, and has no accuracy to average
    seeds = [r["seed"] for r, m in zip(summary["seeds"], runs) if m in trained]  # the Δ's; seed_list names all
    lasts = [a for m in trained for a in m["last_test_accs"]]
    target = runs[0]["targets"]["min_test_acc"]
    final = statistics.mean(m["final_test_acc"] for m in trained)
    base_finals = base and {r["seed"]: m["final_test_acc"] for r, m in zip(base[0]["seeds"], base[1])}
    delta = (round(final - statistics.mean(base_finals[s] for s in seeds), 3)
             if base_finals and all(base_finals.get(s) is not None for s in seeds) else None)
    return dict(params=runs[0]["params"], seeds=len(runs), seed_list=[r["seed"] for r in summary["seeds"]],
                met=sum(m["passed"] is True for m in runs),
                final_test_acc=round(final, 3), last3_mean=round(statistics.mean(lasts), 3), last3_min=min(lasts),
                gap=round(min(lasts) - target, 2), delta=delta,
                final_test_loss=round(statistics.mean(m["history"][-1]["test_loss"] for m in trained), 5),
                final_train_acc=round(statistics.mean(m["history"][-1]["train_acc"] for m in trained), 2),
                device=runs[0]["device"], command=summary["command"])


def under(results, folder):
    """`folder`'s path under results/, as SEEDS_USE names it."""
    return Path(folder).relative_to(results).as_posix()


def ablation_rows(results, step="model3"):
    """The table `make ablation STEP=...` makes: "full" (the step's own --seeds run), then each row of
    ABLATION_ROWS, from its --seeds run (seeds.json and each seed's metrics.json), measured only where its runs are
    what its flags make with today's code; [] where no row is measured."""
    full = seeds_run(Path(results) / step)
    full_today = bool(full) and not not_made_today(f"{step}.py", (), full[1])
    rows = []
    for name, flags in {"full": "", **ABLATION_ROWS[step]}.items():
        folder = Path(results) / (step if name == "full" else f"{ABLATION_DIRS[step]}/{name}")
        row = dict(variant=name, change=ABLATIONS[name], flags=flags or "(defaults)", folder=str(folder),
                   measured=False)
        made = full if name == "full" else seeds_run(folder)
        earlier = made and not_made_today(f"{step}.py", flags.split(), made[1])
        if made and not earlier:
            row.update(measured=True, **row_figures(made, full if full_today else None),
                       commit=made_at(folder / "seeds.json"))
        elif made:
            row.update(earlier=earlier, command=made[0]["command"])
        rows.append(row)
    return rows if any(row["measured"] for row in rows) else []


def history_rows(results, step):
    """The step's table of rows that today's code does not make again (HISTORY), from their committed runs: the first
    row its recipe unchanged, every Δ against it over the same seeds, each row with the command that made it and the
    commit it was made at (None: today's code makes it). [] where it has no row but its first."""
    spec = HISTORY.get(step)
    if not spec:
        return []
    rows, base = [], None
    for i, (name, row) in enumerate(spec["rows"].items()):
        folder = Path(results) / (step if name == "full" else f"{spec['folder']}/{name}")
        made = seeds_run(folder)
        base = made if i == 0 else base
        if made:
            rows.append(dict(variant=name, change=row["change"], sets=list(row["sets"]), folder=str(folder),
                             measured=True, commit=made_at(folder / "seeds.json"), **row_figures(made, base)))
    return rows if len(rows) > 1 else []


def ablation_table(rows, history=False):
    """A step's ablation table: the flags of each row (`make ablation`'s) or, in a history table, the commit it was
    made at; a row not measured with today's code says so."""
    first = rows[0]["variant"]
    lines = [f"| change | {'made at' if history else 'flags'} | params | seeds met | final test acc, mean (%) "
             f"| last 3 epochs: mean (%) | min (%) | gap of the min to 99.40 | Δ final vs {first}, same seeds "
             "| final test loss | final train acc (%) | device |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        second = (r["commit"] or "today's code") if history else f"`{r['flags']}`"
        if not r["measured"]:
            lines.append(f"| {r['change']} | {second} | — | not yet measured on today's recipe |" + " — |" * 8)
            continue
        delta = f"{r['delta']:+.2f}" if r["delta"] is not None else "n/a"
        lines.append(f"| {r['change']} | {second} | {r['params']:,} | {r['met']}/{r['seeds']} "
                     f"| {r['final_test_acc']:.2f} "
                     f"| {r['last3_mean']:.2f} | {r['last3_min']:.2f} | {r['gap']:+.2f} | {delta} "
                     f"| {r['final_test_loss']:.4f} | {r['final_train_acc']:.2f} | {r['device']} |")
    return "\n".join(lines)


def devices_sentence(rows):
    """Which device each measured row ran on, and what that means for a Δ between two devices."""
    by_device = {}  # by the kind of device, whatever its threads
    for r in rows:
        if r["measured"]:
            by_device.setdefault(re.sub(r",? \d+ threads?", "", r["device"]), []).append(r["variant"])
    if len(by_device) == 1:
        return f"Every row ran on the same kind of device, {next(iter(by_device))}."
    return ("The rows ran on " + "; ".join(f"{device} ({', '.join(names)})" for device, names in by_device.items())
            + ": a row on another kind of device than its first row's has in its Δ the difference of the devices "
            "(the same seed does not train to the same numbers on both), as well as its change.")


def how_made(results, r):
    """One line: the command that made a row's --seeds run, and the commit where today's code does not make it."""
    where = under(results, r["folder"])
    if r.get("commit"):
        return (f"{r['variant']}: `git checkout {r['commit']}`, then `{r['command']}` (made at commit {r['commit']}; "
                f"its runs are now in results/{where})")
    return f"{r['variant']}: `{r['command']}`, today's code (results/{where})"


def ablation_text(results, step, rows):
    """The table `make ablation STEP=...` makes, with what it shows and where each row's runs came from."""
    n, count = step[-1], ABLATION_SEEDS[step]
    full = rows[0]
    parts = [ablation_table(rows), "",
             f"Each row after the first is one change to step {n}'s recipe of today, over {count} seeds: "
             f"`make ablation STEP={step}` runs `python {step}.py FLAGS --seeds {count} --out "
             f"results/{ABLATION_DIRS[step]}/NAME` for each (the Makefile's ABLATIONS_{step}) and rewrites this "
             f"table. The first row is the step's own run (`make seeds STEP={step}"
             + (f" N={full['seeds']}" if full.get("seeds") else "") + "`"
             + (f", `{full['command']}`" if full["measured"] else "") + "), and each Δ is against its mean over the "
             "same seeds as the row. 'last 3 epochs' pools the last 3 test accuracies of every seed. The test loss and "
             "the train accuracy (counted on the batches as trained) show what each ingredient does to over-fitting. "
             + devices_sentence(rows)]
    for r in rows:
        if r["measured"] and r.get("commit"):
            parts += ["", f"Row {r['variant']} (results/{under(results, r['folder'])}) was made at commit "
                      f"{r['commit']} by `{r['command']}` (`git checkout {r['commit']}`, then that command, makes it "
                      f"again); its runs recorded the settings that `{r['flags']}` means today, so `make ablation "
                      f"STEP={step}` makes it again too."]
        elif r.get("earlier"):
            parts += ["", f"Row {r['variant']}: the runs in results/{under(results, r['folder'])} were made with "
                      f"another recipe than `{r['flags']}` means today ({', '.join(r['earlier'])} differ), so the "
                      f"row is not shown; `make ablation STEP={step}` measures it."]
    parts += ["", *(f"Row {r['variant']} (`{r['flags']}`), further: {line}\n" for r in rows if r["measured"]
                    for line in later_seeds(results, ABLATION_DIRS[step], f"{r['variant']}-seeds"))]
    return "\n".join(parts).rstrip() + "\n"


def history_text(results, step, rows):
    """The step's history table (HISTORY), with what it shows and how each row was made."""
    spec = HISTORY[step]
    parts = [ablation_table(rows, history=True), "",
             spec["caption"] + " Each row was made by the command below, at the commit shown where today's code "
             "does not make it again (`git checkout COMMIT`, then the command, makes it; its --out names the folder "
             "it had then). "
             + devices_sentence(rows), "", *(f"- {how_made(results, r)}" for r in rows), ""]
    parts += [f"Row {r['variant']}, further: {line}\n" for r in rows
              for line in later_seeds(results, under(results, Path(r["folder"]).parent), f"{r['variant']}-seeds")]
    return "\n".join(parts).rstrip() + "\n"


def ablation_section(results, step):
    """RESULTS.md's ablation of a step: the table `make ablation` makes, then the step's history table."""
    rows, history = ablation_rows(results, step), history_rows(results, step)
    parts = [ablation_text(results, step, rows) if rows else f"_Not run yet: `make ablation STEP={step}`._"]
    if history:
        parts += ["", f"### {HISTORY[step]['title']}", "", history_text(results, step, history)]
    return "\n".join(parts).rstrip()


SEEDS_KEYS = ("seeds", "count", "met_target", "mean_final_test_acc", "std_final_test_acc", "command", "device")


def seeds_headline(s):
    """The evidence for a step in one sentence: pass rate against the step's seed rule (as its seeds.json records
    it), then the spread of the final accuracy."""
    trained = [r for r in s["seeds"] if not r.get("diverged")]
    finals = [r["final_test_acc"] for r in trained] or [s["mean_final_test_acc"]]
    lowest_last3 = min((r["last3_min_test_acc"] for r in trained), default=None)
    return (f"**{s['met_target']}/{s['count']} seeds met the target** ({seed_rule_verdict(s)}); final test accuracy "
            f"**{s['mean_final_test_acc']:.3f} ± {s['std_final_test_acc']:.3f} %** (mean ± std{diverged_words(s)}), "
            "lowest "
            f"{min(finals):.2f} %" + (f", lowest of any last-3 epoch {lowest_last3:.2f} %" if lowest_last3 else "")
            + f" (`{s['command']}`, {s['device']}" + "".join(f"; {words}" for words in [code_words(
                s.get("code"), s["command"])] if words) + ")")


def seeds_section(results, step="model3"):
    s = load_json(Path(results) / step / "seeds.json", SEEDS_KEYS)
    if not s:
        return None
    table = Path(results) / step / "seeds.md"
    return (seeds_sentence(results, Path(results) / step, s) + "\n\n" + (table.read_text() if table.exists() else "")
            + "".join(f"\n{line}\n" for line in later_seeds(results, step)))


def seeds_sentence(results, folder, s):
    """A --seeds run in one sentence: its seeds and what they were used for (SEEDS_USE), its headline, and the commit
    it was made at where today's code does not make it again (its made_at)."""
    seeds = [r["seed"] for r in s["seeds"]] or [1]
    where = under(results, folder)
    use = SEEDS_USE.get(where)
    commit = made_at(Path(folder) / "seeds.json")
    return (f"Seeds {min(seeds)}–{max(seeds)}" + (f", {use}" if use else "") + f": {seeds_headline(s)}."
            + (f" Made at commit {commit} (`git checkout {commit}`, then that command, makes it again); its runs "
               f"are in results/{where}." if commit else ""))


def later_seeds(results, step, runs="seeds"):
    """Runs over further seeds (results/STEP/seeds-A-B/, `--seed A --seeds N --out ...`; an ablation row's beside
    its folder, RUNS-seeds-A-B), a sentence each that says what those seeds were used for (SEEDS_USE)."""
    return [seeds_sentence(results, path.parent, load_json(path, SEEDS_KEYS))
            for path in sorted(Path(results, step).glob(f"{runs}-*/seeds.json"))]


def search_section(results, step="model3", folder="search", name="search"):
    """The recipe search of a step on its validation split, as lab/search.py wrote it: its caption (the command),
    then, where it names the commit its runs were made at, how to run it again, then its table."""
    table = Path(results) / step / folder / f"{name}.md"
    if not table.exists():
        return None
    search = load_json(table.with_suffix(".json"), ("step", "recipes"))  # a damaged search.json stops the report too
    text = table.read_text()
    commit = search.get("made_at")
    if not commit or not search.get("command") or "\n\n" not in text:
        return text
    caption, rest = text.split("\n\n", 1)
    return f"{caption}\n\n{made_at_line(commit, 'the command above')}\n\n{rest}"


def made_at_line(commit, command):
    """How a table of runs made at `commit` is made again: `git checkout COMMIT`, then `command`."""
    if commit in BEFORE_LAB:
        return (f"Made at commit {commit}, before the drivers moved into lab/: `git checkout {commit}`, then "
                f"{command} with `python search.py` for `python -m lab.search`, runs it again.")
    return f"Made at commit {commit}: `git checkout {commit}`, then {command}, runs it again."


FRONTIER_KEYS = ("rows", "seeds", "epochs", "command", "device")


LINES = (("met", "99.40 % (the target)"), ("met_club", "99.0 %"))  # a frontier row's count of seeds that held each


def frontier_summary(results):
    """make frontier's results and, in small tables computed from its rows, what the picture teaches: the smallest
    net of each design on each line, the 99 % club, our nets beside the public points, and step 4's layout against
    step 3's."""
    f = load_json(Path(results) / "frontier" / "frontier.json", FRONTIER_KEYS)
    if not f or f.get("subset"):
        return None
    done = [r for r in f["rows"] if r["completed"]]
    parts = [smallest_held_table(done)] if done else []
    incomplete = [r for r in f["rows"] if r["completed"] < r["seeds"]]
    if incomplete:
        parts.append("Not every seed completed at " + ", ".join(
            f"{r['design']} at {r['params']:,} parameters ({r['completed']} of {r['seeds']} seeds)" for r in incomplete)
            + ": a point held a line only where each of its seeds completed and met it.")
    club = next((r for r in done if r.get("flags") == f.get("club")), None)
    if club:
        parts.append(club_sentence(club, f.get("club_share", 0.9)))
    if f.get("public"):
        parts.append(public_table(f["public"], done))
    gains = design_gains(done)
    if gains:
        parts.append("Step 4's design against step 3's at the same parameter count (step 3's mean final accuracy "
                     "interpolated on the log axis)" + (": step 4's layout pays most where parameters are scarcest."
                                                        if gains[0][1] > gains[-1][1] else ".") + "\n\n"
                     + "| parameters | " + " | ".join(f"{p:,}" for p, _ in gains) + " |\n"
                     + "|---|" + "---|" * len(gains) + "\n"
                     + "| step 4 − step 3 (points) | " + " | ".join(f"{g:+.2f}" for _, g in gains) + " |")
    return f, "\n\n".join(parts)


def held_on_every_seed(row, key):
    """Whether each of a frontier point's seeds completed and met the line that `key` counts ("met", "met_club"):
    a point with a seed that did not complete has not shown that it holds."""
    return row["completed"] == row["seeds"] and row.get(key) == row["seeds"]


def smallest_held(rows, key, design):
    """The parameters of the smallest net of `design` (a line of the picture: model3, model4, club) that held the
    line `key` counts on every one of its seeds; None where none did."""
    return min((r["params"] for r in rows if r.get("line", r["design"]) == design and held_on_every_seed(r, key)),
               default=None)


def smallest_held_table(rows):
    """The smallest net of each design that held each line on each of its last 3 epochs, on every one of its
    seeds."""
    designs = [d for d in ("model3", "model4", "club") if any(r.get("line", r["design"]) == d for r in rows)]
    names = dict(model3="step 3's design", model4="step 4's design", club="the club's layout")
    lines = ["The smallest net of each design that held a line on each of its last 3 epochs, on every one of its "
             "seeds:", "", "| line | " + " | ".join(names[d] for d in designs) + " |", "|---|" + "---|" * len(designs)]
    for key, line in LINES:
        cells = [smallest_held(rows, key, design) for design in designs]
        lines.append(f"| {line} | " + " | ".join(f"{c:,} parameters" if c else "none of its sizes" for c in cells)
                     + " |")
    return "\n".join(lines)


def club_sentence(row, share=0.9):
    """The 99 % club's net and how its seeds did; `share`: the seeds that must hold (frontier.json's club_share)."""
    needed = seeds_needed(share, row["seeds"])
    held = row["met_club"] >= needed  # a seed that did not complete did not hold
    unfinished = row["seeds"] - row["completed"]
    return (f"**The 99 % club**, the smallest net found to hold 99.0 % (chosen on the validation split, "
            f"results/club): `python {row['design']}.py {' '.join(row['flags'])}`, {row['params']:,} parameters and "
            f"{row['macs']:,} multiply-adds per image. {row['met_club']} of its {row['seeds']} seeds held 99.0 % "
            f"on each of their last 3 epochs" + (f" ({unfinished} did not complete)" if unfinished else "")
            + f" (final test accuracy {row['mean_final_test_acc']:.2f} % on average, "
            f"lowest of any last-3 epoch {row['min_last3_test_acc']:.2f} %): "
            + ("it holds the line." if held else f"not the {needed} of its {row['seeds']} that holding the line asks."))


def public_table(public, rows):
    """At each public point's accuracy, the smallest of our nets whose every seed held it on each of its last 3
    epochs."""
    lines = ["Each public point is one number from runs its author picked; beside it, the smallest of our nets whose "
             "every seed held that accuracy on each of its last 3 epochs:", "",
             "| public point | its parameters | its accuracy | how it was picked | ours | ours / theirs |",
             "|---|---|---|---|---|---|"]
    for params, acc, who, how in public:
        ours = min((r["params"] for r in rows if r["completed"] == r["seeds"] and r["min_last3_test_acc"] >= acc),
                   default=None)
        lines.append(f"| {who} | {params:,} | {acc} % | {how} | "
                     + (f"{ours:,} | {ours / params:.2f}× |" if ours else "none of ours | — |"))
    return "\n".join(lines)


# The published nets of public.py, each trained over ten seeds under our rule: results/public/NET/RECIPE is
# `python public.py --net NET [--lr RATE] --seeds 10 --jobs 2 --out results/public/NET/RECIPE`.
PUBLIC_RECIPES = {"step4": "step 4's recipe", "own": "its author's recipe"}


def public_cell(made, line, recipe):
    """A --seeds run of a published net, in a cell: how many seeds held its line, by the rule, and the spread; under
    step 4's recipe its peak rate, under its author's its length."""
    if not made:
        return "not run yet"
    summary, runs = made
    finals = [m["final_test_acc"] for m in completed_runs(runs)]
    lowest = min(a for m in runs for a in m["last_test_accs"])
    needed = seeds_needed(summary.get("min_seed_share", 0.9), len(runs))
    words = code_words(summary.get("code"), summary["command"])
    return (f"**{summary['met_target']}/{len(runs)}** held {line:.2f} % ({'the rule met' if summary['met_target'] >= needed else 'the rule not met'}); "
            f"final {statistics.mean(finals):.2f} ± {statistics.stdev(finals) if len(finals) > 1 else 0:.2f} %"
            f"{diverged_words(summary)}, lowest last-3 epoch {lowest:.2f} % ("
            + (f"peak rate {runs[0]['config']['lr']:g}" if recipe == "step4" else f"{runs[0]['config']['epochs']} epochs")
            + ")" + (f"; {words}" if words else ""))


def ours_at(results, line):
    """(parameters, in words) of our smallest net that holds `line` under the rule: step 4 at 99.40 %, the 99 % club
    at 99.0 %; (None, why) before it has run."""
    if line >= 99.40:
        made = seeds_run(Path(results) / "model4")
        if not made:
            return None, "step 4: not run yet"
        summary, runs = made
        return runs[0]["params"], (f"step 4, {runs[0]['params']:,}: {summary['met_target']}/{summary['count']} "
                                   f"(seeds 1–10)")
    frontier = load_json(Path(results) / "frontier" / "frontier.json", FRONTIER_KEYS)
    club = next((r for r in (frontier or {}).get("rows", []) if r.get("line") == "club"
                 and r["seeds"] == frontier.get("club_seeds")), None)
    if not club:
        return None, "the 99 % club: not run yet"
    return club["params"], f"the 99 % club, {club['params']:,}: {club['met_club']}/{club['seeds']}"


def public_standing(results):
    """Where step 4 and the club stand against the published nets trained under one rule, in a sentence; None
    before any of them has run."""
    said, own = [], False
    for name, published in public.NETS.items():
        made = {recipe: seeds_run(Path(results) / "public" / name / recipe) for recipe in PUBLIC_RECIPES}
        if not any(made.values()):
            continue
        own = own or bool(made["own"])
        ours, words = ours_at(results, published.line)
        held = []
        for recipe, run in made.items():
            if run:
                summary, runs = run
                how = (f"at a peak rate of {runs[0]['config']['lr']:g}" if recipe == "step4" else
                       f"under its author's recipe ({runs[0]['config']['epochs']} epochs)")
                held.append((f"{summary['met_target']} of its {len(runs)} seeds {how}",
                             summary["met_target"] >= seeds_needed(0.9, len(runs))))
        beats = ours and published.params < ours and any(met for _, met in held)
        said.append(f"{published.source}'s {published.params:,}-parameter net held {published.line:.2f} % on "
                    + " and on ".join(words_ for words_, _ in held) + f" (published: {published.accuracy:.2f} %), "
                    f"where {words}" + (" — **it holds our rule with fewer parameters than ours: the number to beat**"
                                        if beats else ""))
    if not said:
        return None
    return ("The published small nets, trained here under the same rule (step 4's recipe, its peak rate chosen on "
            "the validation split for a net without batch norm" + (", and their authors' own" if own else "")
            + "; ten seeds, each of the last 3 epochs judged): " + "; ".join(said)
            + ". Every net and recipe: [the lab](lab/README.md#the-public-nets-under-our-rule).")


def public_section(results):
    """The published nets over ten seeds under our rule, each beside our smallest net at its line, and the peak
    rates chosen on validation for the two without batch norm."""
    lines = ["| net | parameters | published | under step 4's recipe, 10 seeds | under its author's recipe, 10 seeds "
             "| ours at its line: parameters, seeds that held |", "|---|---|---|---|---|---|"]
    beaten = []
    for name, published in public.NETS.items():
        cells, (ours, words) = [], ours_at(results, published.line)
        for recipe in PUBLIC_RECIPES:
            made = seeds_run(Path(results) / "public" / name / recipe)
            cells.append(public_cell(made, published.line, recipe))
            if made and made[0]["met_target"] >= seeds_needed(0.9, len(made[1])):
                beaten.append((published, PUBLIC_RECIPES[recipe], ours, words))
        lines.append(f"| {published.source} | {published.params:,} | {published.accuracy:.2f} % ({published.how}) | "
                     + " | ".join(cells) + f" | {words} |")
    text = ("Each published net, written from its author's description (`public.py`, its parameter count the "
            "published one), trained over ten seeds and judged by our rule: each of the last 3 epochs at its line "
            "(99.40 % for woolly-of-cv's, 99.0 % for the others), on 9 seeds in 10.\n\n" + "\n".join(lines)
            + "\n\nEach author's recipe, as far as it runs here (`public.OWN_RECIPES`; public.py says what differs "
            "from theirs), is `python public.py --net NET FLAGS --seeds 10 --jobs 2 --out results/public/NET/own`:\n\n"
            + "\n".join(f"- {name}: `{flags}`" for name, flags in public.OWN_RECIPES.items()))
    for published, recipe, ours, words in beaten:
        holds = (f"{published.source}'s net holds our rule at {published.line:.2f} % under {recipe} with "
                 f"{published.params:,} parameters")
        text += (f"\n\n**{holds}, fewer than our {ours:,}: the number to beat.**" if ours and published.params < ours
                 else f"\n\n{holds} (ours: {words}).")
    searches = [search_section(results, "public", "search", name) for name in public.NETS]
    if any(searches):
        text += ("\n\nThe peak rate of step 4's recipe for the nets without batch norm, chosen on the validation "
                 "split (results/public/search-recipes.txt):\n\n" + "\n".join(s for s in searches if s))
    return text


def design_gains(rows):
    """[(params, step 4's mean final accuracy minus step 3's at that count)] for step 4's nets inside step 3's range,
    step 3's accuracy interpolated linearly in log(params) between its two nearest nets."""
    three = sorted((r["params"], r["mean_final_test_acc"]) for r in rows if r["design"] == "model3")
    gains = []
    for r in sorted((r for r in rows if r["design"] == "model4"), key=lambda r: r["params"]):
        for (p0, a0), (p1, a1) in zip(three, three[1:]):
            if p0 <= r["params"] <= p1:
                t = math.log(r["params"] / p0) / math.log(p1 / p0)
                gains.append((r["params"], round(r["mean_final_test_acc"] - (a0 + t * (a1 - a0)), 2)))
                break
    return gains


def frontier_section(results):
    found = frontier_summary(results)
    if not found:
        return None
    return ((Path(results) / "frontier" / "frontier.md").read_text()
            + "\n![parameters against test accuracy](results/frontier/frontier.png)\n\n" + found[1]
            + frontier_recipe_note(results))


def settings_today(command):
    """The settings a step's recorded command `python STEP.py FLAGS` means under the step's DEFAULTS of today."""
    script, *flags = shlex.split(command)[1:]
    return settings_meant_by(flags, importlib.import_module(Path(script).stem).DEFAULTS)


def recipe_changes(metrics):
    """[(setting, as the run was made, as its recorded command makes it today)] for each setting in which the two
    differ (the net's own, as widths, first; batch norm's and the activation's kind as today's net builds them);
    [] where the command makes the run again, where the run recorded no settings to tell, or where today's parser
    refuses the command (a retired flag: there is nothing today to compare it with)."""
    today = metrics.get("config") and settings_today(metrics["command"])
    if not today or not code_words(metrics.get("code"), metrics["command"]):  # today's code: made again
        return []
    script, *flags = shlex.split(metrics["command"])[1:]
    try:
        kinds = net_kinds(net_of(Path(script).stem, flags))
    except (Exception, SystemExit):
        kinds = {}
    then, now = run_settings(metrics["config"]), {**run_settings(today), **kinds}
    return [(key.removeprefix("net."), then.get(key, SETTINGS_OFF.get(key)), now.get(key, SETTINGS_OFF.get(key)))
            for key in sorted(differences(then, now), key=lambda key: (not key.startswith("net."), key))]


def frontier_recipe_note(results):
    """Which design's frontier points (frontier.json's, not any folder left in runs/) were trained with a recipe its
    step has changed since, and how."""
    frontier = load_json(Path(results) / "frontier" / "frontier.json", FRONTIER_KEYS)
    notes = []
    for design in ("model3", "model4"):
        row = next((r for r in frontier["rows"] if r["design"] == design and r["completed"]), None) if frontier else None
        point = row and Path(results) / "frontier" / "runs" / f"{design}-{row['params']}"
        run = point and min(point.glob("seed-*/metrics.json"), default=None)
        metrics = run and load_json(run, ("command", "config"))
        changed = metrics and recipe_changes(metrics)
        if changed:
            notes.append(f"step {design[-1]}'s design was trained with "
                         + ", ".join(f"{key} {old}" for key, old, _ in changed) + ", where its recipe today has "
                         + ", ".join(f"{new}" for _, _, new in changed))
    if not notes:
        return ""
    return ("\n\nThese points are as measured then: " + "; ".join(notes) + ". `make frontier` trains them again with "
            "today's recipes (a completed run is reused only where its command, its settings and its code's "
            "fingerprint are today's).")


def bench_table(b):
    lines = ["| pipeline | device | samples/s | s/epoch | peak memory (MB) |", "|---|---|---|---|---|"]
    lines += [f"| {r['pipeline']} | {b['device']} | {r['samples_per_s']:,.0f} | {r['epoch_s']:.2f} "
              f"| {r['peak_memory_mb']:,.0f} |" for r in b["pipelines"]]
    return "\n".join(lines)


def rounds_text(b):
    """How a row's rate was chosen, and the rounds' spread, which says how far the ratio can be trusted."""
    rows = b["pipelines"]
    if b.get("repeats", 1) < 2 or "rounds_samples_per_s" not in rows[0]:
        return ", one round"
    nets = {"model3": "step 3", "model4": "step 4", "club": "the club"}
    spreads = "; ".join(row["pipeline"].split(" (")[0] + (f", {nets[row['net']]}" if row.get("net") in nets else "")
                        + f" {min(row['rounds_samples_per_s']):,.0f}–{max(row['rounds_samples_per_s']):,.0f}"
                        for row in rows)
    return f", the median of {b['repeats']} interleaved rounds (samples/s over the rounds: {spreads})"


def speedups_text(b):
    """The reference's time over the project's: for each net of a bench that times several, else model3's."""
    if not b.get("speedups"):
        return f"**{b['speedup']:.1f}×**"
    names = {"model3": "step 3's net", "model4": "step 4's net", "club": "the club's net"}
    return ", ".join(f"{names[net]} **{ratio:.1f}×**" for net, ratio in b["speedups"].items())


def profile_table(profile):
    """Where a training step's time goes (lab/bench.py's where_the_time_goes): each net's costliest operators."""
    lines = ["Where a training step's time goes (torch.profiler, batch 128; the operators that took the most of it, "
             "each on one input shape):", "", "| net | operator | input shapes | ms a step | share of the step |",
             "|---|---|---|---|---|"]
    lines += [f"| {net} | `{row['operator']}` | {row['shapes']} | {row['ms']:.2f} | {100 * row['share']:.0f} % |"
              for net, rows in profile.items() for row in rows]
    return "\n".join(lines) + "\n\n"


def bench_runs(results):
    """Every bench JSON in results/ as (its file name, its contents): `make bench`'s own first, then the others in
    the order they ran."""
    runs = [(path.name, load_json(path, ("device", "pipelines", "speedup", "steps", "warmup")))
            for path in sorted(Path(results).glob(BENCH_GLOB))]
    return sorted((r for r in runs if r[1]), key=lambda r: (r[0] != "bench.json", r[1].get("date", ""), r[0]))


def evaluation_sentence(rows):
    """What evaluating a CPU's batches in chunks bought (lab/bench.py's evaluation_rates)."""
    chunk = rows[0]["chunk"]
    rates = "; ".join(f"{'model3' if r['net'] == 'model3' else 'the club net'} ({r['params']:,} parameters) "
                      f"{r['whole_images_per_s']:,} images/s whole, {r['chunked_images_per_s']:,} in chunks: "
                      f"**{r['ratio']:.2f}×**" for r in rows)
    return (f"Evaluating the test set's batches of 1000 in chunks of {chunk} images (common.evaluate on a CPU), "
            f"every logit the same to the bit: {rates}.")


def bench_section(results, latest_only=False):
    """Every bench run's table and what it measured (RESULTS.md); with `latest_only`, each device's latest alone
    (the lab's page: the older ones measured code that has since changed, and RESULTS.md keeps them)."""
    sections, by_device = [], {}
    runs = bench_runs(results)
    if latest_only:
        latest = {}
        for run in runs:
            device, date = run[1]["device"], run[1].get("date", "")
            if device not in latest or date > latest[device][1].get("date", ""):
                latest[device] = run
        runs = [run for run in runs if latest[run[1]["device"]] is run]
    for name, b in runs:
        by_device.setdefault(b["device"], []).append(b)
        commit = b.get("made_at")
        memory = ("peak allocated GPU memory" if b["device"].startswith("cuda") else
                  "the peak resident memory of the row's own process (lab/bench.py runs each pipeline in a fresh one; "
                  "the reference's DataLoader workers are not counted), data loading and torch's own libraries "
                  "included")
        text = ((made_at_line(commit, f"`{b['command']}`") + "\n\n" if commit and b.get("command") else "")
                + bench_table(b) + f"\n\n`{b.get('command', 'python -m lab.bench').strip()}` on {b['device']}, "
                f"{b.get('date', 'undated')}, {b['steps']} timed steps per pipeline after {b['warmup']} warm-up "
                f"steps" + rounds_text(b) + ": speedup vs reference " + speedups_text(b) + f". Memory is {memory}."
                + (f" {b['note']}" if b.get("note") else ""))
        rates = {row["pipeline"].split(" (")[0]: row["samples_per_s"] for row in b["pipelines"]}
        if "project, --precision bf16" in rates and "project" in rates:
            text += (f" With bf16 autocast the project's step ran at "
                     f"{rates['project, --precision bf16'] / rates['project']:.2f}× its fp32 rate here.")
        if "tiny" in rates and "project" in rates:  # a run of the code before --channels-last went has its row
            text += f" The 99 % club's net trained at {rates['tiny'] / rates['project']:.2f}× model3's rate" + (
                f", and {rates['tiny, --channels-last'] / rates['tiny']:.2f}× its own with --channels-last."
                if "tiny, --channels-last" in rates else ".")
        one = "tiny on 1 thread"
        if f"{one}" in rates and f"{one}, before" in rates:
            text += (f" On one thread, as a sweep runs it, the club's net trained at "
                     f"{rates[one] / rates[one + ', before']:.2f}× its rate before the speed work (its scale and "
                     f"shift in batch norm's own pass)")
            if f"{one}, the early layout" in rates and f"{one}, --channels-last" in rates:  # rows that went since
                text += (f", at {rates[one + ', the early layout'] / rates[one]:.2f}× that with the early layout and "
                         f"{rates[one + ', --channels-last'] / rates[one]:.2f}× with --channels-last")
            text += "."
        one_thread = [row for row in b["pipelines"] if row.get("kind") == "project-1-thread"]
        two_threads = [row for row in b["pipelines"] if row.get("kind") == "project" and one_thread
                       and row["net"] == one_thread[0]["net"]]
        if one_thread and two_threads:
            ratio = one_thread[0]["samples_per_s"] / two_threads[0]["samples_per_s"]
            text += (f" On 1 thread, as a sweep runs each of its runs, the club's net trained at {ratio:.2f}× its "
                     "rate on all of them" + (" (more than half: two runs at once, a thread each, train more a "
                                              "second than one on both)" if ratio > 0.5 else "") + ".")
        if b.get("evaluation"):
            text += " " + evaluation_sentence(b["evaluation"])
        for run in b.get("full_runs", []):
            setup = run["setup_seconds"]
            text += (f" `make {run['step']}` ({run['epochs']} epochs, training and per-epoch evaluation, the data "
                     f"already loaded) took **{run['train_seconds']:.1f} s**"
                     + (f" (+ {setup:.1f} s of one-time warm-up and graph recording)" if setup else "")
                     + f", final test accuracy {run['final_test_acc']:.2f} % ({run['verdict'].split(' ')[1]}), "
                     f"peak memory {run['peak_memory_mb']:,.0f} MB.")
        if b.get("model3_train_seconds") is not None:  # a bench of the code before full_runs
            setup = b.get("model3_setup_seconds")
            text += (f" model3's full 15-epoch run (training and per-epoch evaluation, data already loaded) took "
                     f"**{b['model3_train_seconds']:.1f} s**"
                     + (f" (+ {setup:.1f} s of one-time warm-up and graph recording, and compilation where the "
                        "run compiled)" if setup else "")
                     + f", final test accuracy {b['model3_final_test_acc']:.2f} % "
                     f"({b['model3_verdict'].split(' ')[1]}), peak memory {b.get('model3_peak_memory_mb', 0):,.0f} MB.")
        if b.get("profile"):
            text += "\n\n" + profile_table(b["profile"]).rstrip()
        sections.append(text)
    for device, runs in by_device.items():
        if len(runs) > 1:  # the spread between runs says how far one run's ratio can be trusted
            figures = lambda key, unit: ", ".join(f"{run[key]:.2f}" for run in runs) + unit  # noqa: E731
            sections.append(f"The {len(runs)} runs on {device} above: reference "
                            f"{figures('reference_epoch_s', ' s/epoch')}, project {figures('project_epoch_s', ' s/epoch')}"
                            "; speedup " + ", ".join(f"{run['speedup']:.1f}×" for run in runs) + ".")
    return "\n\n".join(sections) + "\n" if sections else None


def speed_trials_section(results):
    """Issue 42's speed trials (lab/speed_trials.py, gone since): each way tried against today's step."""
    t = load_json(Path(results) / "speed-trials.json", ("rows", "device", "command", "rounds", "steps"))
    if not t:
        return None
    names = {"today": "the step as it is", "split-prelu": "PReLU as ReLU plus the slope times min(x, 0)",
             "compared-max-pool": "the 2×2 max-pool from four strided views (the first maximum takes the gradient)",
             "torch.compile": "`torch.compile(common.train_step)`"}
    lines = ["| step | trial | ms a step (median) | × the step as it is | first update (s) | weights after 20 updates |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['step']} | {names.get(r['trial'], r['trial'])} | {r['ms_per_step']:.1f} "
              f"({min(r['rounds_ms']):.1f}–{max(r['rounds_ms']):.1f}) | {r['speedup']:.2f}× | {r['first_update_s']:.1f} | "
              f"{'the same to the bit' if r['same_weights'] else 'others'} |" for r in t["rows"]]
    commit = t.get("made_at")
    return ((made_at_line(commit, f"`{t['command']}`") + "\n\n" if commit else "")
            + f"Ways tried to make a training step cheaper on a CPU (issue 42): `{t['command']}` on {t['device']}, "
            f"{t.get('date', 'undated')}, batch 128, {t['steps']} steps a round, the trials of a step taking turns for "
            f"{t['rounds']} rounds (the median, and the rounds' range).\n\n" + "\n".join(lines))


NO_BATCHNORM = "model2-no-batchnorm"  # `python model2.py --no-batchnorm --out results/model2-no-batchnorm`


def batchnorm_section(results):
    """Step 2 with and without batch norm, and whether the write-up's claim (about 20 % without it) holds."""
    plain = load_json(Path(results) / "model2" / "metrics.json", METRICS_KEYS)
    without = load_json(Path(results) / NO_BATCHNORM / "metrics.json", METRICS_KEYS)
    if not plain or not without:
        return None
    rows = [steps_table([plain, without], links=False).splitlines()[i] for i in (0, 1, 2, 3)]
    rows[3] = rows[3].replace("| model2 |", "| model2 --no-batchnorm |", 1)
    rows[3] = rows[3].rsplit("|", 2)[0] + "| ~400k, about 20 (its claim) |"
    final = without["final_test_acc"]
    best = max(h["test_acc"] for h in without["history"])
    verdict = ("holds: without batch norm" if final < 30 else "does not hold here: without batch norm")
    return ("\n".join(rows) + f"\n\nThe write-up's claim that step 2 reaches only about 20 % without batch norm "
            f"{verdict} step 2 ended at {final:.2f} % (best epoch {best:.2f} %), against {plain['final_test_acc']:.2f} % "
            f"with it, same recipe and seed (`{without['command']}`, {without['device']})"
            + (f": batch norm is worth {plain['final_test_acc'] - final:.2f} points here, not the difference between "
               "learning and not" if final >= 30 else "") + ". (Compare the times only where the devices match.)")


def model4_search_parts(results):
    """Every round of step 4's search, each table under its heading (the rounds as RESULTS.md tells them)."""
    screen, layout3 = search_section(results, "model4", name="screen"), search_section(results, "model4",
                                                                                        "search-step3-layout")
    confirm = search_section(results, "model4")
    parts = []
    if screen or confirm:
        parts += ["Twenty designs on CPU: first each over one seed (the layout of rounds 1–4, `m4`: a strided 3×3 as "
                  "the transition and full 3×3s; then step 3's thinned under "
                  "5,000 parameters; bold marks each table's leader), then the leaders over three seeds. Then two "
                  "rounds on a GPU: the fourth, one change of recipe at a time and the closest widths; the fifth, "
                  "other layouts (`designs.py`: padded maps, max-pool, depthwise-separable 3×3s) — each over "
                  "three or four seeds, then its leaders over ten, where the choice is made.", "",
                  "### Round 1: the layout of rounds 1–4, one seed each", "", screen or "_Not run._",
                  "### Round 1: step 3's layout thinned, one seed each", "", layout3 or "_Not run._",
                  "### Rounds 2 and 3: the leaders, three seeds each — the choice before round 4", "",
                  confirm or "_Not run._"]
        wide, wide10 = (search_section(results, "model4", "search-wide", name) for name in ("wide", "wide-10"))
        if wide:
            parts += ["### Round 4, on a GPU: one change at a time and the closest widths, four seeds each", "",
                      wide, "### Round 4: the leaders over ten seeds — the choice before round 5", "",
                      wide10 or "_Not run._"]
        designs, designs10 = (search_section(results, "model4", "search-designs", name)
                              for name in ("designs", "designs-10"))
        if designs:
            parts += ["### Round 5, on a GPU: other layouts (designs.py), three seeds each", "", designs,
                      "### Round 5: the leaders over ten seeds — the choice", "", designs10 or "_Not run._"]
        under4000, under4000_10 = (search_section(results, "model4", "search-under-4000", name)
                                   for name in ("under-4000", "under-4000-10"))
        if under4000:
            parts += ["### Round 6, on CPU: the chosen layout under 4,000 parameters, three seeds each", "",
                      under4000, *(["### Round 6: the leaders over more seeds", "", under4000_10]
                                   if under4000_10 else [])]
        story = stories(Path(results) / "model4" / "search-recipes-under-4000.txt", "Round")
        for name, title in (("round-7", "Round 7, on CPU: under 4,000 with what the 99 % club's search found"),
                            ("round-8", "Round 8, on CPU: round 7's leader at the club's peak rate"),
                            ("round-9", "Round 9, on CPU: round 8's net with an average of its weights"),
                            ("round-10", "Round 10, on CPU: round 8's net with its training digits zoomed")):
            table = search_section(results, "model4", "search-under-4000", name)
            if table:
                parts += [f"### {title}, three seeds each", "", " ".join(story.get(name, [])), "", table]
    else:
        parts += ["_Not run yet: `make search STEP=model4`._"]
    return parts


def stories(recipes, word):
    """The prose of a recipes file by the part it tells: comment lines, each paragraph opening with 'WORD N:' (a
    stage, a round) under the key 'word-N' (the name of its search's table), what comes before under 'intro'."""
    story, part = {}, "intro"
    for line in recipes.read_text().splitlines() if recipes.exists() else []:
        if line.startswith("# ") and line[2:3] != " ":  # prose, not an indented command line
            opening = re.match(rf"{word} (\d+): ", line[2:])
            part = f"{word.lower()}-{opening[1]}" if opening else part
            story.setdefault(part, []).append(line[2:])
    return story


def club_parts(results):
    """The search for the smallest net that holds 99.0 %, stage by stage, each told by its paragraph of results/club's
    recipes file (comment lines; a paragraph opens with 'Stage N:') above its table."""
    story = stories(Path(results) / "club" / "search-recipes.txt", "Stage")
    folder = Path(results) / "club" / "search"
    tables = {}
    for name in story:  # a stage's table, then any more of its own (stage-8-seeds-4-6: more seeds of a recipe)
        names = [name] + sorted(path.stem for path in folder.glob(f"{name}-*.md"))
        tables[name] = [t for t in (search_section(results, "club", "search", n) for n in names) if t]
    tables.pop("intro", None)
    if not any(tables.values()):
        return ["_Not run yet: the commands are in results/club/search-recipes.txt._"]
    parts = [" ".join(story.get("intro", [])), ""]
    for name, stage_tables in tables.items():
        if stage_tables:
            parts += [f"### {name.replace('-', ' ').capitalize()}", "", " ".join(story[name])]
            for table in stage_tables:
                parts += ["", table]
    small = under_a_thousand(folder)
    every_made_at = all(made_at(path) for path in folder.glob("stage-*.json"))
    told = ["Each row's runs were made at the commit its stage's table above names.", ""] if every_made_at else []
    return parts + (["", "### Every recipe under 1,000 parameters", "", *told, small] if small else [])


def under_a_thousand(folder, budget=1000):
    """Every recipe of the club's stages under `budget` parameters with all its seeds run, best first: one table
    that shows how far apart the ideas are, against how far apart one recipe's seeds are."""
    rows, seen = [], set()
    for path in sorted(folder.glob("stage-*.json"), key=lambda p: [int(n) for n in re.findall(r"\d+", p.stem)]):
        search = load_json(path, ("recipes", "seed_list", "min_acc"))
        for r in search["recipes"]:
            runs = (r["flags"], search["seed_list"])  # a recipe shown again in a later table, from the same runs
            if r.get("completed") == r["seeds"] and r.get("params", budget) < budget and runs not in seen:
                seen.add(runs)
                rows.append(dict(r, table=path.stem, seed_list=search["seed_list"], min_acc=search["min_acc"]))
    if not rows:
        return None
    rows.sort(key=lambda r: -r["last3_val_mean"])
    lines = ["| recipe | table | params | seeds | val acc, last 3 epochs: mean (%) | min (%) | final val acc per seed "
             "(%) | met |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['recipe']} | {r['table']} | {r['params']:,} | {r['seed_list']} | {r['last3_val_mean']:.3f} "
              f"| {r['last3_val_min']:.2f} | {' '.join(f'{a:.2f}' for a in r['final_val'])} | {r['met']}/{r['seeds']} |"
              for r in rows]
    held = [r for r in rows if r["met"] == r["seeds"]]
    spread = max(max(r["final_val"]) - min(r["final_val"]) for r in rows)
    return ("\n".join(lines) + f"\n\n{len(rows)} recipes under {budget:,} parameters, {sum(r['seeds'] for r in rows)} "
            f"runs: their means from {rows[-1]['last3_val_mean']:.2f} to {rows[0]['last3_val_mean']:.2f} %, while the "
            f"final accuracies of one recipe's seeds lie up to {spread:.2f} points apart. "
            + (f"{len(held)} held {rows[0]['min_acc']:.1f} % on every seed." if held else
               f"None held {rows[0]['min_acc']:.1f} % on every seed.") + "\n")


def sweep_bench_section(results):
    """What the sweep engine costs, from lab/bench_sweep.py's one run (results/sweep-bench.json)."""
    b = load_json(Path(results) / "sweep-bench.json", ("command", "date", "runs", "run_flags", "sides"))
    if not b:
        return None
    plain = next(side for side in b["sides"] if side["side"] == "plain")
    lines = ["| how | wall s | against plain | device of each run | train s of each run |", "|---|---|---|---|---|"]
    lines += [f"| {side['side']} | {side['wall_s']:.1f} | {side['wall_s'] / plain['wall_s']:.2f}× | {side['device']} "
              f"| {' '.join(f'{t:.1f}' for t in side['train_s'])} |" for side in b["sides"]]
    return ("\n".join(lines) + f"\n\n`{b['command']}`, {b['date']}, {b['cores']} cores: {b['runs']} runs of "
            f"`python model3.py {b['run_flags']}` one after another as plain subprocesses (each with every core), "
            "then as a sweep through Dask with one worker (the engine's own cost: a cluster started and closed, "
            "each run's files sent back and written by the driver) and with several at once, all in one run of "
            "the script on one machine.")


def results_markdown(results="results"):
    rows = step_rows(results)
    parts = ["# Results", "", "Written by `python -m lab.report` from the runs in `results/`; every figure below comes "
             "from a run's `metrics.json`, `seeds.json` or `bench.json`. Accuracy is judged on the last epochs, never on "
             "the best one.", "", "## The steps", ""]
    parts.append(steps_table(rows) if rows else "_No complete step run in results/ yet._")
    if rows:
        parts += ["", "![every step's test accuracy per epoch](results/steps.png)"]
    parts += ["", "Train accuracy is counted during each epoch, on the batches as trained — augmented where a step "
              "augments them — so a step with augmentation can show a train accuracy below its test accuracy. RF is the receptive field of the last convolution or pooling window, before the head."]
    for m in rows:
        parts += ["", f"**{m['model']}** — `{m['command']}`, {m['date']}, {m['device']}, torch {m['torch']}. "
                  f"{m['verdict']}.", "",
                  f"![{m['model']} curves](results/{m['model']}/curves.png) "
                  f"[confusion](results/{m['model']}/confusion.png) · "
                  f"[misclassified](results/{m['model']}/misclassified.png) · "
                  f"[receptive field](results/{m['model']}/rf.md) · [summary](results/{m['model']}/summary.txt)"]
    analysis = next((m["data"] for m in rows if "data" in m), None)
    if analysis:
        parts += ["", "## The data, as step 1 measured it", "",
                  "| split | images | mean | std | min | max | images per class 0–9 |", "|---|---|---|---|---|---|---|"]
        parts += [f"| {split} | {d['count']:,} | {d['mean']:.4f} | {d['std']:.4f} | {d['min']:g} | {d['max']:g} "
                  f"| {' · '.join(f'{c:,}' for c in d['class_counts'])} |" for split, d in analysis.items()]
        parts += ["", "Pixels scaled to [0, 1]; every step normalises with the training split's mean and std. "
                  "![samples](results/model1/samples.png)"]
    batchnorm = batchnorm_section(results)
    parts += ["", "## What batch norm does for step 2", "",
              batchnorm or f"_Not run yet: `python model2.py --no-batchnorm --out results/{NO_BATCHNORM}`._"]
    for step, n in (("model3", 20), ("model4", 10)):
        seeds = seeds_section(results, step)
        parts += ["", f"## {step} over seeds", "", seeds or f"_Not run yet: `make seeds STEP={step} N={n}`._"]
    search = search_section(results)
    parts += ["", "## How step 3's recipe was chosen: on a validation split", "", *search_story(results, "model3"),
              search or "_Not run yet: `make search STEP=model3`._"]
    wide, wide10 = (search_section(results, "model3", "search-wide", name) for name in ("wide", "wide-10"))
    layout, layout10 = (search_section(results, "model3", "search-m4-layout", name) for name in ("wide", "wide-10"))
    if wide or layout:
        parts += ["### Round 3, on a GPU: one change at a time, four seeds each", "", wide or "_Not run._",
                  "### Round 3: the leaders over ten seeds — the choice", "", wide10 or "_Not run._",
                  "### Round 3: step 4's layout at step 3's budget (under 8,000 parameters)", "",
                  layout or "_Not run._",
                  "### Round 3: step 4's layout at step 3's budget, the leaders over ten seeds", "",
                  layout10 or "_Not run._"]
    parts += ["", "## How step 4 was chosen: on a validation split", "", *search_story(results, "model4"),
              *model4_search_parts(results)]
    frontier = frontier_section(results)
    parts += ["", "## The frontier: parameters against accuracy", "", frontier or "_Not run yet: `make frontier`._"]
    parts += ["", "## The 99 % club: chosen on a validation split", "", *club_parts(results)]
    parts += ["", "## The public nets under our rule", "", public_section(results)]
    for step in ABLATION_DIRS:
        parts += ["", f"## Ablation of step {step[-1]}", "", ablation_section(results, step)]
    bench = bench_section(results)
    parts += ["", "## Performance", "", bench or "_Not run yet: `make bench`._"]
    trials = speed_trials_section(results)
    if trials:
        parts += ["", "### Speed trials", "", trials]
    sweep = sweep_bench_section(results)
    parts += ["", "## What the sweep engine costs", "", sweep or "_Not run yet: `python -m lab.bench_sweep`._", ""]
    return with_contents("\n".join(parts))


def search_story(results, step):
    """What a step's search found, round by round, in words (results/STEP/search-story.md): the history a step's
    Analysis leaves out, told above the tables it rests on."""
    path = Path(results) / step / "search-story.md"
    return [path.read_text().strip(), ""] if path.is_file() else []


def heading_anchor(title):
    """The anchor GitHub gives a heading: lower case, punctuation dropped, each space a hyphen."""
    return "".join(c for c in title.lower() if c.isalnum() or c in " -_").replace(" ", "-")


def with_contents(markdown):
    """`markdown` with a list of its sections (its ## headings, linked) after its opening paragraph."""
    titles = [line[3:] for line in markdown.splitlines() if line.startswith("## ")]
    contents = "\n".join(f"- [{title}](#{heading_anchor(title)})" for title in titles)
    intro_end = markdown.index("\n\n## ")
    return markdown[:intro_end] + "\n\n**Contents**\n\n" + contents + markdown[intro_end:]


def docstring_results(m, seeds=None, later=()):
    """A step's docstring Results: its run, its seeds, and the sentences of later_seeds (`later`)."""
    def wrapped(text):  # to the docstring's width; a no-break space keeps each figure with its % sign
        return "\n".join(textwrap.wrap(re.sub(r"\*\*|`", "", text).replace(" %", "\u00a0%"), 110, initial_indent="    ",
                                       subsequent_indent="    ", break_on_hyphens=False)).replace("\u00a0", " ") + "\n"
    over_seeds = (wrapped(f"Over {seeds['count']} seeds: " + seeds_headline(seeds) + ".") if seeds else "") + "".join(
        wrapped(line) for line in later)
    return (f"    {m['params']:,} parameters, receptive field {m['receptive_field']}; test accuracy "
            f"{fmt_accs(m['last_test_accs'])} % on the last {len(m['last_test_accs'])} epochs;\n"
            f"    best train accuracy {m['best_train_acc']:.2f} %; {m['epochs']} epochs at "
            f"{median_epoch_seconds(m):.1f} s/epoch (median) on {m['device']}.\n"
            f"    {'PASS' if m['passed'] else 'FAIL'}. Run: `{m['command']}`, {m['date'][:10]}. "
            f"(Written by lab/report.py from results/{m['model']}/metrics.json.)\n"
            + "".join(wrapped(f"That run was {words}.") for words in [code_words(m.get("code"), m["command"])] if words)
            + over_seeds)


def replace_docstring_results(source, text):
    """Swap the body of the 'Results' section of a step's docstring for `text`."""
    return re.sub(r"(\nResults\n)(.*?)(\nAnalysis\n)", lambda mt: mt.group(1) + text + mt.group(3), source,
                  count=1, flags=re.S)


def replace_between(source, begin, end, text):
    if begin not in source or end not in source:
        return source
    head, rest = source.split(begin, 1)
    return head + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1]


def readme_results(results, rows):
    """README.md's Results: the steps' table and picture, each step's seeds, and the frontier's picture (what it
    shows, with the 99 % club and the public points, is on the lab's page)."""
    block = steps_table(rows) + "\n\n![every step's test accuracy per epoch](results/steps.png)"
    for step in ("model3", "model4"):
        seeds = load_json(Path(results) / step / "seeds.json", SEEDS_KEYS)
        if seeds:
            block += f"\n\n{step} over {seeds['count']} seeds: " + seeds_headline(seeds) + "."
            block += "".join(f"\n\n{line}" for line in later_seeds(results, step))
    standing = public_standing(results)
    if standing:
        block += "\n\n" + standing
    if frontier_summary(results):
        block += ("\n\n![parameters against test accuracy, steps 3 and 4 at several sizes]"
                  "(results/frontier/frontier.png)" + frontier_recipe_note(results)
                  + "\n\n(`make frontier`; what the picture shows, the 99 % club and the public points: "
                  "[the lab](lab/README.md#the-frontier).)")
    return block


def lab_page(results, text):
    """The lab's page (LAB_PAGE) with its generated blocks rewritten: the frontier's summary, the bench's tables."""
    frontier = frontier_summary(results)
    if frontier:
        text = replace_between(text, FRONTIER_BEGIN, FRONTIER_END,
                               "![parameters against test accuracy, steps 3 and 4 at several sizes]"
                               "(../results/frontier/frontier.png)\n\n" + frontier[1] + frontier_recipe_note(results))
    bench = bench_section(results, latest_only=True)
    if bench:
        text = replace_between(text, BENCH_BEGIN, BENCH_END, bench.strip())
    return replace_between(text, PUBLIC_BEGIN, PUBLIC_END, public_section(results))


def planned_files(results, ablation_only=False):
    """Every file the report writes, {path: text or JSON object}, all computed before any is written, so that a
    damaged results file stops the report with nothing rewritten."""
    files = {}
    for step, folder in ABLATION_DIRS.items():
        abl, history = ablation_rows(results, step), history_rows(results, step)
        if abl:
            files[Path(results) / folder / "ablation.json"] = abl
            files[Path(results) / folder / "ablation.md"] = ablation_text(results, step, abl)
        if history:
            files[Path(results) / HISTORY[step]["folder"] / "ablation.json"] = history
            files[Path(results) / HISTORY[step]["folder"] / "ablation.md"] = history_text(results, step, history)
    if ablation_only:
        return files
    files[Path("RESULTS.md")] = results_markdown(results)
    rows = step_rows(results)
    if rows:
        files[Path(results) / "steps.png"] = steps_figure(rows)
    readme = Path("README.md")
    if readme.exists():
        text = readme.read_text()
        files[readme] = replace_between(text, README_BEGIN, README_END, readme_results(results, rows)) if rows else text
    if LAB_PAGE.exists():
        files[LAB_PAGE] = lab_page(results, LAB_PAGE.read_text())
    for m in rows:
        script = Path(f"{m['model']}.py")
        if script.exists():
            seeds = load_json(Path(results) / m["model"] / "seeds.json", SEEDS_KEYS)
            files[script] = replace_docstring_results(script.read_text(), docstring_results(
                m, seeds, later_seeds(results, m["model"]) if seeds else ()))
    return files


def main(argv=None):
    parser = OneLineParser(prog="lab.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results", help="folder of runs (default: results)")
    parser.add_argument("--ablation-only", action="store_true", help="only the ablation table")
    args = parser.parse_args(argv)
    return run_main("lab.report", lambda: write_report(args.results, args.ablation_only),
                    interrupted="each file is either as it was or rewritten whole")


def write_report(results, ablation_only):
    try:
        files = planned_files(results, ablation_only)
    except DamagedResults as e:
        raise DamagedResults(f"{e}; nothing was rewritten (rerun the step that writes it, or restore it with "
                             "`git checkout -- FILE`)") from None
    for path, content in files.items():
        if isinstance(content, str):
            atomic_write_text(path, content)
        elif path.suffix == ".png":
            atomic_save_figure(content, path)
        else:
            atomic_write_json(path, content)
    print(f"report: wrote {', '.join(str(path) for path in files)}")
    return 0 if files else 1


if __name__ == "__main__":
    sys.exit(main())
