"""Smoke runs of every step on a subset, as a user runs them: outputs written, metrics sane, model reloadable."""
import importlib
import inspect
import json
import math
import re

import pytest
import torch

import common
from lab import net_of
import model3
import model4
from common import STEPS
from conftest import ROOT, run_script
from harness import cli, cuda_graph, files, provenance, runs as runs_module

EXPECTED_FILES = {"summary.txt", "rf.md", "metrics.json", "curves.png", "misclassified.png", "confusion.png",
                  "model.pt"}


@pytest.mark.parametrize("step", STEPS)
def test_smoke_run_writes_every_output_with_sane_metrics(smoke_runs, step):
    result, out = smoke_runs[step]
    assert (out / "metrics.json").is_file(), result.stdout + result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    # A subset's accuracy is not judged, but the parameter limit is: an edit past it is a FAIL, exit status 1.
    over_limit = metrics["passed"] is False
    assert result.returncode == (1 if over_limit else 0), result.stdout + result.stderr
    assert ("FAIL params" if over_limit else "N/A (smoke run on a subset") in metrics["verdict"]
    written = {p.name for p in out.iterdir()}
    assert EXPECTED_FILES <= written and ("samples.png" in written) == (step == "model1")
    assert metrics["model"] == step and metrics["epochs"] == 2 and len(metrics["history"]) == 2
    assert metrics["params"] == common.count_params(importlib.import_module(step).Net()) and metrics["seed"] == 1
    device = cli.resolve_device("auto")  # what the run was asked for: this machine's GPU if it has one
    assert metrics["device"].split(" ")[0] == device
    # on CUDA the GPU's own path end to end: train_step recorded once as a CUDA graph, then replayed
    assert metrics["update"] == ("train_step replayed as a CUDA graph" if device == "cuda" else "train_step")
    code = metrics["code"]  # the code that made it: the fingerprint today's files give, and where they stand in git
    assert code["fingerprint"] == provenance.fingerprint(code["parts"]) and code["parts"]["net"]
    assert all(epoch["seconds"] > 0 for epoch in metrics["history"])
    assert metrics["train_seconds"] == round(sum(epoch["seconds"] for epoch in metrics["history"]), 2)
    if step in ("model3", "model4"):  # the first epoch augmented, the last clean
        config = metrics["config"]
        assert config["clean_epochs"] == 1 and config["rotate"] > 0 and config["shift"] > 0
    for epoch in metrics["history"]:
        assert set(epoch) >= {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"}
        assert 0 <= epoch["train_acc"] <= 100 and 0 <= epoch["test_acc"] <= 100
        assert math.isfinite(epoch["train_loss"]) and math.isfinite(epoch["test_loss"])
    # 64 steps must learn something, even model1's plain SGD (it reaches about 70 %, model4 about 80 %)
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]
    assert metrics["history"][-1]["test_acc"] > 50
    assert sum(sum(row) for row in metrics["confusion"]) == 1000
    assert "Total params" in (out / "summary.txt").read_text()
    assert f"{metrics['params']:,}" in (out / "summary.txt").read_text()
    assert "| layer | kind |" in (out / "rf.md").read_text()
    assert metrics["verdict"] in result.stdout


@pytest.mark.parametrize("step", [model3, pytest.param(model4, marks=pytest.mark.slow)],
                         ids=lambda step: step.__name__)
def test_a_run_one_epoch_longer_than_its_clean_epochs_augments_every_image_of_its_first(step, mnist, monkeypatch):
    """Steps 3 and 4 train their last epochs on the digits as they are, so a shorter smoke run never augments;
    one epoch more, and DeviceLoader.augment must move every training image of that epoch, and none after it."""
    clean = step.DEFAULTS["clean_epochs"]
    config = cli.config_from_args(cli.build_parser(step.__name__, step.DEFAULTS, "").parse_args(
        ["--epochs", str(clean + 1), "--subset", "256", "--batch-size", "64", "--device", "cpu"]))
    assert config.clean_epochs == clean and config.rotate > 0 and config.shift > 0
    epochs_done, augmented, augment = [], [], common.DeviceLoader.augment

    def counting(loader, x):
        moved = augment(loader, x)
        augmented.append((len(epochs_done) + 1, len(x), (moved - x).abs().amax(dim=(1, 2, 3)).min().item()))
        return moved

    def log(line):  # fit logs a line as each epoch ends
        if line.startswith("epoch "):
            epochs_done.append(line)
    monkeypatch.setattr(common.DeviceLoader, "augment", counting)
    common.fit(step.Net, config, mnist, log=log)
    assert len(epochs_done) == clean + 1
    assert {epoch for epoch, _, _ in augmented} == {1} and sum(n for _, n, _ in augmented) == 256
    assert min(change for _, _, change in augmented) > 0  # every image moved, none passed through as it was


