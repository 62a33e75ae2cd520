"""Runs made before runs recorded their code: show, old code against new on this machine, whether the code that made
them computes what today's code computes, and write what was shown into their metrics.json.

    python -m lab.vouch results/model3 results/model3/seeds-21-30     # a run's folder, or a --seeds run's
    python -m lab.vouch --check-only results/model4                   # show, write nothing
    python -m lab.vouch --again --since 73ccf6d results/model4        # after a change to the training path

For each run, the commits that may have made it: the last one before it started (the date it records, less its
time), then each, up to the one that committed its metrics.json, that changed a .py file. Each is checked out
beside this one (git worktree), and the run's recorded command is run there and here from the same seed, on a subset
for a few epochs (`--subset 2000 --epochs CLEAN+2`: two augmented, then the clean ones; six for a step without
clean epochs), on the CPU. A commit where that command meant another recipe than the run recorded did not make it,
and is passed over. Where every other gives exactly today's history (every loss, accuracy and rate; time aside),
the run is stamped with today's fingerprint for its command, today's parts and the evidence ("shown_same"): a sweep
may reuse it, the page may serve it. A setting the run recorded that has since been retired (step 4's --bn-affine
layer and PReLU, built into its Net since) is what its code then did: the histories decide. Where a commit differs,
or none made its recipe (it was made with uncommitted code), or its command does not mean today what its run
recorded, the run is stamped as made by unknown code, with the commit that made it as far as the history tells:
reports say so, and sweeps train it again. A check is one process of each code per command and commit, whatever
the number of seeds.

After a change to the training path, every run's fingerprint is another code's. With --since COMMIT, a run that
records the fingerprint COMMIT's code gives its command was made by that code, as far as a fingerprint tells: it is
checked against COMMIT alone (one check a command), not against each commit that may have made it.
"""
import argparse
import datetime
import importlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import STEPS_FOLDER as ROOT
from harness.cli import OneLineParser, beside_retired, describe_device, settings_meant_by, settings_recorded_in
from harness.errors import UsageError, run_main
from harness.files import atomic_write_json
from harness.provenance import code_of_run, git
from lab import code_meant_by, flags_of

CHECK_SUBSET = 2000
START_MARGIN_SECONDS = 300  # a run's evaluation, setup and loading, beyond the training time it records
COMPARED = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "lr")


