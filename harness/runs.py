"""Many runs: each run a process of its own, executed by a Dask task (`--jobs J` of them at once on a LocalCluster
started for the sweep, or on the workers of a running scheduler with `--cluster`), or one after another here; a
run already completed with the same command, the same settings and the same code is reused, so an interrupted
sweep goes on where it stopped, and any other is trained again with a line that says why; and a step over several
seeds.

A run's process records its own command (harness.cli.command_line), settings and code (harness/provenance.py) in
its metrics.json; the reuse check compares all three, since the same command can mean another recipe once a step's
DEFAULTS change, and another computation once its code does. A run trained again is set aside, not lost. Dask is
imported only once a sweep has a run to do: a single run never starts it.
"""
import contextlib
import ctypes
import dataclasses
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np

from harness.cli import (RUN_FOLDER_ENV, beside_retired, command_line, same_command, settings_recorded_in,
                         settings_to_record, without_flags)
from harness.errors import TrainingError, UsageError, os_reason
from harness.files import atomic_write_json, atomic_write_text, recover_folder, replace_run
from harness.provenance import code_of_run, what_differs


@dataclasses.dataclass(frozen=True)
class Run:
    """One run for a process of its own: its command line [python, script, flags...], its output folder, and what a
    completed run there must have been made with to be reused: the settings (harness.cli.settings_meant_by) and the
    code (harness.provenance.code_record's fingerprint and parts). None: any."""
    argv: tuple
    out: Path
    settings: dict = None
    code: dict = None


def step_argv(script, flags, seed, out):
    """The command line of one run of a step: its flags, then the seed and the output folder."""
    return (sys.executable, str(script), *map(str, flags), "--seed", str(seed), "--out", str(out))


def reuse(out, command, settings=None, code=None):
    """(metrics, "") for the run that `command` already completed into `out` with `settings` (settings_to_record's
    form) and the code of `code`'s fingerprint, or (None, why not): a sweep that was interrupted goes on where it
    stopped, and a run of another recipe or of other code is trained again. `settings` or `code` None: any."""
    try:
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    except FileNotFoundError:
        return None, "not run yet"
    except (OSError, ValueError):
        return None, "its metrics.json cannot be read"
    if not isinstance(metrics, dict) or not same_command(metrics.get("command"), command):
        return None, "made by another command"
    recorded = settings_recorded_in(metrics)
    if (metrics.get("code") or {}).get("shown_same"):  # lab/vouch.py ran its retired settings' code against today's
        recorded = beside_retired(recorded)
    if settings is not None and recorded != settings:
        return None, "made with other settings (the step's defaults have changed since)"
    if code is not None:
        fingerprint, parts = code_of_run(metrics)
        if fingerprint is None:
            return None, "made by unknown code (before runs recorded theirs)"
        if fingerprint != code["fingerprint"]:
            differs = what_differs(parts, code.get("parts"))
            return None, "made by other code" + (f" ({differs} changed)" if differs else "")
    return metrics, ""


def completed_run(out, command, settings=None, code=None):
    """The metrics of the run reuse() would reuse, else None."""
    return reuse(out, command, settings, code)[0]


OTHER_CODE = "runs-of-other-code"  # beside a run's folder: the runs a sweep replaced, by their code's fingerprint
KEPT = {"": "made by the same code before — kept",  # why reusable_run reused a run, as a sweep's line says it
        "brought back": f"made by the same code before — brought back from {OTHER_CODE}/"}


def set_aside(out):
    """Move the completed run in `out`, if it holds one, to OTHER_CODE/FINGERPRINT/ beside it (replacing a run set
    aside there before): a sweep that trains a run again never loses the one it replaces, and brings it back once
    its code is today's again (an edit undone)."""
    try:
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    except (OSError, ValueError):
        return
    kept = Path(out).parent / OTHER_CODE / (code_of_run(metrics)[0] or "unknown") / Path(out).name
    if kept.exists():
        shutil.rmtree(kept)
    kept.parent.mkdir(parents=True, exist_ok=True)
    os.replace(out, kept)


