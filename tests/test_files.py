"""A run's folder changes as a whole (harness.files.replace_run, and a sweep's runs through runs.keep_run): a
process killed (SIGKILL) at any point of the writing leaves the whole previous run or the whole new one, never a
mix; what the folder holds that is not the run's survives; the next run cleans what the killed one left. And an
error is named for what failed."""
import errno
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_script
from harness import errors, files, mnist, runs

# What a run's writing does to the filesystem, as Python's audit events name it: a kill before each of them, and a
# last run that none interrupts, go through every state a reader could find.
CHANGES = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.link", "os.symlink",
           "ctypes.call_function"}  # the last: renameat2
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

OLD = {"metrics.json": b'{"run": "old"}\n', "model.pt": b"old model", "samples.png": b"old samples",
       "log.txt": b"old log\n"}
NEW = {"metrics.json": b'{"run": "new"}\n', "model.pt": b"new model", "curves.png": b"new curves"}
NEXT = {"metrics.json": b'{"run": "next"}\n', "rf.md": b"next rf"}
# a step's folder also holds what is not its run: other programs' files and folders, which must all survive
OTHERS = {"seeds.json": b"{}\n", "seeds/seed-1/metrics.json": b"seed 1\n", "seeds/seed-1/log.txt": b"seed log\n",
          "search/runs/a/seed-1/model.pt": b"search run", "search-recipes.txt": b"a: --lr 0.1\n"}


def _files_under(folder):
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file()}


def _lay_out(folder, contents):
    for name, data in contents.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def _split(state):
    """(the run's files, the rest) of a folder's {path: bytes}."""
    run = {path: data for path, data in state.items() if path in files.RUN_FILES}
    return run, {path: data for path, data in state.items() if path not in run}


def _killed_before_change(k, write):
    """Do `write()` in a forked child that SIGKILLs itself just before its k-th change to the filesystem; True if
    it was killed, False if it finished first."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            changes = 0

            def kill_at_k(event, args):
                nonlocal changes
                if event in CHANGES or (event == "open" and isinstance(args[2], int) and args[2] & WRITE_FLAGS):
                    changes += 1
                    if changes == k:
                        os.kill(os.getpid(), signal.SIGKILL)
            sys.addaudithook(kill_at_k)
            write()
            status = 0
        except BaseException as e:
            print(f"the write failed: {e!r}", file=sys.stderr)
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "the write itself failed"
    return False


def _kill_at_every_change(out, old, new, write, next_write, next_state, others):
    """Kill `write` (which replaces the run `old` in `out` by `new`) before each of its changes in turn; after each,
    check that `out` holds exactly the old run or exactly the new one, and nothing but `others` beside it (or, in
    the instant between the fallback's two renames, does not exist); then that the next run (`next_write`, leaving
    `next_state`) puts everything back in order and leaves nothing beside `out`. Returns what the kills left (of
    "old", "new", "missing") and how many kills there were."""
    seen, k = set(), 0
    while True:
        k += 1
        for leftover in out.parent.iterdir():
            files.shutil.rmtree(leftover)
        _lay_out(out, {**old, **others})
        killed = _killed_before_change(k, write)
        if not out.exists():
            seen.add("missing")
        else:
            run, rest = _split(_files_under(out))
            assert run in (old, new), f"killed before change {k}: {sorted(run)} is neither run whole"
            seen.add("old" if run == old else "new")
            assert rest.items() <= others.items(), f"killed before change {k}: {sorted(rest)}"  # nothing else
        if not killed:
            assert run == new and rest == others and os.listdir(out.parent) == [out.name]
            return seen, k - 1
        next_write()
        assert _files_under(out) == {**next_state, **others}, f"after the kill before change {k}"
        assert os.listdir(out.parent) == [out.name], "the next run left something beside the folder"


@pytest.fixture(params=["exchange", "rename aside"])
def swap(request, monkeypatch, tmp_path):
    """Both ways of swapping a folder in: Linux's RENAME_EXCHANGE, and the two renames of other systems."""
    if request.param == "rename aside":
        monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    else:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        if not files._exchange(tmp_path / "a", tmp_path / "b"):
            pytest.skip("this system or filesystem has no RENAME_EXCHANGE")
        (tmp_path / "a").rmdir()
        (tmp_path / "b").rmdir()
    return request.param


