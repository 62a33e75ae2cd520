"""The params–accuracy frontier: step 3's design and step 4's, each trained at several sizes, N seeds each,
and the 99 % club's net over ten.

    python -m lab.frontier --seeds 3 --jobs 2   # what `make frontier` runs

For every design and every size (a parameter count), the design's default widths are scaled by one factor
(rounded, at least 1 channel each) to the count nearest that size, and the step's own net is always a point.
The 99 % club's net (CLUB: the smallest net found to hold 99.0 %, chosen on the validation split, results/club)
is a point of its own over --club-seeds seeds, and its layout and recipe, scaled the same way to --club-sizes, a
line of its own. Each run is the step's own command line with --widths set,
trained on the full training set and judged on the test set (the frontier measures nets already chosen; it
chooses nothing). Runs go to OUT/runs/DESIGN-PARAMS/seed-S, `--jobs` at once (or on the Dask cluster at
`--cluster`); a run already completed by the same command, settings and code is reused, so an interrupted frontier
goes on where it stopped. Writes OUT/frontier.json, frontier.md and frontier.png: parameters (log axis) against final
test accuracy (mean, min–max over seeds) and the lowest of the last 3 epochs, with the 99.40 % and 99.0 % lines and
the public points below drawn beside ours; and a second panel, multiply-adds per image against accuracy, since
parameters are not cost.
"""
import argparse
import importlib
import os
import statistics
import sys
from pathlib import Path

import designs
import public
from common import count_params, pyplot, receptive_field
from harness.cli import OneLineParser, add_cluster_flag, command_line, non_negative_int, positive_int
from harness.errors import UsageError, run_main
from harness.files import atomic_save_figure, atomic_write_json, atomic_write_text, check_writable
from harness.runs import completed_runs, run_commands
from harness.provenance import checkout_state
from lab import net_of, step_run

ROOT = Path(__file__).resolve().parent.parent  # the project's folder, where the steps are
DESIGNS = ("model3", "model4")
TARGET_ACC, CLUB_ACC, BUDGET = 99.40, 99.0, 8000
CLUB_SHARE = 0.9  # the club's net holds the line if 9 in 10 of its seeds do, as step 4's rule
SIZES = "500,700,1000,1400,2000,3500,5000,8000,12000,20000"
CLUB_SIZES = "500,700,1000,2000"  # the club's layout, scaled: where parameters are scarcest
# The 99 % club's net, chosen on the validation split: the smallest that held 99.0 % on every seed (results/club,
# RESULTS.md, stage 5)
CLUB = ("designs", ("--design", "pool1_ds-10.15.15.15", "--bn-affine", "layer", "--clean-epochs", "5", "--lr", "0.2"))
# Other people's points, as they report them: parameters, test accuracy, who, and how the number was picked. The
# published nets are public.py's (trained there under our rule); the write-up's step 3 is the exercise's own origin.
PUBLIC = (*((p.params, p.accuracy, p.source, p.how) for p in public.NETS.values()),
          (7838, 99.22, "the original write-up's step 3", "its best epoch of 15"))
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


def club_sizes_list(text):
    """--club-sizes: as --sizes, or 'none'."""
    return [] if text == "none" else sizes_list(text)


def scaled(widths, factor):
    return tuple(max(1, round(w * factor)) for w in widths)


def widths_for(net_class, widths, size):
    """The design's widths scaled by one factor to the parameter count nearest `size`: (widths, params).
    `net_class(widths=...)` builds the net (a step's Net, or club_layout's)."""
    best, counted = None, {}
    for step in range(10, 801):  # factors 0.10 .. 8.00
        candidate = scaled(widths, step / 100)
        if candidate not in counted:  # neighbouring factors round to the same widths
            counted[candidate] = count_params(net_class(widths=candidate))
        params = counted[candidate]
        if best is None or abs(params - size) < abs(best[1] - size):
            best = (candidate, params)
    return best


def club_layout():
    """The club's net as a design to scale: (its widths, a function from widths to the flags of its command line,
    with the rest of its recipe kept)."""
    flags = list(CLUB[1])
    at = flags.index("--design") + 1
    family, widths = designs.parse_design(flags[at])

    def flags_for(widths):
        return (*flags[:at], f"{family}-" + ".".join(map(str, widths)), *flags[at + 1:])
    return widths, flags_for