def reusable_run(run, command):
    """reuse() for the Run `run`, once an interrupted write of its folder is undone (recover_folder): the sweep that
    goes on from a killed one finds each run whole, the previous one or the new one. Where the folder's run is not
    reusable but one of today's code was set aside beside it (set_aside), that one comes back and is reused."""
    recover_folder(run.out)
    metrics, why = reuse(run.out, command, run.settings, run.code)
    kept = run.out.parent / OTHER_CODE / run.code["fingerprint"] / run.out.name if run.code else None
    if metrics is None and kept is not None and reuse(kept, command, run.settings, run.code)[0]:
        set_aside(run.out)
        shutil.rmtree(run.out, ignore_errors=True)  # what is left: a failed run's log
        os.replace(kept, run.out)
        return reuse(run.out, command, run.settings, run.code)[0], "brought back"
    return metrics, why


CONNECT_SECONDS = 10
POLL_SECONDS = 0.5  # how often a task looks whether the driver still wants its run
PR_SET_PDEATHSIG = 1  # linux/prctl.h
UNREADABLE_TASK = "Error during deserialization of the task graph"  # how a scheduler says it could not unpickle one
WHAT_A_CLUSTER_NEEDS = "see lab/README.md, Sweeps across machines"


class WorkerOutsideCheckout(Exception):
    """Raised by run_on_worker on a worker whose folder holds no checkout of the project: it cannot run a step.
    It travels to the worker by value with run_on_worker and back with the error, and cloudpickle gives the driver
    this very class again, so the driver recognises it."""


def run_commands(runs, jobs, report=print, cluster=None):
    """Do each Run as a subprocess of its own, each executed by a Dask task, and return each run's metrics, or
    None where it failed. A run already completed is reused without Dask. The rest go to the scheduler at
    `cluster` (tcp://HOST:PORT), else to a LocalCluster of `jobs` single-threaded worker processes started here,
    each run with cpu_count // jobs threads. The driver writes each run's log.txt and files into its folder
    (run_on_worker: no shared filesystem needed). Ctrl-C or SIGTERM cancels the runs under way, and the cluster
    started here is closed."""
    started = time.perf_counter()
    commands = [command_line(run.argv[1], run.argv[2:]) for run in runs]
    results = []
    for run, command in zip(runs, commands):
        metrics, why = reusable_run(run, command)
        report(outcome_line(run, metrics, started) + f" ({KEPT[why]})" if metrics else
               f"  {run.out}: {why} — to train")
        if metrics is None:
            set_aside(run.out)
        results.append(metrics)
    to_do = [index for index, metrics in enumerate(results) if metrics is None]
    if not to_do:
        return results
    from distributed import as_completed
    try:
        with dask_client(cluster, jobs) as (client, where):
            task = SentByValue(run_on_worker)
            futures = {client.submit(task, runs[i].argv, *where, pure=False, retries=1): i for i in to_do}
            try:
                for future in as_completed(futures):
                    index = futures[future]
                    if future.status == "error":
                        refuse_a_cluster_that_cannot_run_it(future.exception(), client.scheduler.address)
                    results[index], why = keep_run(runs[index], commands[index], future)
                    report(outcome_line(runs[index], results[index], started, why))
            except BaseException:  # an interrupt, or a cluster that cannot run the project: no run goes on
                client.cancel(list(futures))  # each task kills its run (run_on_worker)
                raise
    except OSError as e:  # the cluster's connection (or its start); a failed write of a run's files is a DataError
        raise TrainingError(f"the Dask cluster {f'at {cluster}' if cluster else 'started for the sweep'} failed: "
                            f"{os_reason(e)}; the runs completed so far are kept, and the same command goes on "
                            "from them") from None
    return results


class SentByValue:
    """A function that a Dask task carries as its code (pickled by cloudpickle with this module registered by value)
    rather than as the name of its module, which plain pickle would send: the scheduler unpickles every task it is
    sent, and neither it nor a worker has this project on its path (a worker needs only to be started in a
    checkout, where run_on_worker runs the step). Unpickled, it is the function itself."""

    def __init__(self, function):
        self.function = function

    def __call__(self, *args, **kwargs):  # the embedded cluster's tasks, and a test, may call it unpickled
        return self.function(*args, **kwargs)

    def __reduce__(self):
        import cloudpickle
        this = sys.modules[__name__]
        cloudpickle.register_pickle_by_value(this)
        try:
            return pickle.loads, (cloudpickle.dumps(self.function),)
        finally:
            cloudpickle.unregister_pickle_by_value(this)


