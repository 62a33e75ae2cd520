"""Builds RESULTS.md from the runs in results/, and writes the measured Results into the README and into each step's
docstring, so that no figure is ever typed by hand.

    python -m lab.report                  # RESULTS.md, README.md's results table, the Results of model1-4.py
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
from pathlib import Path

from common import STEPS, pyplot, seeds_needed
from harness.cli import OneLineParser, settings_meant_by, settings_recorded_in
from harness.errors import DataError, run_main
from harness.files import atomic_save_figure, atomic_write_json, atomic_write_text
from harness.runs import seed_rule_verdict
# The original write-up's figures, for comparison (its step 1 and 2 report the best test epoch).
ORIGINAL = {"model1": ("1.6M", "99.31 (best epoch)"), "model2": ("~400k", "99.57 (best epoch)"),
            "model3": ("7,838", "99.22"), "model4": ("—", "no such step")}
# Ablation variants: folder name -> what it changes, for the variants that the Makefile's ABLATIONS_<step> run
# (`make ablation STEP=...`), in the order of the table. The flags are read back from each run's command.
ABLATIONS = {"full": "nothing (the recipe as is)",
             "clean-0": "no clean epochs: augmentation to the last epoch",
             "round-4-net": "step 4's net before round 5: a strided transition, full 3×3s, no clean epochs",
             "round-5-net": "step 4's net and recipe of rounds 5 to 9: 8,12,32,32,40 channels, batch norm's own scale "
                            "and shift per channel, ReLU, a peak rate of 0.1, no zoom",
             "round-6-net": "round 6's choice under 4,000 parameters: round 5's net, thinner (6,12,28,28,32)",
             "round-8-net": "round 8's choice under 4,000: round 7's net (one scale and shift a batch norm, PReLU) "
                            "at twice the peak rate, no zoom",
             "rotate-7": "rotation ±7° (step 3's recipe before its first search)",
             "no-augment": "no augmentation (rotation and shift)", "bf16": "bf16 autocast in the training forward pass",
             "aug-5-1": "lighter augmentation: ±5°, ±1 px"}
# Where each step's ablation runs live (`make ablation STEP=...`); the "full" row is the step's own --seeds run.
ABLATION_DIRS = {"model3": "ablation", "model4": "model4/ablation"}
# Rows that are the seeds run of a step's previous recipe, made when these flags were its defaults, and whose
# settings as recorded cannot tell them (recipe_then tells the rest): a net its step's Net no longer builds, or a
# run from before its step recorded every setting.
PREVIOUS_RECIPE_FLAGS = {"model3/clean-0": "--clean-epochs=0",
                         "model4/round-4-net": "designs.py --design m4-6.12.6.12.14.14 --clean-epochs=0"}
# `make bench` writes bench.json; runs on other devices, or repeated ones, go to bench-<name>.json (`--out`).
BENCH_GLOB = "bench*.json"
README_BEGIN, README_END = "<!-- results:begin (written by lab/report.py) -->", "<!-- results:end -->"
BENCH_BEGIN, BENCH_END = "<!-- bench:begin (written by lab/report.py) -->", "<!-- bench:end -->"


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


def ablation_rows(results, step="model3"):
    """One row per ablation variant, from its --seeds run: the variant's seeds.json and each seed's metrics.json."""
    rows = []
    for name, change in ABLATIONS.items():
        folder = Path(results) / ABLATION_DIRS[step] / name
        if name == "full":
            folder = Path(results) / step
        summary = load_json(folder / "seeds.json", SEEDS_KEYS)
        if not summary:
            continue
        runs = [load_json(folder / "seeds" / f"seed-{r['seed']}" / "metrics.json", METRICS_KEYS)
                for r in summary["seeds"]]
        if any(m is None or m.get("subset") for m in runs):
            continue
        script, command_flags = summary["command"].split(" ", 2)[1], summary["command"].split(".py", 1)[-1]
        change_flags = re.sub(r"\s*--(seeds|jobs|out)(=|\s+)\S+", "", command_flags).strip()
        then = "" if f"{step}/{name}" in PREVIOUS_RECIPE_FLAGS else recipe_then(runs[0])
        if then and change_flags:  # one change to the recipe as it was when the row was run
            change += f", to the step's recipe of its day ({then})"
        flags = PREVIOUS_RECIPE_FLAGS.get(f"{step}/{name}") or " ".join(
            part for part in ("" if script == f"{step}.py" else script,  # a net of another script's, as round-4-net
                              change_flags, then) if part)
        lasts = [a for m in runs for a in m["last_test_accs"]]
        target = runs[0]["targets"]["min_test_acc"]
        rows.append(dict(variant=name, change=change, flags=flags or "(defaults)", params=runs[0]["params"],
                         seeds=len(runs),
                         met=sum(m["passed"] is True for m in runs),
                         final_test_acc=round(statistics.mean(m["final_test_acc"] for m in runs), 3),
                         last3_mean=round(statistics.mean(lasts), 3), last3_min=min(lasts),
                         gap=round(min(lasts) - target, 2),
                         final_test_loss=round(statistics.mean(m["history"][-1]["test_loss"] for m in runs), 5),
                         final_train_acc=round(statistics.mean(m["history"][-1]["train_acc"] for m in runs), 2),
                         device=runs[0]["device"]))
    return rows


def ablation_table(rows):
    full = next((r for r in rows if r["variant"] == "full"), None)
    lines = ["| change | flags | params | seeds met | final test acc, mean (%) | last 3 epochs: mean (%) | min (%) "
             "| gap of the min to 99.40 | Δ final vs full | final test loss | final train acc (%) | device |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        delta = f"{r['final_test_acc'] - full['final_test_acc']:+.2f}" if full else "n/a"
        lines.append(f"| {r['change']} | `{r['flags']}` | {r['params']:,} | {r['met']}/{r['seeds']} "
                     f"| {r['final_test_acc']:.2f} "
                     f"| {r['last3_mean']:.2f} | {r['last3_min']:.2f} | {r['gap']:+.2f} | {delta} "
                     f"| {r['final_test_loss']:.4f} | {r['final_train_acc']:.2f} | {r['device']} |")
    return "\n".join(lines)


SEEDS_KEYS = ("seeds", "count", "met_target", "mean_final_test_acc", "std_final_test_acc", "command", "device")


def seeds_headline(s):
    """The evidence for a step in one sentence: pass rate against the step's seed rule (as its seeds.json records
    it), then the spread of the final accuracy."""
    finals = [r["final_test_acc"] for r in s["seeds"]] or [s["mean_final_test_acc"]]
    lowest_last3 = min((r["last3_min_test_acc"] for r in s["seeds"]), default=None)
    return (f"**{s['met_target']}/{s['count']} seeds met the target** ({seed_rule_verdict(s)}); final test accuracy "
            f"**{s['mean_final_test_acc']:.3f} ± {s['std_final_test_acc']:.3f} %** (mean ± std), lowest "
            f"{min(finals):.2f} %" + (f", lowest of any last-3 epoch {lowest_last3:.2f} %" if lowest_last3 else "")
            + f" (`{s['command']}`, {s['device']})")


def seeds_section(results, step="model3"):
    s = load_json(Path(results) / step / "seeds.json", SEEDS_KEYS)
    if not s:
        return None
    table = Path(results) / step / "seeds.md"
    return (seeds_headline(s) + ".\n\n" + (table.read_text() if table.exists() else "")
            + "".join(f"\n{line}\n" for line in later_seeds(results, step)))


def later_seeds(results, step, runs="seeds"):
    """Runs over further seeds (results/STEP/seeds-A-B/, `--seed A --seeds N --out ...`; an ablation row's beside
    its folder, RUNS-seeds-A-B): the same recipe on seeds that no choice of it saw, a sentence each."""
    lines = []
    for path in sorted(Path(results, step).glob(f"{runs}-*/seeds.json")):
        s = load_json(path, SEEDS_KEYS)
        seeds = [r["seed"] for r in s["seeds"]]
        lines.append(f"Seeds {min(seeds)}–{max(seeds)}, which no choice of the recipe saw: {seeds_headline(s)}.")
    return lines


def search_section(results, step="model3", folder="search", name="search"):
    """The recipe search of a step on its validation split, as lab/search.py wrote it."""
    table = Path(results) / step / folder / f"{name}.md"
    if not table.exists():
        return None
    load_json(table.with_suffix(".json"), ("step", "recipes"))  # a damaged search.json stops the report too
    return table.read_text()


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
    """[(setting, as the run was made, as its recorded command means it today)] for each setting that its step's
    DEFAULTS have changed since (the net's own, as widths, first); [] where the command means what it meant then,
    or where the run recorded no settings to tell."""
    today = metrics.get("config") and settings_today(metrics["command"])
    if not today:
        return []
    then = settings_recorded_in(metrics)
    changed = [(key, value, today["net_kwargs"].get(key)) for key, value in then.get("net_kwargs", {}).items()
               if today["net_kwargs"].get(key) != value]
    return changed + [(key, then.get(key), value) for key, value in today.items()
                      if key not in ("seed", "net_kwargs") and then.get(key) != value]


def recipe_then(metrics):
    """recipe_changes as the flags that make the run today: `--widths 8,12,32,32,40 --lr 0.1`, or ""."""
    return " ".join(as_flag(key, old) for key, old, _ in recipe_changes(metrics))


def as_flag(key, value):
    """A setting as the flag that sets it: --lr 0.1, --widths 8,12,32,32,40, --nesterov or --no-nesterov."""
    flag = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    return f"{flag} " + (",".join(map(str, value)) if isinstance(value, list) else str(value))


def frontier_recipe_note(results):
    """Which design's frontier runs were trained with a recipe its step has changed since, and how."""
    notes = []
    for design in ("model3", "model4"):
        run = min((Path(results) / "frontier" / "runs").glob(f"{design}-*/seed-*/metrics.json"), default=None)
        metrics = run and load_json(run, ("command", "config"))
        changed = metrics and recipe_changes(metrics)
        if changed:
            notes.append(f"step {design[-1]}'s design was trained with "
                         + ", ".join(f"{key} {old}" for key, old, _ in changed) + ", where its recipe today has "
                         + ", ".join(f"{new}" for _, _, new in changed))
    if not notes:
        return ""
    return ("\n\nThese points are as measured then: " + "; ".join(notes) + ". `make frontier` trains them again with "
            "today's recipes (a completed run is reused only while its command means the same recipe).")


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
    spreads = "; ".join(f"{row['pipeline'].split(' (')[0]} {min(row['rounds_samples_per_s']):,.0f}–"
                        f"{max(row['rounds_samples_per_s']):,.0f}" for row in rows)
    return f", the median of {b['repeats']} interleaved rounds (samples/s over the rounds: {spreads})"


def bench_runs(results):
    """Every bench JSON in results/: `make bench`'s own first, then the others in the order they ran."""
    runs = [(path.name, load_json(path, ("device", "pipelines", "speedup", "steps", "warmup")))
            for path in sorted(Path(results).glob(BENCH_GLOB))]
    runs = sorted((r for r in runs if r[1]), key=lambda r: (r[0] != "bench.json", r[1].get("date", ""), r[0]))
    return [b for _, b in runs]


def evaluation_sentence(rows):
    """What evaluating a CPU's batches in chunks bought (lab/bench.py's evaluation_rates)."""
    chunk = rows[0]["chunk"]
    rates = "; ".join(f"{'model3' if r['net'] == 'model3' else 'the club net'} ({r['params']:,} parameters) "
                      f"{r['whole_images_per_s']:,} images/s whole, {r['chunked_images_per_s']:,} in chunks: "
                      f"**{r['ratio']:.2f}×**" for r in rows)
    return (f"Evaluating the test set's batches of 1000 in chunks of {chunk} images (common.evaluate on a CPU), "
            f"every logit the same to the bit: {rates}.")


def bench_section(results):
    sections, by_device = [], {}
    for b in bench_runs(results):
        by_device.setdefault(b["device"], []).append(b)
        memory = ("peak allocated GPU memory" if b["device"].startswith("cuda") else
                  "the peak resident memory of the row's own process (lab/bench.py runs each pipeline in a fresh one; "
                  "the reference's DataLoader workers are not counted), data loading and torch's own libraries "
                  "included")
        text = (bench_table(b) + f"\n\n`{b.get('command', 'python -m lab.bench').strip()}` on {b['device']}, "
                f"{b.get('date', 'undated')}, {b['steps']} timed steps per pipeline after {b['warmup']} warm-up "
                f"steps" + rounds_text(b) + f": speedup vs reference **{b['speedup']:.1f}×**. Memory is {memory}."
                + (f" {b['note']}" if b.get("note") else ""))
        rates = {row["pipeline"].split(" (")[0]: row["samples_per_s"] for row in b["pipelines"]}
        if "project, --precision bf16" in rates and "project" in rates:
            text += (f" With bf16 autocast the project's step ran at "
                     f"{rates['project, --precision bf16'] / rates['project']:.2f}× its fp32 rate here.")
        if "tiny" in rates and "tiny, --channels-last" in rates:
            text += (f" The 99 % club's net trained at {rates['tiny'] / rates['project']:.2f}× model3's rate, and "
                     f"{rates['tiny, --channels-last'] / rates['tiny']:.2f}× its own with --channels-last.")
        one = "tiny on 1 thread"
        if all(f"{one}{way}" in rates for way in ("", ", before", ", the early layout", ", --channels-last")):
            text += (f" On one thread, as a sweep runs it, the club's net trained at "
                     f"{rates[one] / rates[one + ', before']:.2f}× its rate before the speed work (its scale and "
                     f"shift in batch norm's own pass), at {rates[one + ', the early layout'] / rates[one]:.2f}× "
                     f"that with the early layout and {rates[one + ', --channels-last'] / rates[one]:.2f}× with "
                     f"--channels-last.")
        if b.get("evaluation"):
            text += " " + evaluation_sentence(b["evaluation"])
        if b.get("model3_train_seconds") is not None:
            setup = b.get("model3_setup_seconds")
            text += (f" model3's full 15-epoch run (training and per-epoch evaluation, data already loaded) took "
                     f"**{b['model3_train_seconds']:.1f} s**"
                     + (f" (+ {setup:.1f} s of one-time warm-up, compilation and graph recording)" if setup else "")
                     + f", final test accuracy {b['model3_final_test_acc']:.2f} % "
                     f"({b['model3_verdict'].split(' ')[1]}), peak memory {b.get('model3_peak_memory_mb', 0):,.0f} MB.")
        sections.append(text)
    for device, runs in by_device.items():
        if len(runs) > 1:  # the spread between runs says how far one run's ratio can be trusted
            figures = lambda key, unit: ", ".join(f"{run[key]:.2f}" for run in runs) + unit  # noqa: E731
            sections.append(f"The {len(runs)} runs on {device} above: reference "
                            f"{figures('reference_epoch_s', ' s/epoch')}, project {figures('project_epoch_s', ' s/epoch')}"
                            "; speedup " + ", ".join(f"{run['speedup']:.1f}×" for run in runs) + ".")
    return "\n\n".join(sections) + "\n" if sections else None


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
    under = under_a_thousand(folder)
    return parts + (["", "### Every recipe under 1,000 parameters", "", under] if under else [])


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
    parts += ["", "Train accuracy is counted during each epoch, on the batches as trained — augmented and with dropout "
              "active where a step uses them — so a regularised step can show a train accuracy below its test "
              "accuracy. RF is the receptive field of the last convolution or pooling window, before the head."]
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
    for step in ("model3", "model4"):
        abl = ablation_rows(results, step)
        parts += ["", f"## Ablation of step {step[-1]}", "",
                  ablation_table(abl) if abl else f"_Not run yet: `make ablation STEP={step}`._"]
        if abl:
            parts += ["", f"Each row is one change to step {step[-1]}'s recipe, run over the same seeds (`--seeds`); "
                      "'last 3 epochs' pools the last 3 test accuracies of every seed. The test loss and the train "
                      "accuracy (counted on the batches as trained) show what each ingredient does to over-fitting."]
            parts += [f"\nRow {row['variant']} ({row['flags']}), further: {line}" for row in abl
                      for line in later_seeds(results, ABLATION_DIRS[step], f"{row['variant']}-seeds")]
    bench = bench_section(results)
    parts += ["", "## Performance", "", bench or "_Not run yet: `make bench`._"]
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


def docstring_results(m, seeds=None):
    # wrapped to the docstring's width; a no-break space keeps each figure with its % sign
    over_seeds = ("" if not seeds else "\n".join(textwrap.wrap(
        f"Over {seeds['count']} seeds: " + re.sub(r"\*\*|`", "", seeds_headline(seeds)).replace(" %", "\u00a0%")
        + ".", 110, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False)).replace("\u00a0", " ")
        + "\n")
    return (f"    {m['params']:,} parameters, receptive field {m['receptive_field']}; test accuracy "
            f"{fmt_accs(m['last_test_accs'])} % on the last {len(m['last_test_accs'])} epochs;\n"
            f"    best train accuracy {m['best_train_acc']:.2f} %; {m['epochs']} epochs at "
            f"{median_epoch_seconds(m):.1f} s/epoch (median) on {m['device']}.\n"
            f"    {'PASS' if m['passed'] else 'FAIL'}. Run: `{m['command']}`, {m['date'][:10]}. "
            f"(Written by lab/report.py from results/{m['model']}/metrics.json.)\n" + over_seeds)


def replace_docstring_results(source, text):
    """Swap the body of the 'Results' section of a step's docstring for `text`."""
    return re.sub(r"(\nResults\n)(.*?)(\nAnalysis\n)", lambda mt: mt.group(1) + text + mt.group(3), source,
                  count=1, flags=re.S)


def replace_between(source, begin, end, text):
    if begin not in source or end not in source:
        return source
    head, rest = source.split(begin, 1)
    return head + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1]