def test_step1_saves_the_data_analysis(smoke_runs):
    metrics = json.loads((smoke_runs["model1"][1] / "metrics.json").read_text())
    train = metrics["data"]["train"]
    assert train["count"] == 60000 and len(train["class_counts"]) == 10 and sum(train["class_counts"]) == 60000
    assert metrics["normalisation"] == {"mean": train["mean"], "std": train["std"]}


def test_saved_model3_scores_what_metrics_json_reports(smoke_runs, mnist):
    _, out = smoke_runs["model3"]
    metrics = json.loads((out / "metrics.json").read_text())
    net = model3.Net()
    net.load_state_dict(files.load_state_dict(out / "model.pt"))
    net.eval()
    images, labels = mnist["test"][0][:1000], mnist["test"][1][:1000]
    x = (images.float().unsqueeze(1) / 255 - metrics["normalisation"]["mean"]) / metrics["normalisation"]["std"]
    with torch.no_grad():
        accuracy = 100 * (net(x).argmax(1) == labels).float().mean().item()
    assert accuracy == pytest.approx(metrics["final_test_acc"], abs=0.005)


@pytest.mark.committed
def test_committed_model3_scores_what_its_metrics_report(mnist):
    """results/model3 is committed: its model.pt, scored here on the whole test set, must give the final accuracy
    its metrics.json reports (the final epoch's model, not a best-epoch pick)."""
    folder = ROOT / "results" / "model3"
    if not (folder / "model.pt").exists():
        pytest.skip("no results/model3 run yet")
    metrics = json.loads((folder / "metrics.json").read_text())
    net = model3.Net()
    net.load_state_dict(files.load_state_dict(folder / "model.pt"))
    loader = common.DeviceLoader(*mnist["test"], 1000, "cpu", **metrics["normalisation"])
    _, accuracy, _ = common.evaluate(net, loader)
    assert accuracy == pytest.approx(metrics["final_test_acc"], abs=0.005)


def test_same_seed_same_cpu_same_numbers(mnist):
    config = cli.Config(epochs=2, batch_size=64, lr=0.05, momentum=0.9, nesterov=True, scheduler="onecycle",
                        step_size=5, gamma=0.1, rotate=7.0, shift=2.0, seed=3, subset=320)
    runs = [common.fit(model3.Net, config, mnist, log=lambda *_: None).history for _ in range(2)]
    strip = [[{k: v for k, v in h.items() if k != "seconds"} for h in run] for run in runs]
    assert strip[0] == strip[1]
    other = common.fit(model3.Net, cli.Config(**{**vars(config), "seed": 4}), mnist, log=lambda *_: None).history
    assert [h["train_loss"] for h in other] != [h["train_loss"] for h in runs[0]]


@pytest.mark.slow
def test_seeds_mode_writes_a_table_over_seeds(tmp_path, data_dir):
    """--seeds trained here (--jobs 1): each seed gets the files a seed run through Dask writes, its log.txt too
    (step 1's samples.png and data analysis included), and an older run's files in its folder go."""
    seed_2 = tmp_path / "seeds" / "seed-2"
    seed_2.mkdir(parents=True)
    (seed_2 / "log.txt").write_text("an older run's log\n")
    result = run_script("model1.py", "--seeds", "2", "--subset", "300", "--epochs", "1", "--out", tmp_path,
                        data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "seeds.json").read_text())
    assert [r["seed"] for r in summary["seeds"]] == [1, 2] and summary["count"] == 2
    assert {p.name for p in seed_2.iterdir()} == EXPECTED_FILES | {"features.png", "samples.png", "log.txt"}
    log = (seed_2 / "log.txt").read_text()
    assert "an older run's log" not in log and "epoch 1/1" in log and "model1: wrote " in log
    assert json.loads((seed_2 / "metrics.json").read_text())["data"]["train"]["count"] == 60000
    assert sorted(p.name for p in (tmp_path / "seeds").iterdir()) == ["seed-1", "seed-2"]  # nothing left beside
    assert "mean ± std" in (tmp_path / "seeds.md").read_text()