def refuse_a_cluster_that_cannot_run_it(error, address):
    """A task that failed because the cluster at `address` cannot run the project at all is a UsageError saying
    what to do (every run would fail the same way); any other failure returns, for keep_run to record as lost."""
    if isinstance(error, WorkerOutsideCheckout):
        raise UsageError(f"{error}; start `dask worker` in the project's folder ({WHAT_A_CLUSTER_NEEDS})")
    if isinstance(error, RuntimeError) and str(error).startswith(UNREADABLE_TASK):
        import dask
        raise UsageError(f"the Dask scheduler at {address} could not read the sweep's tasks; start it and its "
                         f"workers with this driver's Python {sys.version.split()[0]} and dask {dask.__version__} "
                         f"({WHAT_A_CLUSTER_NEEDS})")


def outcome_line(run, metrics, started, why="failed (see log.txt there)"):
    return (f"  {run.out}: " + (why if metrics is None else metrics["diverged"] if metrics.get("diverged") else
                                "last epochs " + "/".join(f"{a:.2f}" for a in metrics.get("last_val_accs") or
                                                          metrics["last_test_accs"])
                                + (" (validation)" if metrics.get("last_val_accs") else " (test)"))
            + f"  [{time.perf_counter() - started:.0f} s]")


def completed_runs(runs):
    """The metrics of the runs that trained to their last epoch: not a failed one (None), not one whose loss became
    NaN (its metrics record where it "diverged")."""
    return [m for m in runs if m is not None and not m.get("diverged")]


def keep_run(run, command, future):
    """Put what a finished task sent back into the run's folder as one whole (harness.files.replace_run): its
    log.txt and the files the run wrote, or the log alone for a run that failed or was lost, so a folder never
    keeps a previous run's log or files beside this one's. Returns (the run's metrics as reuse() reads them back,
    "") or (None, why not: failed, or made by other code than the driver's on its worker)."""
    if future.status == "error":  # its workers died, or the task itself failed: the run is lost, the sweep goes on
        metrics, log, files = None, f"the run was lost: {future.exception()!r}\n", {}
    else:
        metrics, log, files = future.result()
    replace_run(run.out, {**(files if metrics is not None else {}), "log.txt": log})
    if metrics is None:
        return None, "failed (see log.txt there)"
    metrics, why = reuse(run.out, command, run.settings, run.code)  # a worker's checkout may hold other code
    return metrics, why and f"{why} on its worker: counted as failed (its files are kept there)"


@contextlib.contextmanager
def dask_client(address, jobs):
    """A Dask Client, and where its tasks run (run_on_worker's cwd, env and gpus): of the scheduler at `address`,
    or of a LocalCluster of `jobs` worker processes started here and closed on the way out. A scheduler that does
    not answer within CONNECT_SECONDS is a UsageError, before any run starts."""
    import dask
    from distributed import Client, LocalCluster
    logging.getLogger("distributed").setLevel(logging.CRITICAL)  # its notes on shutting down are not the user's
    # The scheduler's small HTTP server (health and metrics, on 127.0.0.1) takes another port when 8787 is taken.
    warnings.filterwarnings("ignore", message="Port 8787 is already in use", category=UserWarning)
    if address:
        try:
            client = Client(address, timeout=CONNECT_SECONDS)
        except (OSError, ValueError, TimeoutError) as e:
            raise UsageError(f"argument --cluster: no Dask scheduler answered at {address!r} within "
                             f"{CONNECT_SECONDS} s ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                             f"start one with `dask scheduler`, or check the address") from None
        passed = {"PYTHONUNBUFFERED": "1"}
        if "MNIST_DATA_DIR" in os.environ:  # the driver's data folder, for workers of the same layout
            passed["MNIST_DATA_DIR"] = os.environ["MNIST_DATA_DIR"]
        with client:
            yield client, (None, passed, ())
        return
    before = dict(os.environ)  # as it is now: starting the cluster adds the nanny's variables to this process's
    env = {**before, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // jobs)), "PYTHONUNBUFFERED": "1"}
    where = (os.getcwd(), env, visible_gpus())
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):  # a run whose worker died: once more
        cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None,
                               host="127.0.0.1", silence_logs=logging.CRITICAL)
    try:
        with Client(cluster) as client:
            yield client, where
    finally:
        cluster.close()
        os.environ.clear()  # without the nanny's OMP_NUM_THREADS=1 and the like: this process goes on as it was
        os.environ.update(before)


