"""The params–accuracy frontier: step 3's design and step 4's, each trained at several sizes, N seeds each.

    python frontier.py --sizes 2000,3500,5000,8000,12000,20000 --seeds 3 --jobs 2   # what `make frontier` runs

For every design and every size (a parameter count), the design's default widths are scaled by one factor
(rounded, at least 1 channel each) to the count nearest that size, and the step's own net is always a point.
Each run is the step's own command line with --widths set, trained on the full training set and judged on the
test set (the frontier measures designs already chosen on validation; it chooses nothing). Runs go to
OUT/runs/DESIGN-PARAMS/seed-S, one process each, `--jobs` at once (or on the Dask cluster at `--cluster`); a run
already completed by the same command is reused, so an interrupted frontier goes on where it stopped.
Writes OUT/frontier.json, frontier.md and frontier.png: parameters (log axis) against final test accuracy (mean,
min–max over seeds) and the lowest of the last 3 epochs, with the 99.40 % target, the 8,000 budget and the
original write-up's point drawn.
"""
import argparse
import importlib
import os
import statistics
import sys
from pathlib import Path

from common import count_params, pyplot
from harness.cli import OneLineParser, add_cluster_flag, command_line, non_negative_int, positive_int
from harness.errors import run_main
from harness.files import atomic_save_figure, atomic_write_json, atomic_write_text, check_writable
from harness.runs import run_commands, step_run

ROOT = Path(__file__).resolve().parent
DESIGNS = ("model3", "model4")
TARGET_ACC, BUDGET = 99.40, 8000
ORIGINAL = (7838, 99.22)  # the original write-up's step 3: parameters, test accuracy (its best epoch)
MIN_SIZE, MAX_SIZE = 500, 200_000


def sizes_list(text):
    """--sizes: parameter counts separated by commas, each in MIN_SIZE..MAX_SIZE."""
    try:
        sizes = sorted({int(part) for part in text.split(",")})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] < MIN_SIZE or sizes[-1] > MAX_SIZE:
        raise argparse.ArgumentTypeError(f"expected parameter counts in {MIN_SIZE:,}..{MAX_SIZE:,} separated by "
                                         f"commas, e.g. 2000,5000,20000; got {text!r}")
    return sizes


def scaled(widths, factor):
    return tuple(max(1, round(w * factor)) for w in widths)


def widths_for(net_class, widths, size):
    """The design's widths scaled by one factor to the parameter count nearest `size`: (widths, params)."""
    best = None
    for step in range(10, 801):  # factors 0.10 .. 8.00
        candidate = scaled(widths, step / 100)
        params = count_params(net_class(widths=candidate))
        if best is None or abs(params - size) < abs(best[1] - size):
            best = (candidate, params)
    return best


def summarise(design, widths, params, seeds, runs):
    done = [m for m in runs if m is not None]
    row = dict(design=design, widths=list(widths), params=params, seeds=seeds, completed=len(done))
    if done:
        finals = [m["final_test_acc"] for m in done]
        row.update(final_test_accs=finals, mean_final_test_acc=round(statistics.mean(finals), 3),
                   min_final_test_acc=min(finals), max_final_test_acc=max(finals),
                   min_last3_test_acc=min(min(m["last_test_accs"]) for m in done),
                   met=sum(min(m["last_test_accs"]) >= TARGET_ACC for m in done),
                   epochs=done[0]["epochs"], subset=done[0].get("subset"), device=devices_of(done))
    return row


def devices_of(runs):
    """Where the runs trained, each device once: a frontier completed on another machine says so."""
    return " and ".join(dict.fromkeys(m["device"] for m in runs)) or "n/a"


def frontier_markdown(summary):
    lines = [f"Step 3's design and step 4's at several sizes (their widths scaled by one factor), "
             f"{summary['seeds']} seeds each, test accuracy after {summary['epochs']} epochs, on "
             f"{summary['device']}. 'met': seeds whose last 3 test accuracies were all ≥ {TARGET_ACC:.2f}. "
             f"Command: `{summary['command']}`.", "",
             "| design | widths | params | final test acc: mean (%) | min–max (%) | lowest of last 3 epochs (%) "
             "| met | device |", "|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        widths = ",".join(map(str, r["widths"]))
        if not r["completed"]:
            lines.append(f"| {r['design']} | {widths} | {r['params']:,} | no run completed | | | | |")
            continue
        lines.append(f"| {r['design']} | {widths} | {r['params']:,} | {r['mean_final_test_acc']:.3f} "
                     f"| {r['min_final_test_acc']:.2f}–{r['max_final_test_acc']:.2f} | {r['min_last3_test_acc']:.2f} "
                     f"| {r['met']}/{r['completed']} | {r['device']} |")
    return "\n".join(lines) + "\n"


def frontier_figure(summary):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 6))
    for design, marker in zip(DESIGNS, "os"):
        rows = [r for r in summary["rows"] if r["design"] == design and r["completed"]]
        if not rows:
            continue
        x = [r["params"] for r in rows]
        mean = [r["mean_final_test_acc"] for r in rows]
        spread = [[m - r["min_final_test_acc"] for m, r in zip(mean, rows)],
                  [r["max_final_test_acc"] - m for m, r in zip(mean, rows)]]
        line = ax.errorbar(x, mean, yerr=spread, marker=marker, capsize=3,
                           label=f"{design}: final test acc, mean and min–max of {summary['seeds']} seeds")
        ax.plot(x, [r["min_last3_test_acc"] for r in rows], marker=marker, linestyle=":", mfc="none",
                color=line.lines[0].get_color(), label=f"{design}: lowest of the last 3 epochs")
    ax.axhline(TARGET_ACC, color="tab:red", linewidth=1, label=f"target {TARGET_ACC:.2f} %")
    ax.axvline(BUDGET, color="grey", linestyle="--", linewidth=1, label=f"step 3's budget, {BUDGET:,} parameters")
    ax.plot(*ORIGINAL, marker="*", markersize=12, color="black", linestyle="none",
            label=f"the original write-up: {ORIGINAL[0]:,} parameters, {ORIGINAL[1]:.2f} % (its best epoch)")
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, NullFormatter
    sizes = [r["params"] for r in summary["rows"]]
    ax.set_xticks([t for t in (1000, 2000, 3000, 5000, 8000, 12000, 20000, 50000, 100000, 200000)
                   if min(sizes) * 0.8 <= t <= max(sizes) * 1.25])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))  # 2,000 rather than 2×10³
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"How small a CNN can be and still hold {TARGET_ACC:.2f} % ({summary['epochs']} epochs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)  # below: the plot is all data
    fig.tight_layout()
    return fig


