"""Screen recipes for a step on a validation split: each recipe (a set of the step's flags) over a few seeds.

    python -m lab.search model3 results/model3/search-recipes.txt --seeds 3 --val 10000 --jobs 2

The recipes file has one recipe a line, `name: flags` (`#` starts a comment), e.g. `lr-0.15: --lr 0.15`.
Every run holds out the last --val training images and is judged on them alone: the table ranks recipes by
validation accuracy on the last 3 epochs, and the test set, though each run still measures it, is not shown,
so a choice made from this table is never a choice made on the test set.

Each run is the step's own command line in a subprocess (`--jobs` of them at once, the cores shared out between
them, or on the Dask cluster at `--cluster`), writing into OUT/runs/NAME/seed-S; a run already completed there
by the same command, settings and code is reused, so an interrupted search goes on where it stopped. The table goes
to OUT/search.json and OUT/search.md (OUT/NAME.* with --name).
"""
import argparse
import importlib
import os
import re
import shlex
import statistics
import sys
from pathlib import Path

from harness.cli import OneLineParser, add_cluster_flag, command_line, non_negative_int, positive_int, refusal
from harness.errors import UsageError, run_main
from harness.files import atomic_write_json, atomic_write_text
from harness.runs import completed_runs, run_commands
from harness.provenance import checkout_state
from lab import step_run

ROOT = Path(__file__).resolve().parent.parent  # the project's folder, where the steps are
STEPS = ("model1", "model2", "model3", "model4", "designs", "public")
RECIPE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def read_recipes(path):
    """[(name, [flags])] from a recipes file; a malformed line is a usage error naming the line."""
    recipes, seen = [], set()
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise UsageError(f"cannot read the recipes file {str(path)!r}: {e.strerror or e}") from None
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, colon, flags = line.partition(":")
        name = name.strip()
        try:
            flags = shlex.split(flags)
        except ValueError:  # an unclosed quote
            colon = ""
        if not colon or not RECIPE_NAME.match(name) or name in seen:
            raise UsageError(f"{path}:{number}: expected 'name: flags' with a new name made of "
                             f"letters, digits and . _ + -, got {line!r}")
        seen.add(name)
        recipes.append((name, flags))
    if not recipes:
        raise UsageError(f"{path} holds no recipe")
    return recipes


def table_name(text):
    if not RECIPE_NAME.match(text):
        raise argparse.ArgumentTypeError(f"expected a file name of letters, digits and . _ + -, got {text!r}")
    return text


def summarise(name, flags, seeds, runs, min_acc):
    """One row of the table: validation accuracy of the last 3 epochs, over the seeds that completed."""
    done = completed_runs(runs)
    row = dict(recipe=name, flags=" ".join(flags), seeds=seeds, completed=len(done))
    if done:
        last = [m["last_val_accs"] for m in done]
        row.update(params=done[0]["params"],
                   last3_val_mean=round(statistics.mean(a for accs in last for a in accs), 3),
                   last3_val_min=min(min(accs) for accs in last),
                   final_val=[m["final_val_acc"] for m in done],
                   final_train=[m["history"][-1]["train_acc"] for m in done],
                   met=sum(min(accs) >= min_acc for accs in last),
                   seconds_per_epoch=round(statistics.median(m["seconds_per_epoch"] for m in done), 2))
    return row


TIE = 0.01  # percentage points of mean validation accuracy within which recipes count as tied


def choose(rows, seeds, rule="best"):
    """The recipe to take to the test set. Rule "best": the highest mean validation accuracy over the last 3 epochs
    of every seed; recipes within TIE of it count as tied, and the tie goes to the highest worst seed-epoch, since a
    step's target is about every seed, not the average. Rule "smallest": the fewest parameters among the recipes
    that met the line on every seed (the 99 % club's question). Only recipes with every seed completed compete."""
    done = [r for r in rows if r["completed"] == seeds]
    if rule == "smallest":
        done = [r for r in done if r["met"] == seeds]
        return min(done, key=lambda r: (r["params"], -r["last3_val_mean"]))["recipe"] if done else None
    if not done:
        return None
    top = max(r["last3_val_mean"] for r in done)
    return max((r for r in done if r["last3_val_mean"] >= top - TIE),
               key=lambda r: (r["last3_val_min"], r["last3_val_mean"]))["recipe"]