def multiply_adds(net):
    return sum(row["macs"] for row in receptive_field(net))


def widths_of(flags):
    return [int(w) for w in flags[flags.index("--widths") + 1].split(",")] if "--widths" in flags else None


def summarise(point, runs):
    design, flags, params, macs, seeds = point
    done = completed_runs(runs)
    row = dict(design=design, line=line_of(design), widths=widths_of(flags), flags=list(flags), params=params, macs=macs,
               seeds=len(seeds), seed_list=list(seeds), completed=len(done))
    if done:
        finals = [m["final_test_acc"] for m in done]
        lowest = [min(m["last_test_accs"]) for m in done]
        row.update(final_test_accs=finals, mean_final_test_acc=round(statistics.mean(finals), 3),
                   min_final_test_acc=min(finals), max_final_test_acc=max(finals), min_last3_test_acc=min(lowest),
                   met=sum(a >= TARGET_ACC for a in lowest), met_club=sum(a >= CLUB_ACC for a in lowest),
                   epochs=done[0]["epochs"], subset=done[0].get("subset"), device=devices_of(done))
    return row


LINE_LABELS = dict(model3="step 3's design", model4="step 4's design", club="the 99 % club's layout")


def line_of(design):
    """The line of the picture a point is on: its step's design, or (designs.py) the club's layout."""
    return "club" if design == CLUB[0] else design


def devices_of(runs):
    """Where the runs trained, each device once: a frontier completed on another machine says so."""
    return " and ".join(dict.fromkeys(m["device"] for m in runs)) or "n/a"


def frontier_markdown(summary):
    club = f", and the 99 % club's net over {summary['club_seeds']}" if summary["club"] else ""
    lines = [f"Step 3's design and step 4's at several sizes (their widths scaled by one factor), "
             f"{summary['seeds']} seeds each{club}; test accuracy after {summary['epochs']} epochs, on "
             f"{summary['device']}. 'met': seeds whose last 3 test accuracies "
             f"were all ≥ the line. Multiply-adds: per 28×28 image, as rf.md counts them. "
             f"Command: `{summary['command']}`.", "",
             "| design | widths (or flags) | params | multiply-adds | final test acc: mean (%) | min–max (%) "
             f"| lowest of last 3 epochs (%) | met {TARGET_ACC:.2f} | met {CLUB_ACC:.1f} | device |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        name = (r["design"] + (" (99 % club)" if r["flags"] == summary["club"] else "")
                + (f" ({r['completed']} of {r['seeds']} seeds completed)" if r["completed"] < r["seeds"] else ""))
        net = ",".join(map(str, r["widths"])) if r["widths"] else " ".join(r["flags"])
        head = f"| {name} | {net} | {r['params']:,} | {r['macs']:,} "
        if not r["completed"]:
            lines.append(head + "| no run completed | | | | | |")
            continue
        lines.append(head + f"| {r['mean_final_test_acc']:.3f} | {r['min_final_test_acc']:.2f}–"
                     f"{r['max_final_test_acc']:.2f} | {r['min_last3_test_acc']:.2f} | {r['met']}/{r['seeds']} "
                     f"| {r['met_club']}/{r['seeds']} | {r['device']} |")
    lines += ["", "Other people's points, drawn beside ours as they report them: each one number from runs they "
              "picked, not a line held over seeds:", ""]
    lines += [f"- {who}: {params:,} parameters, {acc} % — {how}." for params, acc, who, how in summary["public"]]
    return "\n".join(lines) + "\n"


def error(acc):
    """Test error (%): plotted on a log axis, 99.0 and 99.6 % are as far apart as 90 and 96 %."""
    return 100 - acc