@pytest.mark.slow
def test_a_run_killed_at_any_point_of_its_writing_leaves_one_whole_run(tmp_path, swap):
    parent = tmp_path / "results"
    parent.mkdir()
    out = parent / "model3"
    seen, kills = _kill_at_every_change(
        out, OLD, NEW, lambda: files.replace_run(out, NEW), lambda: files.replace_run(out, NEXT), NEXT, OTHERS)
    assert seen == ({"old", "new"} if swap == "exchange" else {"old", "missing", "new"}) and kills >= 12, seen


class _Finished:
    """A Dask future whose task sent back a run (runs.run_on_worker's result)."""
    status = "finished"

    def __init__(self, metrics, log, run_files):
        self._result = metrics, log, run_files

    def result(self):
        return self._result


def _sweep_run(tmp_path, name):
    command = f"python model3.py --seed 1 --out {name}"
    metrics = {"command": command, "last_test_accs": [99.0], "run": name}
    run_files = {"metrics.json": json.dumps(metrics).encode(), "rf.md": f"{name} rf".encode()}
    return command, _Finished(metrics, f"{name} log\n", run_files), {**run_files, "log.txt": f"{name} log\n".encode()}


@pytest.mark.slow
def test_a_sweeps_run_killed_at_any_point_of_its_writing_leaves_one_whole_run(tmp_path, swap):
    parent = tmp_path / "seeds"
    parent.mkdir()
    run = runs.Run(("python", "model3.py"), parent / "seed-1")
    _, _, old = _sweep_run(tmp_path, "old")
    old = {**old, "model.pt": b"old model", "curves.png": b"old curves"}
    new_command, new_future, new = _sweep_run(tmp_path, "new")
    next_command, next_future, after = _sweep_run(tmp_path, "next")

    def next_run():
        assert runs.keep_run(run, next_command, next_future)[0]["run"] == "next"
    seen, kills = _kill_at_every_change(run.out, old, new, lambda: runs.keep_run(run, new_command, new_future),
                                        next_run, after, {})
    assert seen == ({"old", "new"} if swap == "exchange" else {"old", "missing", "new"}) and kills >= 8, seen


@pytest.mark.slow
def test_a_sweep_goes_on_from_a_run_killed_as_it_was_swapped_in(tmp_path, monkeypatch):
    """Killed between the two renames of the fallback, a run's folder is missing; the reuse check of the next sweep
    puts the previous run back first, and finds it completed."""
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    run = runs.Run(("python", "model3.py"), tmp_path / "seed-1")
    command, future, old = _sweep_run(tmp_path, "old")
    _lay_out(run.out, old)
    real_rename = os.rename

    def die_after_the_first(source, target):
        real_rename(source, target)
        if ".old-" in str(target):
            raise KeyboardInterrupt  # as a kill would stop it: nothing after this rename runs
    monkeypatch.setattr(files.os, "rename", die_after_the_first)
    monkeypatch.setattr(files, "_recover", lambda out: None)  # a kill cleans nothing up
    _, new_future, _ = _sweep_run(tmp_path, "new")
    with pytest.raises(KeyboardInterrupt):
        runs.keep_run(run, "python model3.py --seed 1 --out new", new_future)
    monkeypatch.undo()
    assert not run.out.exists() and len(list(tmp_path.iterdir())) == 2  # the old aside, the new beside it
    assert runs.reusable_run(run, command)[0]["run"] == "old"
    assert _files_under(run.out) == old and os.listdir(tmp_path) == ["seed-1"]


def test_a_failed_or_lost_run_replaces_the_folder_with_its_log_alone(tmp_path):
    run = runs.Run(("python", "model3.py"), tmp_path / "seed-1")
    _lay_out(run.out, {**OLD, "rf.md": b"old rf"})
    assert runs.keep_run(run, "python model3.py", _Finished(None, "Traceback: it failed\n", {"rf.md": b"half"})) == (
        None, "failed (see log.txt there)")
    assert _files_under(run.out) == {"log.txt": b"Traceback: it failed\n"}


def test_a_run_may_write_only_a_runs_files():
    with pytest.raises(ValueError, match="notes.txt: not a run's file"):
        files.replace_run("unused", {"metrics.json": "{}", "notes.txt": "x"})