def main(argv=None):
    parser = OneLineParser(prog="frontier.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=sizes_list, default=sizes_list("2000,3500,5000,8000,12000,20000"),
                        help="parameter counts to scale each design to (default: 2000,3500,5000,8000,12000,20000)")
    parser.add_argument("--designs", default=",".join(DESIGNS),
                        help="steps whose design is scaled (default: %(default)s)")
    parser.add_argument("--seeds", type=positive_int, default=3, help="seeds per point (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=1, help="the first seed (default: %(default)s)")
    parser.add_argument("--jobs", type=positive_int, default=1, help="runs at once (default: %(default)s)")
    add_cluster_flag(parser)
    parser.add_argument("--epochs", type=positive_int, default=None, help="passed to every run (default: the step's)")
    parser.add_argument("--subset", type=positive_int, default=None, help="passed to every run: train on N images")
    parser.add_argument("--out", default="results/frontier", help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)
    designs = args.designs.split(",")
    unknown = [d for d in designs if d not in DESIGNS or not (ROOT / f"{d}.py").is_file()]
    if unknown:
        parser.error(f"argument --designs: expected some of {', '.join(DESIGNS)}, got {', '.join(unknown)}")
    extra = [*(["--epochs", str(args.epochs)] if args.epochs else []),
             *(["--subset", str(args.subset)] if args.subset else [])]
    points = []
    for design in designs:
        module = importlib.import_module(design)
        own = (module.DEFAULTS["widths"], count_params(module.Net(widths=module.DEFAULTS["widths"])))
        for widths, params in sorted([own, *(widths_for(module.Net, own[0], size) for size in args.sizes)],
                                     key=lambda point: point[1]):
            if all((design, params) != (d, p) for d, _, p in points):  # two sizes may round to one net
                points.append((design, widths, params))
    out = Path(args.out)
    return run_main("frontier.py", lambda: frontier(args, argv, points, extra, out),
                    interrupted=f"completed runs are kept in {out}/runs and are reused by the next frontier run; "
                                "frontier.json was not updated")


def frontier(args, argv, points, extra, out):
    check_writable(out)
    seeds = list(range(args.seed, args.seed + args.seeds))
    runs = [(design, widths, params, seed) for design, widths, params in points for seed in seeds]
    defaults = {design: importlib.import_module(design).DEFAULTS for design, _, _ in points}
    print(f"frontier: {len(points)} nets × {len(seeds)} seeds = {len(runs)} runs, {args.jobs} at a time, "
          f"into {out}/runs")
    results = run_commands([step_run(os.path.relpath(ROOT / f"{d}.py"), ["--widths", ",".join(map(str, w)), *extra],
                                     s, out / "runs" / f"{d}-{p}" / f"seed-{s}", defaults[d]) for d, w, p, s in runs],
                           args.jobs, cluster=args.cluster)
    by_run = dict(zip(runs, results))
    first = next((m for m in results if m is not None), None)
    summary = dict(seeds=len(seeds), seed_list=seeds, epochs=first["epochs"] if first else args.epochs,
                   device=devices_of([m for m in results if m is not None]), subset=args.subset,
                   command=command_line("frontier.py", sys.argv[1:] if argv is None else argv),
                   rows=[summarise(d, w, p, len(seeds), [by_run[(d, w, p, s)] for s in seeds]) for d, w, p in points])
    atomic_write_json(out / "frontier.json", summary)
    atomic_write_text(out / "frontier.md", frontier_markdown(summary))
    atomic_save_figure(frontier_figure(summary), out / "frontier.png")
    print(frontier_markdown(summary))
    return 0 if all(r["completed"] == len(seeds) for r in summary["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