def frontier_figure(summary):
    from matplotlib.ticker import FuncFormatter, NullFormatter
    plt = pyplot()
    fig, (ax, cost) = plt.subplots(1, 2, figsize=(13, 6.5), gridspec_kw=dict(width_ratios=(2, 1)), sharey=True)
    for line_name, marker in zip(LINE_LABELS, "os^"):
        rows = [r for r in summary["rows"] if r.get("line", r["design"]) == line_name and r["completed"]]
        if not rows:
            continue
        design = LINE_LABELS[line_name]
        mean = [error(r["mean_final_test_acc"]) for r in rows]
        spread = [[m - error(r["max_final_test_acc"]) for m, r in zip(mean, rows)],
                  [error(r["min_final_test_acc"]) - m for m, r in zip(mean, rows)]]
        line = ax.errorbar([r["params"] for r in rows], mean, yerr=spread, marker=marker, capsize=3,
                           label=f"{design}: final test acc, mean and min–max over its seeds")
        color = line.lines[0].get_color()
        ax.plot([r["params"] for r in rows], [error(r["min_last3_test_acc"]) for r in rows], marker=marker,
                linestyle=":", mfc="none", color=color, label=f"{design}: lowest of the last 3 epochs")
        cost.plot([r["macs"] for r in rows], mean, marker=marker, color=color)
    club = [r for r in summary["rows"] if r["flags"] == summary["club"] and r["completed"]]
    for r in club:
        for axis, x in ((ax, r["params"]), (cost, r["macs"])):
            axis.plot(x, error(r["mean_final_test_acc"]), marker="D", markersize=10, mfc="none", mew=2,
                      color="tab:green", linestyle="none",
                      label=f"the 99 % club: {r['params']:,} parameters, {r['met_club']}/{r['seeds']} seeds "
                            f"≥ {CLUB_ACC:.1f} % on their last 3 epochs (mean final)")
    for (params, acc, who, how), marker in zip(summary["public"], "*PXDh"):
        ax.plot(params, error(acc), marker=marker, markersize=11, color="black", linestyle="none",
                label=f"{who}: {params:,} p, {acc} % ({how})")
    for axis in (ax, cost):
        for acc, color in ((TARGET_ACC, "tab:red"), (CLUB_ACC, "tab:purple")):
            axis.axhline(error(acc), color=color, linewidth=1)
            axis.text(1.0, error(acc), f"{acc:g} % ", color=color, ha="right", va="bottom",
                      transform=axis.get_yaxis_transform())
        axis.set_xscale("log")
        axis.grid(True, which="both", alpha=0.3)
    ax.set_yscale("log")
    ax.invert_yaxis()  # higher accuracy up
    ax.set_yticks([e for e in (0.3, 0.4, 0.6, 1, 1.5, 2, 3, 4, 6, 10) if ax.get_ylim()[1] <= e <= ax.get_ylim()[0]])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{100 - value:g}"))  # the accuracy, not the error
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.axvline(BUDGET, color="grey", linestyle="--", linewidth=1, label=f"step 3's budget, {BUDGET:,} parameters")
    sizes = [r["params"] for r in summary["rows"]] + [point[0] for point in summary["public"]]
    ax.set_xticks([t for t in (500, 1000, 2000, 3000, 5000, 8000, 12000, 20000, 50000, 100000, 200000)
                   if min(sizes) * 0.8 <= t <= max(sizes) * 1.25])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))  # 2,000 rather than 2×10³
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("test accuracy (%; the axis is the error's log)")
    ax.set_title(f"What a parameter buys ({summary['epochs']} epochs)")
    cost.set_xlabel("multiply-adds per image (log scale)")
    cost.set_title("…and what it costs to run")
    fig.legend(*ax.get_legend_handles_labels(), fontsize=7, loc="lower center", ncol=2)  # below: the plots are data
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    return fig


