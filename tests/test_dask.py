"""Sweeps on Dask (harness.runs.run_commands): the embedded LocalCluster and a running scheduler give the same
metrics as the same runs done directly, even when a worker is killed mid-sweep (the run is retried); SIGTERM to the
driver leaves no process behind; a scheduler that does not answer, one that cannot read a task and a worker outside
a checkout are each one line and exit 2. The running scheduler and its workers are started with the lab page's own
commands (lab/README.md; made loopback-only, on free ports), without PYTHONPATH."""
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import ROOT, assert_clean_failure, run_script
from harness import runs
from harness.errors import UsageError

pytestmark = pytest.mark.slow  # make check: not part of the smoke run

SEEDS = (1, 2)
TINY = ("--subset", "300", "--epochs", "1")
THREADS = max(1, (os.cpu_count() or 1) // 2)  # what a run gets on the embedded cluster with --jobs 2
DASK = str(Path(sys.executable).parent / "dask")


def comparable(metrics):
    """What the same seed on the same threads must reproduce: the history without its timings."""
    return [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in metrics["history"]]


def seed_metrics(out, seed):
    return json.loads((Path(out) / "seeds" / f"seed-{seed}" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def direct(tmp_path_factory, data_dir):
    """Each seed's tiny run done directly, one process each, with THREADS threads."""
    out = tmp_path_factory.mktemp("direct")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", str(THREADS))
        for seed in SEEDS:
            result = run_script("model3.py", *TINY, "--seed", seed, "--out", out / f"seed-{seed}", data_dir=data_dir)
            assert result.returncode == 0, result.stdout + result.stderr
    return {seed: json.loads((out / f"seed-{seed}" / "metrics.json").read_text()) for seed in SEEDS}


def _start(*argv, **kwargs):
    return subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)


def readme_recipe():
    """The lab page's `dask scheduler` and `dask worker` commands (lab/README.md, Sweeps across machines), each as an
    argv with its `dask` this environment's own, the scheduler's address still tcp://HOST:8786."""
    section = (ROOT / "lab" / "README.md").read_text().split("## Sweeps across machines", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = {}
    for argv in (shlex.split(line, comments=True) for line in block.splitlines()):
        if argv[1:2] in (["scheduler"], ["worker"]):
            assert Path(argv[0]).name == "dask", f"not a plain dask command, which is all this test runs: {argv}"
            commands[argv[1]] = [DASK, *argv[1:]]
    return commands["scheduler"], commands["worker"]


@contextlib.contextmanager
def readme_cluster(worker_folder, scheduler_folder):
    """A scheduler started in `scheduler_folder` and a worker in `worker_folder`, by the README's commands made
    loopback-only on free ports, with no PYTHONPATH; yields the scheduler's address and the worker's process."""
    scheduler_argv, worker_argv = readme_recipe()
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "OMP_NUM_THREADS": str(THREADS)}
    started = [_start(*scheduler_argv, "--host", "127.0.0.1", "--port", "0", "--no-dashboard", env=env,
                      cwd=scheduler_folder)]
    try:
        for line in started[0].stdout:
            found = re.search(r"Scheduler at:\s*(tcp://127\.0\.0\.1:\d+)", line)
            if found:
                break
        else:
            pytest.fail("dask scheduler gave no address")
        worker_argv = [found.group(1) if arg == "tcp://HOST:8786" else arg for arg in worker_argv]
        started.append(_start(*worker_argv, "--host", "127.0.0.1", "--no-dashboard", env=env, cwd=worker_folder))
        yield found.group(1), started[1]
    finally:
        for process in reversed(started):  # by pid: the worker first, its nannies end their processes
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """The README's scheduler and a worker of 2 single-threaded processes in the project's folder; its address."""
    with readme_cluster(ROOT, tmp_path_factory.mktemp("scheduler")) as cluster:
        yield cluster


def test_the_workers_take_the_gpus_in_turn():
    assert [runs.gpu_for(i, ("0", "1", "2")) for i in range(6)] == ["0", "1", "2", "0", "1", "2"]
    assert runs.gpu_for(3, ("5",)) == "5"


def test_a_seed_run_drops_how_the_sweep_is_shared_out():
    flags = runs.seed_flags(["--seeds", "2", "--cluster", "tcp://h:1", "--jobs=2", "--cluster=x", "--lr", "0.1"])
    assert flags == ["--lr", "0.1"]


def test_a_single_run_and_a_sequential_sweep_never_import_dask(tmp_path, data_dir):
    code = ("import runpy, sys\n"
            f"sys.argv = ['model3.py', '--seeds', '1', *{TINY!r}, '--out', {str(tmp_path)!r}]\n"
            "try:\n    runpy.run_path('model3.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('dask imported:', 'distributed' in sys.modules or 'dask' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "MNIST_DATA_DIR": str(data_dir), "MNIST_DASK_CLUSTER": ""})
    assert "dask imported: False" in result.stdout, result.stdout + result.stderr
    assert (tmp_path / "seeds.json").exists()


def test_the_embedded_cluster_gives_the_runs_of_a_direct_run(tmp_path, data_dir, direct):
    result = run_script("model3.py", "--seeds", "2", "--jobs", "2", *TINY, "--out", tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    for seed in SEEDS:
        metrics = seed_metrics(tmp_path, seed)
        assert comparable(metrics) == comparable(direct[seed])
        # the command as a run made here always recorded it: completed runs are recognised by it
        assert metrics["command"].endswith(f"--seed {seed} --out {tmp_path / 'seeds' / f'seed-{seed}'}")
        assert "epoch 1/1" in (tmp_path / "seeds" / f"seed-{seed}" / "log.txt").read_text()


def _training(out):
    """The processes on this machine whose command line names `out`."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(out) in part for part in process.info["cmdline"] or ()):
            found.append(process)
    return found


def _wait_for_training(out, driver, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and driver.poll() is None:
        children = [p for p in _training(out) if p.pid != driver.pid]
        if children:
            return children
        time.sleep(0.2)
    pytest.fail("no run started")


def test_a_running_scheduler_gives_the_runs_of_a_direct_run_even_with_a_worker_killed(tmp_path, data_dir,
                                                                                     direct, scheduler):
    address, _ = scheduler
    driver = _start(sys.executable, ROOT / "model3.py", "--seeds", "2", "--cluster", address, *TINY,
                    "--out", tmp_path, cwd=ROOT, env={**os.environ, "MNIST_DATA_DIR": str(data_dir)})
    child = _wait_for_training(tmp_path, driver)[0]
    child.parent().kill()  # its worker, SIGKILLed: no goodbye to the scheduler; the run is retried elsewhere
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, output
    assert f"on the Dask cluster at {address}" in output
    psutil.wait_procs([child], timeout=10)
    assert not child.is_running(), "the killed worker's run outlived it"
    for seed in SEEDS:
        assert comparable(seed_metrics(tmp_path, seed)) == comparable(direct[seed])
        assert (tmp_path / "seeds" / f"seed-{seed}" / "model.pt").stat().st_size > 0


def test_a_task_the_scheduler_cannot_read_is_one_line_saying_what_to_do(tmp_path, scheduler, monkeypatch):
    """The scheduler does not have this project on its path: a task that names its function rather than carrying
    it (as every task did before SentByValue) cannot be read there, and the sweep stops with what to do."""
    monkeypatch.setattr(runs, "SentByValue", lambda function: function)
    run = runs.Run(runs.step_argv(ROOT / "model3.py", TINY, 1, tmp_path / "out"), tmp_path / "out")
    with pytest.raises(UsageError, match=f"the Dask scheduler at {scheduler[0]} could not read the sweep's tasks; "
                                         "start it and its workers with this driver's Python"):
        runs.run_commands([run], jobs=1, report=lambda *_: None, cluster=scheduler[0])
    assert not (tmp_path / "out").exists()


def test_a_worker_outside_a_checkout_is_one_line_and_exit_2(tmp_path, data_dir):
    folder = tmp_path / "not-a-checkout"
    folder.mkdir()
    with readme_cluster(folder, folder) as (address, _):
        result = run_script("model3.py", "--seeds", "2", "--cluster", address, *TINY, "--out", tmp_path / "out",
                            data_dir=data_dir)
    assert_clean_failure(result, 2, f"has no model3.py in its folder {folder}",
                         "start `dask worker` in the project's folder")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out" / "seeds").exists()


def test_sigterm_to_the_driver_ends_the_sweep_and_every_process_of_it(tmp_path, data_dir):
    driver = _start(sys.executable, ROOT / "model3.py", "--seeds", "2", "--jobs", "2", "--subset", "4000",
                    "--epochs", "50", "--out", tmp_path, cwd=ROOT,
                    env={**os.environ, "MNIST_DATA_DIR": str(data_dir)})
    _wait_for_training(tmp_path, driver)
    ours = psutil.Process(driver.pid).children(recursive=True)  # the workers and their runs
    driver.send_signal(signal.SIGTERM)
    output, _ = driver.communicate(timeout=60)
    assert driver.returncode == 143, output
    assert "Traceback" not in output and "interrupted" in output
    gone, alive = psutil.wait_procs(ours, timeout=15)
    assert not alive, f"left behind: {[p.cmdline() for p in alive]}"
    assert not _training(tmp_path)
    assert not (tmp_path / "seeds.json").exists()


def test_a_scheduler_that_does_not_answer_is_one_line_and_exit_2(tmp_path, data_dir):
    import socket
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_script("model3.py", "--seeds", "2", "--cluster", f"tcp://127.0.0.1:{port}", *TINY,
                        "--out", tmp_path, data_dir=data_dir)
    assert_clean_failure(result, 2, "argument --cluster: no Dask scheduler answered")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_run_that_misses_its_target_is_kept_with_its_files(tmp_path):
    """A step that completes but FAILs its target exits 1 after writing every file: the sweep keeps it (its
    metrics say passed: false), as it keeps a run that passed; only a run without metrics.json is lost."""
    script = tmp_path / "step.py"
    script.write_text(
        "import json, os, sys\n"
        "from pathlib import Path\n"
        "out = Path(os.environ['MNIST_RUN_FOLDER'])\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        "(out / 'rf.md').write_text('rf')\n"
        "command = ' '.join(['python', Path(sys.argv[0]).name, *sys.argv[1:]])\n"
        "(out / 'metrics.json').write_text(json.dumps(dict(command=command, passed=False, last_test_accs=[99.3])))\n"
        "sys.exit(1)\n")
    run = runs.Run(runs.step_argv(script, [], 1, tmp_path / "out"), tmp_path / "out")
    [metrics] = runs.run_commands([run], jobs=1, report=lambda *_: None)
    assert metrics is not None and metrics["passed"] is False
    assert (tmp_path / "out" / "rf.md").read_text() == "rf" and (tmp_path / "out" / "log.txt").exists()
