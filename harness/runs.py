"""Many runs: each run a process of its own, `jobs` at once; a run already completed with the same command and
the same settings is reused, so an interrupted sweep goes on where it stopped; and a step over several seeds.

A run's process records its own command (harness.cli.command_line) and settings in its metrics.json; the reuse
check compares both, since the same command can mean another recipe once a step's DEFAULTS change.
"""
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from harness.cli import command_line, settings_meant_by, settings_recorded_in, settings_to_record
from harness.errors import TrainingError
from harness.files import atomic_write_json, atomic_write_text


@dataclasses.dataclass(frozen=True)
class Run:
    """One run for a process of its own: its command line [python, script, flags...], its output folder, and the
    settings (harness.cli.settings_meant_by) a completed run there must have been made with to be reused."""
    argv: tuple
    out: Path
    settings: dict = None


def step_argv(script, flags, seed, out):
    """The command line of one run of a step: its flags, then the seed and the output folder."""
    return (sys.executable, str(script), *map(str, flags), "--seed", str(seed), "--out", str(out))


def step_run(script, flags, seed, out, defaults):
    """A Run of a step's `script` with `flags`, a seed and a folder; a completed run there is reused while it was
    made with the settings these flags mean today under the step's `defaults`."""
    argv = step_argv(script, flags, seed, out)
    return Run(argv, Path(out), settings_meant_by(argv[2:], defaults))


def completed_run(out, command, settings=None):
    """The metrics of a run that `command` already completed into `out` with `settings` (settings_to_record's form;
    None: any), else None: a sweep that was interrupted goes on where it stopped instead of training those runs
    again, and a run made before a step's defaults changed is trained again."""
    try:
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or metrics.get("command") != command:
        return None
    if settings is not None and settings_recorded_in(metrics) != settings:
        return None
    return metrics


RUNNING, STOPPING = set(), threading.Event()  # child processes under way; set once they are being ended
_RUNNING_LOCK = threading.Lock()  # a child is registered, or the set is emptied for ending, never both at once
STARTING = set()  # an Event for each start under way, set once its child is registered or ended


def start_process(argv, **popen_kwargs):
    """subprocess.Popen, registered so that end_processes() ends it. Ctrl-C and SIGTERM are raised in the main
    thread, wherever it is — even inside Thread.start — so the start and the registration both happen in a helper
    thread that no signal interrupts; end_processes() waits for a start under way, and a child started after it
    ran is ended by the helper itself."""
    started, done = {}, threading.Event()

    def start():
        try:
            process = subprocess.Popen(argv, **popen_kwargs)
        except OSError as e:
            started["error"] = e
        else:
            with _RUNNING_LOCK:
                stopping = STOPPING.is_set()
                if not stopping:
                    RUNNING.add(process)
            if stopping:
                _end([process])
            started["process"] = process
        finally:
            done.set()
            STARTING.discard(done)

    STARTING.add(done)  # before the thread exists, so that an interrupt inside Thread.start still finds it
    threading.Thread(target=start).start()
    done.wait()
    if "error" in started:
        raise started["error"]
    return started["process"]