def search_markdown(summary):
    lines = [f"Recipes for {summary['step']} screened on a validation split: the last {summary['val']:,} training "
             f"images held out, {summary['seeds']} seed{'s' * (summary['seeds'] > 1)} each ({summary['seed_list']}), "
             f"on {summary['device']}. "
             f"Sorted by the mean validation accuracy of the last 3 epochs over the seeds; 'met' counts seeds "
             f"whose last 3 validation accuracies were all ≥ {summary['min_acc']:.2f}. Chosen (**bold**): "
             + ("the fewest parameters among the recipes that met the line on every seed"
                if summary.get("rule") == "smallest" else f"the highest mean, with recipes within {TIE} of it "
                                                          "counted as tied and the tie going to the highest minimum")
             + f". Command: `{summary['command']}`.", "",
             "| recipe | flags | params | val acc, last 3 epochs: mean (%) | min (%) | final val acc per seed (%) "
             "| final train acc (%) | met | s/epoch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(summary["recipes"], key=lambda r: -r.get("last3_val_mean", 0)):
        if not r["completed"]:
            lines.append(f"| {r['recipe']} | `{r['flags']}` | | no run completed | | | | | |")
            continue
        name = f"**{r['recipe']}**" if r["recipe"] == summary.get("chosen") else r["recipe"]
        lines.append(f"| {name} | `{r['flags'] or '(defaults)'}` | {r['params']:,} | "
                     f"{r['last3_val_mean']:.3f} | {r['last3_val_min']:.2f} | "
                     f"{' '.join(f'{a:.2f}' for a in r['final_val'])} | "
                     f"{' '.join(f'{a:.2f}' for a in r['final_train'])} | {r['met']}/{r['completed']} | "
                     f"{r['seconds_per_epoch']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = OneLineParser(prog="lab.search", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=STEPS, help="the step whose flags the recipes set")
    parser.add_argument("recipes", help="the recipes file: one 'name: flags' a line")
    parser.add_argument("--seeds", type=positive_int, default=3, help="seeds per recipe (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=1, help="the first seed (default: %(default)s)")
    parser.add_argument("--val", type=positive_int, default=10000,
                        help="validation images held out from the end of the training split (default: %(default)s)")
    parser.add_argument("--jobs", type=positive_int, default=1, help="runs at once (default: %(default)s)")
    add_cluster_flag(parser)
    parser.add_argument("--min-acc", type=float, default=99.40, help="the line 'met' counts (default: %(default)s)")
    parser.add_argument("--choose", choices=("best", "smallest"), default="best",
                        help="best: the highest validation accuracy; smallest: the fewest parameters that met "
                             "--min-acc on every seed (default: %(default)s)")
    parser.add_argument("--out", default=None, help="output folder (default: results/STEP/search)")
    parser.add_argument("--only", default=None, help="run only these recipes (comma-separated names)")
    parser.add_argument("--name", default="search", type=table_name,
                        help="the table's file name, OUT/NAME.json and .md (default: %(default)s); a first screen "
                             "over one seed and a second round over more can share OUT and its runs")
    args = parser.parse_args(argv)
    if not (ROOT / f"{args.step}.py").is_file():
        parser.error(f"argument step: {args.step}.py does not exist here")
    out = Path(args.out or f"results/{args.step}/search")
    return run_main("lab.search", lambda: search(args, argv, out),
                    interrupted=f"completed runs are kept in {out}/runs and are reused by the next search; "
                                f"{args.name}.json was not updated")


def search(args, argv, out):
    recipes = read_recipes(args.recipes)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {name for name, _ in recipes}
        if unknown:
            raise UsageError(f"argument --only: no recipe named {', '.join(sorted(unknown))} in {args.recipes}")
        recipes = [r for r in recipes if r[0] in wanted]
    script = os.path.relpath(ROOT / f"{args.step}.py")  # as typed from the project's folder: `python model3.py ...`
    defaults = importlib.import_module(args.step).DEFAULTS
    # A recipe of flags or layouts that have since gone (RESULTS.md names the commit that runs it) is refused before
    # any run, so that a search never overwrites the table it made then with one of failed runs.
    gone = [name for name, flags in recipes if refusal(flags, defaults)]
    if gone:
        raise UsageError(f"{args.recipes}: {args.step}.py today refuses the flags of {', '.join(gone)} (retired "
                         "ideas: RESULTS.md names the commit that runs them); choose others with --only")
    seeds = list(range(args.seed, args.seed + args.seeds))
    runs = [(name, tuple(flags), seed) for name, flags in recipes for seed in seeds]
    print(f"search: {len(recipes)} recipes × {len(seeds)} seeds = {len(runs)} runs, {args.jobs} at a time, "
          f"into {out}/runs")
    results = run_commands([step_run(script, [*flags, "--val", args.val], seed, out / "runs" / name / f"seed-{seed}") for name, flags, seed in runs], args.jobs, cluster=args.cluster)
    by_run = dict(zip(runs, results))
    first = next((m for m in results if m is not None), None)
    summary = dict(step=args.step, val=args.val, seeds=len(seeds), seed_list=", ".join(map(str, seeds)),
                   code=checkout_state(),
                   min_acc=args.min_acc, device=first["device"] if first else "n/a",
                   command=command_line("lab.search", sys.argv[1:] if argv is None else argv),
                   recipes=[summarise(name, flags, len(seeds), [by_run[(name, tuple(flags), s)] for s in seeds],
                                      args.min_acc) for name, flags in recipes])
    summary["rule"] = args.choose
    summary["chosen"] = choose(summary["recipes"], len(seeds), args.choose)
    atomic_write_json(out / f"{args.name}.json", summary)
    atomic_write_text(out / f"{args.name}.md", search_markdown(summary))
    print(search_markdown(summary))
    return 0 if all(r["completed"] == len(seeds) for r in summary["recipes"]) else 1


if __name__ == "__main__":
    sys.exit(main())