def test_judge_uses_the_last_epochs_not_the_best():
    targets = model3.TARGETS
    history = [{"test_acc": a} for a in [99.6, 99.7, 99.5, 99.45, 99.39]]
    passed, verdict = common.judge("model3", targets, 7900, history, smoke=False)
    assert passed is False and "99.50/99.45/99.39" in verdict and "FAIL" in verdict
    passed, verdict = common.judge("model3", targets, 7900, history[:4], smoke=False)
    assert passed is True and verdict.startswith("model3: PASS params 7,900 < 8,000")
    assert common.judge("model3", targets, 8000, history[:4], smoke=False)[0] is False
    assert common.judge("model3", targets, 7900, history[:4] * 4, smoke=False)[0] is False  # 16 epochs > 15
    assert common.judge("model3", targets, 9000, history, smoke=True)[0] is False  # too big even for a smoke run


def twin_nets(step, flags, mnist, images):
    """A step's config from `flags` (on the CPU), a shuffling loader of the first `images` training images in
    batches of 64, and two copies of the step's Net with the same weights, to train side by side."""
    config = cli.config_from_args(cli.build_parser(step.__name__, step.DEFAULTS, "").parse_args(
        ["--device", "cpu", *flags]))
    train_images, labels = mnist["train"]
    loader = common.DeviceLoader(train_images[:images], labels[:images], 64, "cpu", 0.13, 0.31, shuffle=True, seed=3)
    torch.manual_seed(0)
    nets = [step.Net() for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    return config, loader, nets


def test_train_epoch_is_the_plain_training_loop(mnist):
    """train_epoch (the loop every device runs; a GPU records its train_step) does what a plain loop of train_step
    over the same batches does, to the bit, with a partial last batch, OneCycle moved every batch; and its sums are the
    batches' own."""
    config, loader, nets = twin_nets(model3, ["--epochs", "1", "--batch-size", "64"], mnist, images=200)
    optimizers, schedulers = zip(*(common.make_optimizer_and_scheduler(net, config, len(loader))[:2] for net in nets))
    batches = [(x.clone(), y.clone()) for x, y in loader]
    loader.generator.manual_seed(3)  # train_epoch draws the same shuffle again
    mean_loss, accuracy = common.train_epoch(nets[0], loader, optimizers[0], schedulers[0])
    nets[1].train()
    loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
    for x, y in batches:  # train_step itself is the textbook's five lines (tests/test_house.py)
        loss, logits = common.train_step(nets[1], optimizers[1], x, y)
        schedulers[1].step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
    assert [len(y) for _, y in batches] == [64, 64, 64, 8]
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        assert torch.equal(a, b)
    assert mean_loss == loss_sum.item() / 200 and accuracy == 100.0 * correct.item() / 200
    assert optimizers[0].param_groups[0]["lr"] == optimizers[1].param_groups[0]["lr"] != config.lr


@pytest.mark.slow
def test_evaluating_a_few_hundred_images_at_a_time_changes_no_bit(mnist):
    """evaluate runs a CPU's batches of 1000 in chunks (faster); every logit, so the loss, the accuracy and each
    prediction, is what the whole batch gives. A trained net, so that the predictions are not all one class."""
    images, labels = mnist["train"]
    torch.manual_seed(0)
    flags = ["--device", "cpu", "--scheduler", "none", "--lr", "0.05"]
    net = net_of("model4", flags)  # as its recipe builds it
    train = common.DeviceLoader(images[:2048], labels[:2048], 128, "cpu", 0.13, 0.31, shuffle=True)
    config = cli.config_from_args(cli.build_parser("model4", model4.DEFAULTS, "").parse_args(flags))
    common.train_epoch(net, train, common.make_optimizer_and_scheduler(net, config, len(train))[0])
    test = common.DeviceLoader(*(split[:2300] for split in mnist["test"]), 1000, "cpu", 0.13, 0.31)  # 1000, 1000, 300
    chunked, whole = common.evaluate(net, test), common.evaluate(net, test, chunk=None)
    assert chunked[:2] == whole[:2] and torch.equal(chunked[2], whole[2]) and 30 < whole[1] < 100
    assert common.evaluate(net, test, chunk=7)[:2] == whole[:2]  # a chunk that divides nothing evenly


def test_the_gpu_s_update_is_the_loop_s_train_step():
    """harness/cuda_graph.py records common.train_step itself, and runs it as it is where it does not replay: the
    run's first update (it creates the momentum buffers the graph updates in place) and a partial batch. Checked
    here on the CPU, where nothing is recorded; tests/test_cuda.py trains both ways on a GPU."""
    torch.manual_seed(0)
    net, x, y = model3.Net(), torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    calls = []

    def step(*args):
        calls.append(len(args[2]))
        return common.train_step(*args)
    update = cuda_graph.GraphedStep(step, optimizer, full_batch=16)
    twin = model3.Net()
    twin.load_state_dict(net.state_dict())
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    loss, logits = update(net, optimizer, x, y)  # the first update: eager, through train_step
    assert calls == [16] and update.graph is None and update.optimizer_stepped
    assert torch.equal(loss, common.train_step(twin, twin_optimizer, x, y)[0])
    update(net, optimizer, x[:15], y[:15])  # a partial batch: eager too
    assert calls == [16, 15] and update.graph is None
    source = inspect.getsource(cuda_graph)  # no second copy of the loss, the backward pass or the optimizer's step
    assert "cross_entropy" not in source and ".backward(" not in source and "optimizer.step(" not in source


def test_warm_up_leaves_the_run_as_it_was():
    """The warm-up trains for real (it tunes on CUDA), then restores weights, batch-norm statistics and random
    streams, so a warmed-up run takes the same steps as a cold one."""
    config = cli.Config(epochs=1, batch_size=32, lr=0.05, momentum=0.9, nesterov=True, scheduler="none",
                        step_size=5, gamma=0.1, rotate=0.0, shift=0.0, seed=1)
    torch.manual_seed(0)
    x, y = torch.randn(2, 32, 1, 28, 28), torch.randint(0, 10, (2, 32))
    nets = [model3.Net() for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    optimizers = [common.make_optimizer_and_scheduler(net, config, 1)[0] for net in nets]
    torch.manual_seed(5)
    cuda_graph.warm_up(common.train_step, nets[0], common.make_optimizer_and_scheduler(nets[0], config, 1)[0],
                       [32, 17])
    after_warm_up = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(after_warm_up, torch.rand(1))
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        assert torch.equal(a, b)
    assert all(p.grad is None for p in nets[0].parameters())
    loader = [(x[i], y[i]) for i in range(2)]
    sums = [common.train_epoch(net, _Batches(loader), optimizer) for net, optimizer in zip(nets, optimizers)]
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        assert torch.equal(a, b)
    assert sums[0] == sums[1]


class _Batches(list):
    """A list of batches as train_epoch reads a loader: iterable, with a length and a device."""
    device = torch.device("cpu")


def test_warm_up_loader_leaves_the_batches_as_they_were(mnist):
    images, labels = mnist["train"]
    loaders = [common.DeviceLoader(images, labels, 50, "cpu", 0.13, 0.31, shuffle=True, rotate_degrees=7,
                                   shift_pixels=2, seed=3, limit=200) for _ in range(2)]
    test_loader = common.DeviceLoader(*mnist["test"], 100, "cpu", 0.13, 0.31, limit=200)
    evaluated = []
    cuda_graph.warm_up_loader(loaders[0], lambda: evaluated.append(common.evaluate(model3.Net(), test_loader)))
    assert len(evaluated) == 1
    for (xa, ya), (xb, yb) in zip(loaders[0], loaders[1]):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_a_run_whose_loss_becomes_nan_stops_and_records_where(tmp_path, data_dir, capsys):
    """A rate far too high: one line that says so (no traceback), exit status 1, and, in a folder that holds no run
    (a sweep's seed), a metrics.json that records the divergence as a failure of the target, with the epochs
    finished before it. A folder that holds a run keeps it (tests/test_cli.py)."""
    with pytest.raises(SystemExit) as stop:
        common.run_step("model3", model3.Net, model3.DEFAULTS, model3.TARGETS, model3.__doc__, argv=[
            "--subset", "300", "--epochs", "2", "--lr", "1e6", "--data-dir", str(data_dir), "--out", str(tmp_path)])
    error = capsys.readouterr().err
    assert stop.value.code == 1 and "Traceback" not in error
    assert re.match(r"model3\.py: error: in epoch \d, the training loss became nan at batch \d+; ", error)
    assert "is probably too high (try a smaller --lr)" in error and str(tmp_path / "metrics.json") in error
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["diverged"] in error and metrics["passed"] is False and metrics["verdict"].startswith("model3: FAIL")
    epoch = int(metrics["diverged"].split()[2].rstrip(","))
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, epoch)) and metrics["epochs"] == epoch - 1
    assert metrics["final_test_acc"] is None and metrics["last_test_accs"] == []
    assert metrics["config"]["lr"] == 1e6 and metrics["code"]["fingerprint"]
    assert {p.name for p in tmp_path.iterdir()} == {"metrics.json"}


