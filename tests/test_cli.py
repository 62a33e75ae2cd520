"""Bad input of every kind ends in one clear line, the right exit status, no traceback, and nothing lost."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import common
from harness import errors, files, mnist
from conftest import ROOT, assert_clean_failure, program, run_script


def _previous_results(out):
    out.mkdir(parents=True)
    (out / "metrics.json").write_text('{"previous": true}\n')
    (out / "model.pt").write_bytes(b"previous model")


def _assert_previous_results_intact(out):
    assert json.loads((out / "metrics.json").read_text()) == {"previous": True}
    assert (out / "model.pt").read_bytes() == b"previous model"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("flag, value, allowed", [
    ("--epochs", "0", "a positive integer"), ("--epochs", "ten", "a positive integer"),
    ("--batch-size", "-4", "a positive integer"),
    ("--subset", "0", "a positive integer"), ("--lr", "0", "a positive finite number"),
    ("--lr", "nan", "a positive finite number"), ("--lr", "inf", "a positive finite number"),
    ("--device", "tpu", "invalid choice"), ("--scheduler", "cosine", "invalid choice"),
    ("--momentum", "2", "a momentum in [0, 1)"), ("--momentum", "1", "a momentum in [0, 1)"),
    ("--rotate", "400", "degrees in [0, 180]"), ("--shift", "28", "pixels in [0, 14)"),
    ("--scale", "0.6", "a fraction in [0, 0.5]"), ("--scale", "-0.1", "a fraction in [0, 0.5]"),
])
def test_bad_flag_gets_one_line_and_exit_2(flag, value, allowed, capsys):
    import model3
    with pytest.raises(SystemExit) as exit_:
        common.run_step("model3", model3.Net, model3.DEFAULTS, model3.TARGETS, "", argv=[flag, value, "--dry-run"])
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert flag in captured.err and allowed in captured.err and repr(value) in captured.err


@pytest.mark.slow
@pytest.mark.parametrize("design", ["pool1_ds", "nope-1.2.3.4", "pool1_ds-1.2.3", "pool1_ds-0.2.3.4",
                                    "pool1_ds-8.12.32.999", "m4-6.12.6.12.14.14"])
def test_a_bad_design_gets_one_line_and_exit_2(design):
    result = run_script("designs.py", "--design", design, "--dry-run")
    assert_clean_failure(result, 2, "argument --design: expected FAMILY-WIDTHS", repr(design))
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flag", ["--teacher", "--ema", "--optimizer", "--activation", "--bn-affine",
                                  "--label-smoothing", "--precision", "--channels-last", "--dropout", "--weight-decay",
                                  "--test-batch-size", "--step-size", "--gamma"])
def test_retired_flags_are_refused_in_one_line(flag, capsys):
    """The flags of ideas that measured no gain went (RESULTS.md keeps their tables, with the commit that ran them)."""
    import model4
    with pytest.raises(SystemExit) as exit_:
        common.run_step("model4", model4.Net, model4.DEFAULTS, model4.TARGETS, "", argv=[flag, "1", "--dry-run"])
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and len(captured.err.strip().splitlines()) == 1
    assert f"unrecognized arguments: {flag}" in captured.err


@pytest.mark.slow
def test_a_bad_flag_from_the_command_line_gets_no_traceback():
    result = run_script("model2.py", "--epochs", "-3")
    assert_clean_failure(result, 2, "argument --epochs: expected a positive integer, got '-3'")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_a_missing_gpu_is_a_usage_error():
    assert_clean_failure(run_script("model3.py", "--device", "cuda", "--dry-run"), 2, "--device", "cuda",
                         "no CUDA GPU is available")


@pytest.mark.slow
def test_unwritable_out_folder_is_caught_before_training(tmp_path, data_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_script("model3.py", "--subset", "64", "--epochs", "1", "--out", blocker / "out", data_dir=data_dir)
    assert_clean_failure(result, 2, "--out", "cannot write")
    assert "epoch" not in result.stdout  # no training happened


@pytest.mark.slow
def test_corrupt_data_file_is_named_and_exit_1(tmp_path, data_dir):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in mnist.MNIST_FILES:
        os.symlink(data_dir / mnist.RAW_SUBDIR / name, raw / name)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte").write_bytes((data_dir / mnist.RAW_SUBDIR / "t10k-labels-idx1-ubyte").read_bytes()[:-1])
    out = tmp_path / "out"
    _previous_results(out)
    result = run_script("model3.py", "--subset", "64", "--epochs", "1", "--data-dir", tmp_path, "--out", out)
    assert_clean_failure(result, 1, "t10k-labels-idx1-ubyte", "10,007 bytes", "Delete it")
    _assert_previous_results_intact(out)


@pytest.mark.slow
def test_exploding_loss_stops_the_run_with_a_clear_message(tmp_path, data_dir):
    out = tmp_path / "out"
    _previous_results(out)
    result = run_script("model3.py", "--subset", "2560", "--epochs", "2", "--lr", "1e6", "--scheduler", "none",
                        "--out", out, data_dir=data_dir)
    assert_clean_failure(result, 1, "training loss became", "--lr")
    assert "epoch  1/2" not in result.stdout  # stopped inside the first epoch, not at its end
    assert f"{out} keeps the run it held" in result.stderr  # a diverged run is recorded only where it replaces none
    _assert_previous_results_intact(out)


def _start(script, *args, data_dir):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MNIST_DATA_DIR": str(data_dir)}
    # Ctrl-C as a terminal sends it, even where this test runs in the background (where a shell without job
    # control starts it with SIGINT ignored, and the child would inherit that)
    return subprocess.Popen([*program(script), *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _stop_once_under_way(process, signum, marker):
    """Wait for a line starting with `marker`, send `signum`, and return (output, seconds it took to stop)."""
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.lstrip().startswith(marker):
            break
    sent = time.monotonic()
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=30)
    return "".join(lines) + stdout, stderr, time.monotonic() - sent


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("mode", [[], ["--seeds", "3"]])
def test_ctrl_c_and_sigterm_stop_cleanly_and_keep_earlier_results(tmp_path, data_dir, signum, code, mode):
    out = tmp_path / "out"
    _previous_results(out)
    process = _start("model3.py", "--subset", "4000", "--epochs", "50", "--out", out, *mode, data_dir=data_dir)
    stdout, stderr, stopped_after = _stop_once_under_way(process, signum, "epoch  1/50")
    assert process.returncode == code, stdout + stderr
    assert stopped_after < 5, f"took {stopped_after:.1f}s to stop"
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1 and "interrupted" in stderr
    assert ("seeds.json was not updated" if mode else "is kept") in stderr
    _assert_previous_results_intact(out)
    assert not (out / "seeds.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("script, args, marker, kept", [
    ("lab.bench", ["--steps", "100000", "--repeats", "1", "--skip-full", "--device", "cpu", "--data-dir", "DATA"],
     "bench:", "bench.json"),
    ("lab.search", ["model3", "RECIPES", "--seeds", "1"], "search:", "search.json"),
    ("lab.frontier", ["--sizes", "2000", "--designs", "model4", "--epochs", "50", "--subset", "4000"], "frontier:",
     "frontier.json"),
])
def test_sigterm_stops_bench_search_and_frontier_writing_nothing(tmp_path, data_dir, script, args, marker, kept):
    recipes = tmp_path / "recipes.txt"
    recipes.write_text(f"slow: --subset 4000 --epochs 50 --data-dir {tmp_path / 'data'}\n")
    out = tmp_path / ("bench.json" if script == "lab.bench" else script.removeprefix("lab."))
    data_copy = tmp_path / "data"  # a path only this test's processes mention
    data_copy.symlink_to(data_dir)
    args = [{"RECIPES": str(recipes), "DATA": str(data_copy)}.get(a, a) for a in args]
    process = _start(script, *args, "--out", out, data_dir=data_dir)
    time.sleep(0.1)
    stdout, stderr, stopped_after = _stop_once_under_way(process, signal.SIGTERM, marker)
    assert process.returncode == 143, stdout + stderr
    assert stopped_after < 10 and "Traceback" not in stderr and "interrupted" in stderr and kept in stderr
    assert not out.is_file() and not (out / kept).exists()
    time.sleep(1)
    assert not _processes_mentioning(str(tmp_path)), "a child process outlived its parent"


def _processes_mentioning(text):
    """Command lines of the processes on this machine that contain `text` (Linux's /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in line:
            found.append(line)
    return found


def test_a_failing_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def crash(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(errors.DataError, match=f"could not write {target}: disk full; it is as it was"):
        files.atomic_write_json(target, {"new": 1})
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.slow
def test_dry_run_writes_nothing(tmp_path, data_dir):
    out = tmp_path / "out"
    result = run_script("model3.py", "--dry-run", "--out", out, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert "N/A (smoke run" in result.stdout and not out.exists()
