"""What the sweep engine costs: the same runs through Dask and as plain subprocesses, in one run on one machine.

    python -m lab.bench_sweep      # 4 seeds of `model3.py --subset 2000 --epochs 1`: results/sweep-bench.json

Three sides, one after another: the plain one runs the command lines one after another as plain subprocesses,
each with every core, as a user would without a sweep; then the same runs as a sweep with `--jobs 1` (the
engine's own cost: a LocalCluster of one worker started, each run a subprocess of a task with every core, its
files sent back and written by the driver, the cluster closed) and with `--jobs J` (J at once, cpu_count // J
threads each). Each side is timed from its start to its last file written, into a temporary folder of its own;
only the JSON is kept.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.cli import OneLineParser, command_line, positive_int
from harness.errors import TrainingError, run_main
from harness.files import atomic_write_json, check_writable
from harness.runs import completed_run, run_commands
from lab import step_run

ROOT = Path(__file__).resolve().parent.parent  # the project's folder, where the steps are


def plain_runs(runs):
    """The runs one after another, each a plain subprocess with every core; their metrics."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for run in runs:
        if subprocess.run(run.argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
            raise TrainingError(f"the plain run {command_line(run.argv[1], run.argv[2:])!r} failed")
    return [completed_run(run.out, command_line(run.argv[1], run.argv[2:])) for run in runs]


def timed(work):
    started = time.perf_counter()
    result = work()
    return result, round(time.perf_counter() - started, 1)


def bench(args, argv):
    check_writable(Path(args.out).parent)
    flags = ["--subset", str(args.subset), "--epochs", str(args.epochs)]
    script = os.path.relpath(ROOT / "model3.py")
    sides = {"plain": plain_runs, "dask-1": lambda runs: run_commands(runs, 1),
             f"dask-{args.jobs}": lambda runs: run_commands(runs, args.jobs)}
    print(f"bench_sweep: {args.seeds} runs of `python model3.py {' '.join(flags)}` one after another as plain "
          f"subprocesses, then through Dask with --jobs 1 and --jobs {args.jobs}; {os.cpu_count()} cores")
    rows = []
    with tempfile.TemporaryDirectory(prefix="sweep-bench-") as scratch:
        for side, sweep in sides.items():
            runs = [step_run(script, flags, seed, Path(scratch) / side / f"seed-{seed}")
                    for seed in range(1, args.seeds + 1)]
            metrics, seconds = timed(lambda: sweep(runs))
            if None in metrics:
                raise TrainingError(f"a run of the {side} side failed")
            rows.append(dict(side=side, wall_s=seconds, device=metrics[0]["device"],
                             train_s=[m["train_seconds"] for m in metrics]))
            print(f"  {side}: {seconds:.1f} s ({rows[-1]['device']})")
    result = dict(command=command_line("lab.bench_sweep", sys.argv[1:] if argv is None else argv),
                  date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), cores=os.cpu_count(), runs=args.seeds,
                  run_flags=" ".join(flags), sides=rows)
    atomic_write_json(args.out, result)
    print(f"bench_sweep: wrote {args.out}")
    return 0


def main(argv=None):
    parser = OneLineParser(prog="lab.bench_sweep", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=positive_int, default=4, help="runs on each side (default: %(default)s)")
    parser.add_argument("--jobs", type=positive_int, default=2, help="Dask runs at once (default: %(default)s)")
    parser.add_argument("--subset", type=positive_int, default=2000, help="images per split (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=1, help="epochs per run (default: %(default)s)")
    parser.add_argument("--out", default="results/sweep-bench.json", help="where to write the JSON")
    args = parser.parse_args(argv)
    return run_main("lab.bench_sweep", lambda: bench(args, argv), f"{args.out} was not written")


if __name__ == "__main__":
    sys.exit(main())