def planned_files(results, ablation_only=False):
    """Every file the report writes, {path: text or JSON object}, all computed before any is written, so that a
    damaged results file stops the report with nothing rewritten."""
    files = {}
    for step, folder in ABLATION_DIRS.items():
        abl = ablation_rows(results, step)
        if abl:
            files[Path(results) / folder / "ablation.json"] = abl
            files[Path(results) / folder / "ablation.md"] = ablation_table(abl) + "\n"
    if ablation_only:
        return files
    files[Path("RESULTS.md")] = results_markdown(results)
    rows = step_rows(results)
    if rows:
        files[Path(results) / "steps.png"] = steps_figure(rows)
    readme = Path("README.md")
    if readme.exists():
        text = readme.read_text()
        if rows:
            block = steps_table(rows)
            for step in ("model3", "model4"):
                seeds = load_json(Path(results) / step / "seeds.json", SEEDS_KEYS)
                if seeds:
                    block += f"\n\n{step} over {seeds['count']} seeds: " + seeds_headline(seeds) + "."
                    block += "".join(f"\n\n{line}" for line in later_seeds(results, step))
            frontier = frontier_summary(results)
            if frontier:
                block += ("\n\n![parameters against test accuracy, steps 3 and 4 at several sizes]"
                          "(results/frontier/frontier.png)\n\n" + frontier[1] + frontier_recipe_note(results)
                          + "\n\n(`make frontier`; every point's table is in RESULTS.md.)")
            text = replace_between(text, README_BEGIN, README_END, block)
        bench = bench_section(results)
        if bench:
            text = replace_between(text, BENCH_BEGIN, BENCH_END, bench.strip())
        files[readme] = text
    for m in rows:
        script = Path(f"{m['model']}.py")
        if script.exists():
            seeds = load_json(Path(results) / m["model"] / "seeds.json", SEEDS_KEYS)
            files[script] = replace_docstring_results(script.read_text(), docstring_results(m, seeds))
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