def _end(processes, grace=5.0):
    """SIGTERM to each (a step stops as on Ctrl-C and writes nothing), then SIGKILL to any still running after
    `grace` seconds."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def end_processes(grace=5.0):
    """End every child process under way, and any started from now on."""
    with _RUNNING_LOCK:
        STOPPING.set()
        processes = list(RUNNING)
        RUNNING.clear()
    for starting in list(STARTING):  # its helper ends the child itself; an interrupt before the helper existed
        starting.wait(grace)          # leaves an Event that is never set, hence the time limit
    _end(processes, grace)


def run_commands(runs, jobs, report=print):
    """Do each Run as a subprocess of its own, `jobs` at a time, the cores shared out between them (each with
    cpu_count // jobs threads), the output of each in out/log.txt. A run already completed is reused. Returns each
    run's metrics, or None where it failed; an interrupt ends the runs under way."""
    from concurrent.futures import ThreadPoolExecutor
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()

    def run(item):
        command = command_line(item.argv[1], item.argv[2:])
        metrics = completed_run(item.out, command, item.settings)
        if metrics is None:
            Path(item.out).mkdir(parents=True, exist_ok=True)
            with open(Path(item.out) / "log.txt", "w") as log:
                # A session of its own: Ctrl-C reaches the parent alone, which ends the runs under way.
                process = start_process(item.argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
                process.wait()
                RUNNING.discard(process)
            metrics = completed_run(item.out, command, item.settings)
        report(f"  {item.out}: " + ("failed (see log.txt there)" if metrics is None else
                                    "last epochs " + "/".join(f"{a:.2f}" for a in metrics.get("last_val_accs") or
                                                              metrics["last_test_accs"])
                                    + (" (validation)" if metrics.get("last_val_accs") else " (test)"))
               + f"  [{time.perf_counter() - started:.0f} s]")
        return metrics

    pool = ThreadPoolExecutor(jobs)
    try:
        return list(pool.map(run, runs))
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        end_processes()
        raise


def seed_flags(argv):
    """A --seeds command's flags as one seed's run takes them: --seeds and --jobs dropped (the seed and the folder
    come after, and argparse keeps the last --seed and --out)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--seeds", "--jobs"):
            skip = True
        elif not arg.startswith(("--seeds=", "--jobs=")):
            kept.append(arg)
    return kept


def run_seeds(name, script, config, targets, out, count, argv, train, jobs=1, log=print):
    """Step `name` (its file `script`) over `count` seeds: per-seed runs in out/seeds/seed-N, then seeds.json and
    seeds.md. With jobs > 1 the seeds run as separate processes, `jobs` at once; else one after another here, by
    `train(config, out, command)`, which returns a run's metrics. A seed already completed is not run again."""
    seeds = list(range(config.seed, config.seed + count))
    configs = [dataclasses.replace(config, seed=seed) for seed in seeds]
    runs = [Run(step_argv(script, seed_flags(argv), seed, out / "seeds" / f"seed-{seed}"),
                out / "seeds" / f"seed-{seed}", settings_to_record(seed_config))
            for seed, seed_config in zip(seeds, configs)]
    if jobs > 1:
        log(f"{name}: {count} seeds, {jobs} at a time; each one's output in {out / 'seeds'}/seed-N/log.txt")
        results = run_commands(runs, jobs, log)
        if any(m is None for m in results):
            failed = [str(seed) for seed, m in zip(seeds, results) if m is None]
            raise TrainingError(f"seed(s) {', '.join(failed)} failed; see log.txt in their folders under "
                                f"{out / 'seeds'}")
    else:
        results = []
        for index, (seed, seed_config, run) in enumerate(zip(seeds, configs, runs), 1):
            command = command_line(run.argv[1], run.argv[2:])
            metrics = completed_run(run.out, command, run.settings)
            log(f"\n=== {name}: seed {seed} ({index} of {count}){' — done before, kept' if metrics else ''} ===")
            if metrics is None:
                metrics = train(seed_config, run.out, command)
            results.append(metrics)
    rows = [dict(seed=seed, final_test_acc=m["final_test_acc"], last3_min_test_acc=min(m["last_test_accs"]),
                 passed=m["passed"], train_seconds=m["train_seconds"]) for seed, m in zip(seeds, results)]
    finals = np.array([r["final_test_acc"] for r in rows])
    met = sum(r["passed"] is True for r in rows)
    command = command_line(script, argv)
    summary = dict(model=name, device=results[0]["device"], command=command, seeds=rows,
                   mean_final_test_acc=round(float(finals.mean()), 3),
                   std_final_test_acc=round(float(finals.std(ddof=1)) if len(finals) > 1 else 0.0, 3),
                   min_final_test_acc=round(float(finals.min()), 2),
                   min_last3_test_acc=min(r["last3_min_test_acc"] for r in rows),
                   met_target=met, count=count, min_test_acc=targets.min_test_acc)
    atomic_write_json(out / "seeds.json", summary)
    atomic_write_text(out / "seeds.md", seeds_markdown(summary))
    line = (f"{name} seeds: {met}/{count} met the target (≥ {targets.min_test_acc:.2f} on each of the last "
            f"{targets.last_epochs} epochs); final test acc {summary['mean_final_test_acc']:.3f} ± "
            f"{summary['std_final_test_acc']:.3f}, lowest {summary['min_final_test_acc']:.2f}")
    log(seeds_markdown(summary) + "\n" + line)
    return met == count


def seeds_markdown(summary):
    lines = ["| seed | final test acc (%) | min of last 3 (%) | met target | train s |", "|---|---|---|---|---|"]
    for r in summary["seeds"]:
        met = {True: "yes", False: "no", None: "n/a"}[r["passed"]]
        lines.append(f"| {r['seed']} | {r['final_test_acc']:.2f} | {r['last3_min_test_acc']:.2f} | {met} | "
                     f"{r['train_seconds']:.0f} |")
    lines.append(f"| **mean ± std** | **{summary['mean_final_test_acc']:.3f} ± {summary['std_final_test_acc']:.3f}** "
                 f"| | **{summary['met_target']}/{summary['count']}** | |")
    return "\n".join(lines) + "\n"