def visible_gpus():
    """This machine's GPUs as CUDA_VISIBLE_DEVICES names them (all of them where it is unset)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return tuple(gpu.strip() for gpu in visible.split(",") if gpu.strip())
    import torch
    return tuple(str(index) for index in range(torch.cuda.device_count()))


def gpu_for(worker_index, gpus):
    """The GPU worker `worker_index` of the embedded cluster gives its runs: the workers take the GPUs in turn, so
    --jobs N×K on a machine with N GPUs puts K runs on each."""
    return gpus[worker_index % len(gpus)]


def run_on_worker(argv, cwd, env, gpus):
    """A Dask task: one run's command line `argv` in a subprocess on this worker, returning (its metrics or None,
    its output as text, {file name: bytes} of the files it wrote) for the driver to write into the run's folder.

    The rule that keeps a run's recorded command as it always was, with no shared filesystem: the child gets the
    run's argv unchanged (its --out included, which is what its metrics.json records and what completed_run
    compares), and MNIST_RUN_FOLDER, a folder of this worker's own, where the step writes instead of --out
    (common.run_step). Relative or absolute, --out is only ever written by the driver.

    `cwd` is the driver's folder on the embedded cluster, on the same machine: the run is the process it was
    before, in that folder, with the whole environment `env`. None on an external cluster: the run is the step's
    script in the checkout this worker was started in (its current folder; `dask worker` in the project's folder),
    run there, with this worker's environment and `env` over it; a worker started elsewhere raises
    WorkerOutsideCheckout. This function reaches the worker by value (SentByValue): it can use only the standard
    library, distributed and this module's own names.
    With `gpus`, the worker's runs see only gpu_for(its index) (the embedded cluster's workers are 0..J-1).
    The child has a session of its own, is killed when the driver cancels the task, and on Linux dies with the
    worker (PR_SET_PDEATHSIG)."""
    from distributed import get_worker
    worker = get_worker()
    if cwd is None:
        cwd = Path.cwd()
        script = cwd / Path(argv[1]).name
        if not script.is_file():
            raise WorkerOutsideCheckout(f"the Dask worker at {worker.address} has no {script.name} in its folder "
                                        f"{cwd}")
        argv, env = (argv[0], str(script), *argv[2:]), {**os.environ, **env}
    with tempfile.TemporaryDirectory(prefix="run-", dir=worker.local_directory) as scratch:
        folder, log_path = Path(scratch) / "out", Path(scratch) / "log.txt"
        env = {**env, RUN_FOLDER_ENV: str(folder)}
        if gpus and isinstance(worker.name, int):
            env["CUDA_VISIBLE_DEVICES"] = gpu_for(worker.name, gpus)
        with open(log_path, "wb") as log:
            returncode = run_child((sys.executable, *argv[1:]), cwd, env, log, lambda: wanted(worker))
        files = {path.relative_to(folder).as_posix(): path.read_bytes()
                 for path in sorted(folder.rglob("*")) if path.is_file()}
        log_text = log_path.read_text(errors="replace")
    # metrics.json is a run's last file: there means complete, a run that missed its target included (exit 1)
    metrics = json.loads(files["metrics.json"]) if returncode is not None and "metrics.json" in files else None
    return metrics, log_text, files


def wanted(worker):
    """False once the driver has cancelled the task this worker thread runs, or the worker is closing."""
    task = worker.state.tasks.get(worker.get_current_task())
    return (task is not None and task.state != "cancelled"
            and worker.status.name not in ("closing", "closed", "failed"))


def run_child(argv, cwd, env, log, still_wanted):
    """Run `argv` to its end and return its exit status; or kill it, its whole session, once `still_wanted()`
    says no, and return None."""
    child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True, preexec_fn=dies_with_parent())
    try:
        while True:
            try:
                return child.wait(POLL_SECONDS)
            except subprocess.TimeoutExpired:
                if not still_wanted():
                    return None
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def dies_with_parent():
    """A preexec_fn that has Linux SIGKILL the child when the thread that started it ends (a worker killed mid-run
    leaves no training behind); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: the child only calls it
    parent = os.getpid()

    def preexec():
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the worker died before prctl took hold: no signal would come
            os._exit(1)
    return preexec