def test_onecycle_keeps_the_momentum_flag(mnist):
    config = cli.Config(epochs=1, batch_size=64, lr=0.05, momentum=0.8, nesterov=True, scheduler="onecycle",
                        step_size=5, gamma=0.1, rotate=0.0, shift=0.0, seed=1)
    optimizer, scheduler, every = common.make_optimizer_and_scheduler(model3.Net(), config, 10)
    for _ in range(5):
        optimizer.step()  # no gradients yet: changes nothing, but keeps the scheduler's order check quiet
        scheduler.step()
    assert every == "batch" and optimizer.param_groups[0]["momentum"] == 0.8


def test_each_seed_has_its_own_command_line():
    flags = runs_module.seed_flags(["--seeds", "20", "--lr", "0.2", "--jobs=2", "--seed", "5"])
    argv = runs_module.step_argv(common.STEPS_FOLDER / "model3.py", flags, 7, "out/seed-7")
    assert list(argv[2:]) == ["--lr", "0.2", "--seed", "7", "--out", "out/seed-7"]
    # a seed recorded before its command lost the sweep's --seed and --out is the same run
    assert runs_module.same_command("python model3.py --lr 0.2 --seed 5 --out o --seed 7 --out out/seed-7",
                                    "python model3.py --lr 0.2 --seed 7 --out out/seed-7")
    assert not runs_module.same_command("python model3.py --lr 0.2 --seed 7 --out out/seed-7 --seed 5",
                                        "python model3.py --lr 0.2 --seed 7 --out out/seed-7")
    assert argv[1].endswith("model3.py")