def frontier_points(designs, sizes, club_sizes, club_seeds, seeds, extra):
    """[(design, flags, params, multiply-adds, seeds)]: each design at its own size and scaled to each size, the
    club's layout scaled to each of `club_sizes`, and the club's net (its seeds replace a point's own where a size
    lands on the same net). Each net is built from its
    runs' flags with `extra`, so a command line its step would refuse is a UsageError here, before any run."""
    points = {}
    for design in designs:
        def net_at(widths, design=design):  # as the step's command line builds it
            return net_of(design, ["--widths", ",".join(map(str, widths))])
        own_widths = importlib.import_module(design).DEFAULTS["widths"]
        own = (own_widths, count_params(net_at(own_widths)))
        for widths, params in [own, *(widths_for(net_at, own[0], size) for size in sizes)]:
            points[(design, params)] = ("--widths", ",".join(map(str, widths))), seeds  # two sizes may round to one
    if club_sizes:
        widths, flags_for = club_layout()
        for size in club_sizes:
            best, params = widths_for(lambda widths: net_of(CLUB[0], list(flags_for(widths))), widths, size)
            points[(CLUB[0], params)] = flags_for(best), seeds
    if club_seeds:
        design, flags = CLUB
        points[(design, count_params(net_of(design, list(flags))))] = flags, list(range(1, club_seeds + 1))
    built = []
    for (design, params), (flags, point_seeds) in sorted(points.items()):
        try:
            net = net_of(design, [*flags, *extra])
        except UsageError as e:
            raise UsageError(f"{design}.py {' '.join(flags)}: {e}" + (" (or leave the club out: --club-seeds 0)"
                                                                      if flags == CLUB[1] else "")) from None
        built.append((design, flags, params, multiply_adds(net), point_seeds))
    return built


def main(argv=None):
    parser = OneLineParser(prog="lab.frontier", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=sizes_list, default=sizes_list(SIZES),
                        help=f"parameter counts to scale each design to (default: {SIZES})")
    parser.add_argument("--designs", default=",".join(DESIGNS),
                        help="steps whose design is scaled (default: %(default)s)")
    parser.add_argument("--seeds", type=positive_int, default=3, help="seeds per point (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=1, help="the first seed (default: %(default)s)")
    parser.add_argument("--club-sizes", type=club_sizes_list, default=sizes_list(CLUB_SIZES),
                        help=f"parameter counts to scale the club's layout to, --seeds seeds each; 'none' for no "
                             f"such line (default: {CLUB_SIZES})")
    parser.add_argument("--club-seeds", type=non_negative_int, default=10,
                        help="seeds 1..N of the 99 %% club's net; 0 leaves it out (default: %(default)s)")
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
    try:  # a run that cannot start is refused here, not after the others have trained
        points = frontier_points(designs, args.sizes, args.club_sizes, args.club_seeds,
                                 list(range(args.seed, args.seed + args.seeds)), extra)
    except UsageError as e:
        parser.error(str(e))
    out = Path(args.out)
    return run_main("lab.frontier", lambda: frontier(args, argv, points, extra, out),
                    interrupted=f"completed runs are kept in {out}/runs and are reused by the next frontier run; "
                                "frontier.json was not updated")


def frontier(args, argv, points, extra, out):
    check_writable(out)
    runs = [(point, seed) for point in points for seed in point[4]]
    print(f"frontier: {len(points)} nets, {len(runs)} runs, {args.jobs} at a time, into {out}/runs")
    results = run_commands([step_run(os.path.relpath(ROOT / f"{design}.py"), [*flags, *extra], seed,
                                     out / "runs" / f"{design}-{params}" / f"seed-{seed}")
                            for (design, flags, params, _, _), seed in runs], args.jobs, cluster=args.cluster)
    by_point = {}
    for (point, _), metrics in zip(runs, results):
        by_point.setdefault(point[:3], []).append(metrics)
    done = [m for m in results if m is not None]
    summary = dict(seeds=args.seeds, club_seeds=args.club_seeds, club=list(CLUB[1]) if args.club_seeds else None,
                   code=checkout_state(),
                   club_share=CLUB_SHARE, club_sizes=args.club_sizes,
                   public=[list(point) for point in PUBLIC],
                   epochs=done[0]["epochs"] if done else args.epochs, device=devices_of(done), subset=args.subset,
                   command=command_line("lab.frontier", sys.argv[1:] if argv is None else argv),
                   rows=[summarise(point, by_point[point[:3]]) for point in points])
    atomic_write_json(out / "frontier.json", summary)
    atomic_write_text(out / "frontier.md", frontier_markdown(summary))
    atomic_save_figure(frontier_figure(summary), out / "frontier.png")
    print(frontier_markdown(summary))
    return 0 if all(r["completed"] == r["seeds"] for r in summary["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