SWEEP_FLAGS = ("--seeds", "--jobs", "--cluster")  # how a step's runs are shared out, not what one run does


def seed_flags(argv):
    """A --seeds command's flags as one seed's run takes them: SWEEP_FLAGS, --seed and --out dropped (its own seed
    and folder come after), so that a seed's recorded command makes that run alone, wherever it runs."""
    return without_flags(argv, (*SWEEP_FLAGS, "--seed", "--out"))


def run_seeds(name, script, config, targets, out, count, argv, code, jobs=1, log=print, cluster=None):
    """Step `name` (its file `script`) over `count` seeds: each seed its command as one run of its own, a process
    (`--seed N --out out/seeds/seed-N`), then seeds.json and seeds.md. With jobs > 1 or a `cluster` the processes
    run through run_commands; else one after another here, each one's output shown as it comes. A seed already
    completed by the same command, settings and code (`code`, this command's code_record) is not run again; every
    other is, and a line says why. Returns the verdict of the step's seed rule (`targets.seeds_needed`): True or
    False, None where a seed's accuracy was not judged (a smoke run)."""
    seeds = list(range(config.seed, config.seed + count))
    today = dict(fingerprint=code["fingerprint"], parts=code["parts"])
    runs = [Run(step_argv(script, seed_flags(argv), seed, out / "seeds" / f"seed-{seed}"),
                out / "seeds" / f"seed-{seed}", settings_to_record(dataclasses.replace(config, seed=seed)), today)
            for seed in seeds]
    where = f"on the Dask cluster at {cluster}" if cluster else f"{jobs} at a time" if jobs > 1 else "in turn"
    log(f"{name}: {count} seeds, {where}; each one's output in {out / 'seeds'}/seed-N/log.txt")
    results = run_commands(runs, jobs, log, cluster) if jobs > 1 or cluster else run_in_turn(runs, log)
    if any(m is None for m in results):
        failed = [str(seed) for seed, m in zip(seeds, results) if m is None]
        raise TrainingError(f"seed(s) {', '.join(failed)} failed; see log.txt in their folders under "
                            f"{out / 'seeds'}")
    # A seed whose loss became NaN did not hold the line: a row that says where it stopped, counted as not met;
    # the accuracies' statistics are of the seeds that trained to the end.
    rows = [dict(seed=seed, final_test_acc=m["final_test_acc"],
                 last3_min_test_acc=min(m["last_test_accs"]) if m["last_test_accs"] else None,
                 passed=m["passed"], train_seconds=m["train_seconds"],
                 **({"diverged": m["diverged"]} if m.get("diverged") else {})) for seed, m in zip(seeds, results)]
    trained = [r for r in rows if not r.get("diverged")]
    finals = np.array([r["final_test_acc"] for r in trained])
    if not len(finals):
        raise TrainingError(f"the loss of every seed became NaN; see log.txt in their folders under {out / 'seeds'}")
    met, needed = sum(r["passed"] is True for r in rows), targets.seeds_needed(count)
    codes = [m.get("code") or {} for m in results]  # each run's: the same fingerprint, perhaps other commits
    summary = dict(model=name, device=results[0]["device"], command=command_line(script, argv),
                   code=dict(fingerprint=code["fingerprint"],
                             commits=sorted({c["commit"] for c in codes if c.get("commit")}),
                             uncommitted=sorted({f for c in codes for f in c.get("uncommitted") or []})), seeds=rows,
                   mean_final_test_acc=round(float(finals.mean()), 3),
                   std_final_test_acc=round(float(finals.std(ddof=1)) if len(finals) > 1 else 0.0, 3),
                   min_final_test_acc=round(float(finals.min()), 2),
                   min_last3_test_acc=min(r["last3_min_test_acc"] for r in trained),
                   diverged=[r["seed"] for r in rows if r not in trained], met_target=met, count=count,
                   min_test_acc=targets.min_test_acc,
                   min_seed_share=targets.min_seed_share, seeds_needed=needed,
                   passed=None if any(r["passed"] is None for r in rows) else met >= needed)
    atomic_write_json(out / "seeds.json", summary)
    atomic_write_text(out / "seeds.md", seeds_markdown(summary))
    line = (f"{name} seeds: {met}/{count} met the target (≥ {targets.min_test_acc:.2f} on each of the last "
            f"{targets.last_epochs} epochs); {seed_rule_verdict(summary)}; final test acc "
            f"{summary['mean_final_test_acc']:.3f} ± {summary['std_final_test_acc']:.3f}, lowest "
            f"{summary['min_final_test_acc']:.2f}{diverged_words(summary)}")
    log(seeds_markdown(summary) + "\n" + line)
    return summary["passed"]