def test_a_write_that_fails_leaves_the_previous_run_and_says_what_failed(tmp_path, monkeypatch):
    out = tmp_path / "model3"
    _lay_out(out, {**OLD, **OTHERS})

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(files.os, "fsync", disk_full)
    with pytest.raises(errors.DataError) as failure:
        files.replace_run(out, NEW)
    assert str(failure.value) == (f"could not write the run to {out}: No space left on device; it holds the "
                                  "previous run, as it was")
    assert _files_under(out) == {**OLD, **OTHERS} and os.listdir(tmp_path) == ["model3"]


def test_an_interrupt_during_the_swap_waits_for_it_and_says_the_run_is_in_place(tmp_path, monkeypatch, capsys):
    out = tmp_path / "model3"
    _lay_out(out, OLD)
    real_exchange = files._exchange

    def interrupted_exchange(a, b):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C, held while the swap goes on
        return real_exchange(a, b)
    monkeypatch.setattr(files, "_exchange", interrupted_exchange)
    # Ctrl-C as Python handles it by default, even where the tests were started with SIGINT ignored (a shell
    # without job control starts a background job so, and then an interrupt is rightly nothing)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt) as stop:
            files.replace_run(out, NEW)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert _files_under(out) == NEW and os.listdir(tmp_path) == ["model3"]

    def main():
        raise stop.value
    assert errors.run_main("model3.py", main, "this run wrote nothing") == 130
    assert capsys.readouterr().err == f"\nmodel3.py: interrupted; the run was complete and is in {out}, whole\n"


def test_an_unreadable_mnist_file_is_named_as_a_read_error(tmp_path, monkeypatch):
    raw = tmp_path / mnist.RAW_SUBDIR
    raw.mkdir(parents=True)

    def unreadable(path):
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
    monkeypatch.setattr(mnist, "check_mnist_file", unreadable)
    with pytest.raises(errors.DataError, match=f"could not read {raw / 'train-images-idx3-ubyte'}: Input/output"):
        mnist.verify_mnist(raw)

    def failing_read(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(raw / "t10k-images-idx3-ubyte"))
    monkeypatch.setattr("torchvision.datasets.MNIST", failing_read)
    with pytest.raises(errors.DataError, match="could not read MNIST's test split from .*: Input/output error"):
        mnist.load_split(tmp_path, train=False)


@pytest.mark.slow
def test_a_clusters_closed_connection_is_named_as_the_clusters(tmp_path, monkeypatch, capsys):
    from distributed.comm.core import CommClosedError

    class ClosingClient:
        def submit(self, *args, **kwargs):
            raise CommClosedError("in <TCP (closed) ConnectionPool.submit local=tcp://127.0.0.1:1>: Stream is closed")

    @runs.contextlib.contextmanager
    def closing_cluster(address, jobs):
        yield ClosingClient(), (None, {}, ())
    monkeypatch.setattr(runs, "dask_client", closing_cluster)
    run = runs.Run(runs.step_argv(ROOT / "model3.py", [], 1, tmp_path / "seed-1"), tmp_path / "seed-1")
    status = errors.run_main("model3.py", lambda: runs.run_commands([run], 1, lambda *_: None, "tcp://host:8786"))
    assert status == 1
    assert capsys.readouterr().err == (
        "model3.py: error: the Dask cluster at tcp://host:8786 failed: in <TCP (closed) ConnectionPool.submit "
        "local=tcp://127.0.0.1:1>: Stream is closed; the runs completed so far are kept, and the same command goes "
        "on from them\n")


def test_an_os_error_nobody_named_is_not_called_a_failed_write(capsys):
    def main():
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "somewhere/else")
    assert errors.run_main("x.py", main) == 1
    assert capsys.readouterr().err == "x.py: error: No such file or directory: somewhere/else\n"


def test_a_result_file_that_cannot_be_written_is_named(tmp_path):
    with pytest.raises(errors.DataError, match=f"could not write {tmp_path / 'missing' / 'a.json'}: No such file"):
        files.atomic_write_json(tmp_path / "missing" / "a.json", {})
    assert os.listdir(tmp_path) == []