@pytest.mark.slow
def test_seeds_in_parallel_processes_and_a_rerun_keeps_completed_seeds(tmp_path, data_dir):
    args = ("model3.py", "--seeds", "2", "--jobs", "2", "--subset", "300", "--epochs", "1", "--out", tmp_path)
    result = run_script(*args, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "seeds.json").read_text())
    assert [r["seed"] for r in summary["seeds"]] == [1, 2] and summary["count"] == 2
    seed_2 = tmp_path / "seeds" / "seed-2"
    assert json.loads((seed_2 / "metrics.json").read_text())["command"] == (  # the command of that run alone
        f"python model3.py --subset 300 --epochs 1 --seed 2 --out {seed_2}")
    assert "epoch 1/1" in (seed_2 / "log.txt").read_text()
    before = (seed_2 / "metrics.json").stat().st_mtime_ns
    (tmp_path / "seeds" / "seed-1" / "metrics.json").unlink()  # as if interrupted before seed 1 finished
    again = run_script(*args, data_dir=data_dir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (seed_2 / "metrics.json").stat().st_mtime_ns == before  # kept, not trained again
    assert (tmp_path / "seeds" / "seed-1" / "metrics.json").exists()


def test_a_cuda_graph_that_fails_to_record_leaves_the_run_on_train_step(monkeypatch):
    """Should recording the update as a CUDA graph raise, the run goes on with train_step as it is (the batch that
    was to be recorded included, nothing lost), says so once, and metrics.json's "update" records it."""
    tries = []

    def failing_graph():
        tries.append(1)
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")
    monkeypatch.setattr(torch.cuda, "CUDAGraph", failing_graph)
    torch.manual_seed(0)
    nets = [model3.Net(), model3.Net()]
    nets[1].load_state_dict(nets[0].state_dict())
    optimizers = [torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9) for net in nets]
    logged, batches = [], [(torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))) for _ in range(3)]
    update = cuda_graph.GraphedStep(common.train_step, optimizers[0], full_batch=16, log=logged.append)
    for x, y in batches:
        loss, _ = update(nets[0], optimizers[0], x, y)
        assert torch.equal(loss, common.train_step(nets[1], optimizers[1], x, y)[0])
    assert tries == [1] and update.graph is None  # tried once, at the second batch, never again
    assert logged == ["recording train_step as a CUDA graph failed (RuntimeError: CUDA error: operation not "
                      "permitted when stream is capturing); the run goes on with train_step as it is"]
    assert update.described().startswith("train_step as it is: recording it as a CUDA graph failed (RuntimeError")
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        assert torch.equal(a, b)