def run_in_turn(runs, log=print):
    """Each Run as a process of its own, one after another, in this folder with this environment (a run reused
    where reusable_run allows, a line saying why not where it does not), its output shown as it comes and kept in its
    folder's log.txt; returns each run's metrics, or None where it failed."""
    results = []
    for index, run in enumerate(runs, 1):
        command = command_line(run.argv[1], run.argv[2:])
        metrics, why = reusable_run(run, command)
        log(f"\n=== {run.out} ({index} of {len(runs)}): " + (f"{KEPT[why]} ===" if metrics else
                                                             f"{why} — training ==="))
        if metrics is None:
            set_aside(run.out)
            lines = []
            with subprocess.Popen(run.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"}) as child:
                try:
                    for line in child.stdout:
                        log(line.rstrip("\n"))
                        lines.append(line)
                finally:
                    if child.poll() is None:
                        child.kill()
            atomic_write_text(run.out / "log.txt", "".join(lines))  # beside the run's files, which it wrote whole
            metrics = completed_run(run.out, command, run.settings, run.code)
        results.append(metrics)
    return results


def seed_rule(summary):
    """A seeds.json's rule as words: "every seed", or "at least 9 in 10" (with what that asks of this many seeds
    where it is not plain). A seeds.json written before the rule was recorded is judged by the rule of its day:
    every seed."""
    share, count = summary.get("min_seed_share", 1.0), summary["count"]
    if share >= 1:
        return "every seed"
    ratio = Fraction(share).limit_denominator(100)
    return (f"at least {ratio.numerator} in {ratio.denominator}"
            + ("" if count == ratio.denominator else f", {summary['seeds_needed']} of these {count}"))


def seed_rule_verdict(summary):
    """"the rule: at least 9 in 10 — met" (or "not met", or "not judged" for a smoke run's seeds)."""
    passed = summary.get("passed", summary["met_target"] == summary["count"])
    return f"the rule: {seed_rule(summary)} — " + {True: "met", False: "not met", None: "not judged"}[passed]


def diverged_words(summary):
    """", over the 6 seeds that trained to the end (seeds 2, 3 stopped on a NaN loss)", or "" where none did."""
    stopped = summary.get("diverged") or []
    return (f", over the {summary['count'] - len(stopped)} seeds that trained to the end "
            f"(seed{'s' * (len(stopped) > 1)} {', '.join(map(str, stopped))} stopped on a NaN loss)" if stopped else "")


def seeds_markdown(summary):
    lines = ["| seed | final test acc (%) | min of last 3 (%) | met target | train s |", "|---|---|---|---|---|"]
    for r in summary["seeds"]:
        met = {True: "yes", False: "no", None: "n/a"}[r["passed"]]
        accs = (f"stopped {r['diverged'].split(';')[0]} | —" if r.get("diverged") else
                f"{r['final_test_acc']:.2f} | {r['last3_min_test_acc']:.2f}")
        lines.append(f"| {r['seed']} | {accs} | {met} | {r['train_seconds']:.0f} |")
    lines.append(f"| **mean ± std** | **{summary['mean_final_test_acc']:.3f} ± {summary['std_final_test_acc']:.3f}** "
                 f"| | **{summary['met_target']}/{summary['count']}** | |")
    lines += ["", f"{summary['met_target']}/{summary['count']} met the target; {seed_rule_verdict(summary)}"
                  f"{'; mean ± std' + diverged_words(summary) if summary.get('diverged') else ''}."]
    return "\n".join(lines) + "\n"