# Folders that are not a run's: a run written there would move all they hold through a folder beside them.
FOREIGN = {
    "a git repository": ({"README.md": b"# a project\n", ".git/config": b"[core]\n", "main.py": b"print(1)\n"},
                         ".git"),
    "a home folder": ({".bashrc": b"alias ll='ls -l'\n", "notes.txt": b"milk\n"}, ".bashrc"),
    "a project's document": ({"metrics.json": b"{}\n", "README.md": b"# results\n"}, "README.md"),
    "a program": ({"seeds.json": b"{}\n", "train.py": b"print(1)\n"}, "train.py"),
    "a file of another kind": ({"model.pt": b"m", "paper.pdf": b"%PDF"}, "paper.pdf"),
    "a file without a kind": ({"Makefile": b"all:\n"}, "Makefile"),
    "a folder of foreign files, deep": ({"seeds/seed-1/metrics.json": b"{}\n", "photos/2024/cat.jpg": b"jpg"},
                                        "photos/2024/cat.jpg"),
    "a project in a folder": ({"code/project/.git/HEAD": b"ref\n", "code/project/a.md": b"a\n"},
                              "code/project/.git"),
}


def _everything_under(folder):
    """{path: bytes, or None for a folder} of everything under `folder`, hidden entries included."""
    return {os.path.relpath(os.path.join(top, name), folder): None if name in dirs else Path(top, name).read_bytes()
            for top, dirs, names in os.walk(folder) for name in dirs + names}


@pytest.mark.parametrize("contents, named", FOREIGN.values(), ids=FOREIGN.keys())
def test_a_folder_that_holds_what_no_run_wrote_is_refused_and_left_as_it_is(tmp_path, contents, named):
    out = tmp_path / "out"
    _lay_out(out, contents)
    before = _everything_under(tmp_path)
    for check in (files.check_run_folder, files.recover_folder, lambda folder: files.replace_run(folder, NEW)):
        with pytest.raises(errors.UsageError) as refusal:
            check(out)
        assert str(refusal.value) == (f"argument --out: {out} is not a run's folder: it holds {named}, which no run "
                                      "or sweep writes; a run goes into a new folder or one that holds runs only, "
                                      "and this one was left as it is")
        assert _everything_under(tmp_path) == before  # nothing moved, nothing beside it


def test_a_symbolic_link_is_not_followed_and_is_judged_by_its_name(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "README.md").write_text("x")
    out = tmp_path / "out"
    out.mkdir()
    (out / "seeds").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(errors.UsageError, match="it holds seeds, which no run or sweep writes"):
        files.check_run_folder(out)


def test_a_runs_folder_with_what_sweeps_and_the_projects_writing_leave_is_accepted(tmp_path):
    out = tmp_path / "model3"
    files.check_run_folder(out)  # missing: a new folder
    out.mkdir()
    files.check_run_folder(out)  # empty
    leftovers = {".seeds.json.k2_x9abc.tmp": b"{", ".write-test-abc123": b"", ".DS_Store": b"",
                 "seeds/.seed-2.new-0123abcd/metrics.json": b"{}\n", "seeds/seed-2/.log.txt.abcdefgh.tmp": b"",
                 "seeds-11-20/seeds.md": b"| seed |\n", "search-story.md": b"Round 1 found X.\n",
                 "ablation/clean-0/seeds.json": b"{}\n", "search/stage-1.log": b"...\n",
                 "search/runs/a/seed-1/Wide.md": b"a sweep named so\n"}
    _lay_out(out, {**OLD, **OTHERS, **leftovers})
    files.check_run_folder(out)
    files.replace_run(out, NEW)
    assert _files_under(out) == {**NEW, **OTHERS, **leftovers}


def test_every_folder_in_results_is_a_runs_folder():
    """The rule refuses no folder that a run or a sweep of this project made, the committed results among them."""
    folders = [top for top, _, _ in os.walk(ROOT / "results")]
    assert len(folders) > 20, folders  # a step's folder, its seeds, searches and ablations, the frontier, the club
    for folder in folders:
        files.check_run_folder(folder)


@pytest.mark.slow
def test_a_step_run_into_a_folder_that_is_not_a_runs_is_one_line_before_training_and_touches_nothing(
        tmp_path, data_dir):
    out = tmp_path / "project"
    _lay_out(out, FOREIGN["a git repository"][0])
    before = _everything_under(out)
    result = run_script("model3.py", "--subset", "64", "--epochs", "1", "--out", out, data_dir=data_dir, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (f"model3.py: error: argument --out: {out} is not a run's folder: it holds .git, which "
                             "no run or sweep writes; a run goes into a new folder or one that holds runs only, and "
                             "this one was left as it is\n")
    assert "epoch" not in result.stdout and "Traceback" not in result.stdout
    assert _everything_under(out) == before and os.listdir(tmp_path) == ["project"]