def runs_in(folder):
    """The metrics.json files of the run in `folder`, and of each seed of the --seeds run there."""
    folder = Path(folder)
    found = [folder / "metrics.json"] if (folder / "metrics.json").is_file() else []
    found += sorted((folder / "seeds").glob("seed-*/metrics.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    if not found:
        raise UsageError(f"{folder} holds no run (metrics.json) and no seeds (seeds/seed-N/metrics.json)")
    return found


def commits_that_may_have_made(metrics_path, metrics):
    """The commits, oldest first, that may hold the code a run was made with: the last before it started (its
    recorded date, less its training time and START_MARGIN_SECONDS), and each after it, up to the first that
    committed its metrics.json as it is (the same recorded date), that changed a .py file."""
    relative = metrics_path.resolve().relative_to(ROOT).as_posix()
    added = None  # the first commit of this run's file as it is (a later commit may have stamped it, not re-run it)
    for sha in (git("log", "--format=%H", "--", relative) or "").split():
        try:
            then = json.loads(git("show", f"{sha}:{relative}") or "")
        except ValueError:
            break
        if not isinstance(then, dict) or then.get("date") != metrics["date"]:
            break
        added = sha
    # the date a run records is its end: its process read the code before it trained (and a little before that)
    ended = datetime.datetime.strptime(metrics["date"].removesuffix(" UTC"), "%Y-%m-%d %H:%M:%S")
    started = ended - datetime.timedelta(seconds=metrics.get("train_seconds", 0) + START_MARGIN_SECONDS)
    before = (git("log", "-1", "--format=%H", f"--before={started:%Y-%m-%d %H:%M:%S} +0000", "HEAD") or "").strip()
    if not added or not before:
        raise UsageError(f"{metrics_path}: the project's history does not say which commit made it (a shallow clone, "
                         "or a run not committed)")
    later = (git("log", "--reverse", "--format=%H", f"{before}..{added}", "--", "*.py") or "").split()
    return [before, *[sha for sha in later if sha != before]]


def history(metrics):
    return [{key: row[key] for key in COMPARED if key in row} for row in metrics["history"]]


def recipe(metrics):
    """The settings a run recorded, in today's terms, but for its seed and length (a check sets its own) and the
    settings retired since (what its code then did with them, the histories decide)."""
    return {key: value for key, value in beside_retired(settings_recorded_in(metrics)).items()
            if key not in ("seed", "epochs")}


def check_run(where, script, flags, epochs, scratch, data_dir):
    """(history, recipe, command) of `python SCRIPT FLAGS` on the check's subset, run in the checkout `where`."""
    out = Path(tempfile.mkdtemp(dir=scratch))
    env = {**os.environ, "MNIST_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, script, *flags, "--seed", "1", "--subset", str(CHECK_SUBSET), "--epochs", str(epochs),
               "--device", "cpu", "--out", str(out)]
    done = subprocess.run(command, cwd=where, env=env, capture_output=True, text=True)
    if not (out / "metrics.json").is_file():
        raise UsageError(f"`{shlex.join(command[1:])}` failed in {where}: {(done.stderr or done.stdout)[-500:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return history(metrics), recipe(metrics), shlex.join(["python", *command[1:-2]])


class Checks:
    """The check runs of one lab.vouch, each made once: today's history of a command, and at each commit (checked out
    beside this one as a git worktree, removed when the checks close)."""

    def __init__(self, scratch, data_dir, today):
        self.scratch, self.data_dir, self.today = scratch, data_dir, today
        self.worktrees, self.results = {}, {}

    def run(self, where, script, flags, epochs):
        key = (where, script, tuple(flags), epochs)
        if key not in self.results:
            if where != "today":
                self.checkout(where)
            self.results[key] = check_run(ROOT if where == "today" else self.worktrees[where], script, flags, epochs,
                                          self.scratch, self.data_dir)
        return self.results[key]

    def at(self, commit, script, flags, epochs):
        """(the epoch from which the histories at `commit` and today differ, or None; the recipe the command meant
        at `commit`; the evidence in words)."""
        new, _, command = self.run("today", script, flags, epochs)
        fresh = (commit, script, tuple(flags), epochs) not in self.results
        old, old_recipe, _ = self.run(commit, script, flags, epochs)
        differs = next((i + 1 for i, (a, b) in enumerate(zip(old, new)) if a != b), None)
        if differs is None and len(old) != len(new):
            differs = min(len(old), len(new)) + 1
        text = f"`{command}` at {commit[:7]} and at {self.today[:7]}: " + (
            f"the same {len(new)}-epoch history" if differs is None else f"the histories differ from epoch {differs}")
        if fresh:
            print(f"  {text}")
        return differs, old_recipe, text

    def fingerprint(self, commit, script, flags):
        """The fingerprint the code at `commit` gives `python SCRIPT FLAGS` (lab.code_meant_by, run there)."""
        key = ("fingerprint", commit, script, tuple(flags))
        if key not in self.results:
            self.checkout(commit)
            done = subprocess.run([sys.executable, "-c", "import sys; from lab import code_meant_by; "
                                   "print(code_meant_by(sys.argv[1], sys.argv[2:])['fingerprint'])",
                                   Path(script).stem, *flags], cwd=self.worktrees[commit], capture_output=True,
                                  text=True)
            self.results[key] = done.stdout.strip() if done.returncode == 0 else None
        return self.results[key]

    def checkout(self, commit):
        if commit not in self.worktrees:
            self.worktrees[commit] = Path(self.scratch) / f"at-{commit[:7]}"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(self.worktrees[commit]),
                            commit], check=True)

    def close(self):
        for where in self.worktrees.values():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)], capture_output=True)


def code_of(path, metrics, checks, since=None):
    """What lab.vouch records of the code that made the run at `path`: today's fingerprint, its parts and the
    evidence where every commit that may have made it (and made its recipe) gives today's history; else the
    commit, and why not. With `since`, a commit whose code gives the run's command the fingerprint the run records
    is the one commit that made it."""
    script, flags = flags_of(metrics["command"])
    step = Path(script).stem
    meant = (settings_meant_by([*flags, "--seed", str(metrics["seed"])], importlib.import_module(step).DEFAULTS)
             if (ROOT / script).is_file() else None)
    recorded = code_of_run(metrics)[0]
    made_by_since = bool(since and recorded and recorded == checks.fingerprint(since, script, flags))
    commits = [since] if made_by_since else commits_that_may_have_made(path, metrics)
    if meant is None or meant != beside_retired(settings_recorded_in(metrics)):
        return dict(fingerprint=None, parts=None, commit=commits[0], uncommitted=None,
                    not_shown_same="its command does not mean today the settings its run recorded")
    clean = metrics["config"].get("clean_epochs") or 0
    epochs = clean + 2 if clean else 6  # two augmented epochs, then the clean ones; or 6 (a rate step)
    evidence = []
    for commit in commits:
        differs, old_recipe, text = checks.at(commit, script, flags, epochs)
        if old_recipe != recipe(metrics):  # there the command meant another recipe: not this run's code
            continue
        if made_by_since:
            text += f" ({commit[:7]}'s code gives the command the fingerprint the run records)"
        evidence.append((commit, text))
        if differs is not None:
            return dict(fingerprint=None, parts=None, commit=commit, uncommitted=None, not_shown_same=text)
    if not evidence:
        return dict(fingerprint=None, parts=None, commit=commits[0], uncommitted=None, not_shown_same=(
            f"none of {', '.join(c[:7] for c in commits)} makes its recipe with its command: it was made with "
            "uncommitted code"))
    made_at = (metrics["code"].get("commit") or since) if made_by_since else evidence[0][0]
    return dict(**code_meant_by(step, flags), commit=made_at, uncommitted=None, shown_same=dict(
        by="python -m lab.vouch", at=checks.today, date=time.strftime("%Y-%m-%d"), device=describe_device("cpu"),
        checks=[text for _, text in evidence]))


def vouch(args):
    today = (git("rev-parse", "HEAD") or "").strip()
    if not today:
        raise UsageError("lab.vouch needs the project's git history (it checks out the commits that made the runs)")
    if (git("status", "--porcelain", "--", "*.py") or "").strip():
        raise UsageError("the project's .py files have uncommitted changes: commit them first, so that the evidence "
                         "names the commit that holds today's code")
    runs = [(path, json.loads(path.read_text())) for folder in args.folders for path in runs_in(folder)]
    since = None
    if args.since:
        since = (git("rev-parse", "--verify", "-q", f"{args.since}^{{commit}}") or "").strip()
        if not since:
            raise UsageError(f"argument --since: {args.since!r} is no commit of this repository")
    with tempfile.TemporaryDirectory(prefix="vouch-") as scratch:
        checks = Checks(scratch, args.data_dir, today)
        try:
            for path, metrics in runs:
                if code_of_run(metrics)[0] and not args.again:
                    print(f"{path.parent}: records its code already")
                    continue
                record = code_of(path, metrics, checks, since)
                print(f"{path.parent}: " + ("today's code (shown the same)" if record.get("shown_same") else
                                            f"unknown code: {record['not_shown_same']}"))
                if not args.check_only:
                    atomic_write_json(path, {**metrics, "code": record})
        finally:
            checks.close()
    for folder in [] if args.check_only else args.folders:  # a --seeds run's table names the code of its seeds
        if (Path(folder) / "seeds.json").is_file():
            summary = json.loads((Path(folder) / "seeds.json").read_text())
            codes = [json.loads(path.read_text()).get("code") or {} for path in runs_in(folder)
                     if path.parent.parent.name == "seeds"]
            prints = {code.get("fingerprint") for code in codes}
            summary["code"] = dict(fingerprint=prints.pop() if len(prints) == 1 else None,
                                   commits=sorted({code["commit"] for code in codes if code.get("commit")}))
            atomic_write_json(Path(folder) / "seeds.json", summary)
    return 0


def main(argv=None):
    parser = OneLineParser(prog="lab.vouch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="a run's folder, or a --seeds run's (its seeds/seed-N)")
    parser.add_argument("--check-only", action="store_true", help="show what the checks find; write nothing")
    parser.add_argument("--again", action="store_true", help="check runs that record their code already too")
    parser.add_argument("--since", metavar="COMMIT",
                        help="a run that records the fingerprint COMMIT's code gives its command is checked against "
                             "COMMIT alone (after a change to the training path: one check a command)")
    parser.add_argument("--data-dir", default=os.environ.get("MNIST_DATA_DIR", "data"),
                        help="folder holding MNIST/raw (default: $MNIST_DATA_DIR, else data)")
    args = parser.parse_args(argv)
    return run_main("lab.vouch", lambda: vouch(args))


if __name__ == "__main__":
    sys.exit(main())
