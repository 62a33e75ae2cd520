"""Smoke runs of every step on a subset, as a user runs them: outputs written, metrics sane, model reloadable."""
import importlib
import json
import math

import pytest
import torch

import common
import model3
import model4
from conftest import ROOT, run_script
from harness import cli, cuda_graph, files, runs as runs_module

EXPECTED_FILES = {"summary.txt", "rf.md", "metrics.json", "curves.png", "misclassified.png", "confusion.png",
                  "model.pt"}


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory, data_dir):
    """Each step once, 2 epochs on 1,000 images of each split, in batches of 32; step 3 trains only its last epoch
    clean, so its first is augmented (its default of 3 clean epochs would leave none)."""
    runs = {}
    for step in ("model1", "model2", "model3"):
        out = tmp_path_factory.mktemp(step)
        clean = ["--clean-epochs", "1"] if step == "model3" else []
        result = run_script(f"{step}.py", "--subset", "1000", "--epochs", "2", "--batch-size", "32", *clean,
                            "--out", out, data_dir=data_dir)
        runs[step] = (result, out)
    return runs


@pytest.mark.parametrize("step", ["model1", "model2", "model3"])
def test_smoke_run_writes_every_output_with_sane_metrics(smoke_runs, step):
    result, out = smoke_runs[step]
    assert result.returncode == 0, result.stdout + result.stderr
    written = {p.name for p in out.iterdir()}
    assert EXPECTED_FILES <= written and ("samples.png" in written) == (step == "model1")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == step and metrics["epochs"] == 2 and len(metrics["history"]) == 2
    assert metrics["params"] == common.count_params(importlib.import_module(step).Net()) and metrics["seed"] == 1
    assert metrics["device"].startswith("cpu")
    assert all(epoch["seconds"] > 0 for epoch in metrics["history"])
    assert metrics["train_seconds"] == round(sum(epoch["seconds"] for epoch in metrics["history"]), 2)
    if step == "model3":  # the first epoch augmented, the last clean
        config = metrics["config"]
        assert config["clean_epochs"] == 1 and config["rotate"] > 0 and config["shift"] > 0
    assert metrics["passed"] is None and "N/A (smoke run" in metrics["verdict"]  # a subset is not judged
    for epoch in metrics["history"]:
        assert set(epoch) >= {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"}
        assert 0 <= epoch["train_acc"] <= 100 and 0 <= epoch["test_acc"] <= 100
        assert math.isfinite(epoch["train_loss"]) and math.isfinite(epoch["test_loss"])
    # 64 steps must learn something, even model1's plain SGD (it reaches about 70 %)
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]
    assert metrics["history"][-1]["test_acc"] > 50
    assert sum(sum(row) for row in metrics["confusion"]) == 1000
    assert "Total params" in (out / "summary.txt").read_text()
    assert f"{metrics['params']:,}" in (out / "summary.txt").read_text()
    assert "| layer | kind |" in (out / "rf.md").read_text()
    assert metrics["verdict"] in result.stdout


@pytest.mark.parametrize("step", [model3, model4], ids=lambda step: step.__name__)
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
    config = cli.Config(epochs=2, batch_size=64, test_batch_size=500, lr=0.05, momentum=0.9, nesterov=True,
                        weight_decay=0.0, scheduler="onecycle", step_size=5, gamma=0.1, rotate=7.0, shift=2.0, seed=3,
                        subset=640, net_kwargs={"dropout": 0.05})
    runs = [common.fit(model3.Net, config, mnist, log=lambda *_: None).history for _ in range(2)]
    strip = [[{k: v for k, v in h.items() if k != "seconds"} for h in run] for run in runs]
    assert strip[0] == strip[1]
    other = common.fit(model3.Net, cli.Config(**{**vars(config), "seed": 4}), mnist, log=lambda *_: None).history
    assert [h["train_loss"] for h in other] != [h["train_loss"] for h in runs[0]]


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
    """train_epoch (the loop every device but CUDA runs as written) does what a textbook loop over the same batches
    does, to the bit, with a partial last batch, OneCycle moved every batch; and its sums are the batches' own."""
    config, loader, nets = twin_nets(model3, ["--epochs", "1", "--batch-size", "64", "--label-smoothing", "0.1"],
                                     mnist, images=200)
    optimizers, schedulers = zip(*(common.make_optimizer_and_scheduler(net, config, len(loader))[:2] for net in nets))
    batches = [(x.clone(), y.clone()) for x, y in loader]
    loader.generator.manual_seed(3)  # train_epoch draws the same shuffle again
    mean_loss, accuracy = common.train_epoch(nets[0], loader, optimizers[0], schedulers[0], config)
    nets[1].train()
    loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
    for x, y in batches:
        optimizers[1].zero_grad()
        logits = nets[1](x)
        loss = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)
        loss.backward()
        optimizers[1].step()
        schedulers[1].step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
    assert [len(y) for _, y in batches] == [64, 64, 64, 8]
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        assert torch.equal(a, b)
    assert mean_loss == loss_sum.item() / 200 and accuracy == 100.0 * correct.item() / 200
    assert optimizers[0].param_groups[0]["lr"] == optimizers[1].param_groups[0]["lr"] != config.lr


def test_evaluating_a_few_hundred_images_at_a_time_changes_no_bit(mnist):
    """evaluate runs a CPU's batches of 1000 in chunks (faster); every logit, so the loss, the accuracy and each
    prediction, is what the whole batch gives. A trained net, so that the predictions are not all one class."""
    images, labels = mnist["train"]
    torch.manual_seed(0)
    flags = ["--device", "cpu", "--scheduler", "none", "--lr", "0.05"]
    net = common.net_of("model4", flags)  # as its recipe builds it
    train = common.DeviceLoader(images[:2048], labels[:2048], 128, "cpu", 0.13, 0.31, shuffle=True)
    config = cli.config_from_args(cli.build_parser("model4", model4.DEFAULTS, "").parse_args(flags))
    common.train_epoch(net, train, common.make_optimizer_and_scheduler(net, config, len(train))[0], None, config)
    test = common.DeviceLoader(*(split[:2300] for split in mnist["test"]), 1000, "cpu", 0.13, 0.31)  # 1000, 1000, 300
    chunked, whole = common.evaluate(net, test), common.evaluate(net, test, chunk=None)
    assert chunked[:2] == whole[:2] and torch.equal(chunked[2], whole[2]) and 30 < whole[1] < 100
    assert common.evaluate(net, test, chunk=7)[:2] == whole[:2]  # a chunk that divides nothing evenly


def test_the_weight_average_moves_toward_each_update_by_one_minus_its_decay():
    """--ema: each update moves the average toward the weights and batch-norm statistics by 1 - decay, by more for
    the first updates ((1 + n) / (10 + n) kept of the average at the n-th); batch norm's count is copied."""
    torch.manual_seed(0)
    net = model4.Net()
    average = common.WeightAverage(net, decay=0.9)
    expected = {key: value.clone() for key, value in net.state_dict().items()}
    for n in range(1, 6):
        with torch.no_grad():
            for value in net.state_dict().values():
                value.add_(torch.randn_like(value) if value.is_floating_point() else 1)
        average.update()
        kept = min(0.9, (1 + n) / (10 + n))
        for key, value in net.state_dict().items():
            expected[key] = kept * expected[key] + (1 - kept) * value if value.is_floating_point() else value.clone()
    averaged = average.model.state_dict()
    assert all(torch.allclose(averaged[key], value, atol=1e-6) for key, value in expected.items())
    assert averaged["features.0.1.num_batches_tracked"] == 5


def test_train_epoch_moves_the_average_after_every_update_and_trains_as_without_it(mnist):
    config, loader, nets = twin_nets(model4, ["--scheduler", "none", "--lr", "0.05", "--ema", "0.9"], mnist,
                                     images=320)
    average = common.WeightAverage(nets[0], config.ema)
    for net, each in zip(nets, (average, None)):
        loader.generator.manual_seed(3)  # both draw the same batches
        optimizer = common.make_optimizer_and_scheduler(net, config, len(loader))[0]
        common.train_epoch(net, loader, optimizer, None, config, average=each)
    assert average.updates == len(loader) == 5
    assert all(torch.equal(a, b) for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()))
    assert not torch.equal(average.model.features[0][0].weight, nets[0].features[0][0].weight)


def test_a_run_with_ema_judges_and_saves_the_average(tmp_path, data_dir, mnist):
    result = run_script("model4.py", "--subset", "640", "--epochs", "2", "--ema", "0.99", "--out", tmp_path,
                        data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["ema"] == 0.99 and metrics["config"]["activation"] == model4.DEFAULTS["activation"]
    net = common.net_of("model4", [])
    net.load_state_dict(files.load_state_dict(tmp_path / "model.pt"))
    loader = common.DeviceLoader(*(split[:640] for split in mnist["test"]), 1000, "cpu", **metrics["normalisation"])
    assert common.evaluate(net, loader)[1] == pytest.approx(metrics["final_test_acc"], abs=0.005)


def test_the_graphed_update_computes_the_loop_s_forward_and_loss():
    """The forward and loss that harness/cuda_graph.py compiles and records are the loop's own lines (checked here
    on the CPU, eagerly; tests/test_cuda.py trains both ways on a GPU)."""
    torch.manual_seed(0)
    net, x, y = model3.Net(), torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    graphed = cuda_graph.GraphedUpdate(net, optimizer, label_smoothing=0.1, bf16=False, full_batch=16)
    loss, logits = graphed.eager_forward_and_loss(x, y)
    assert torch.equal(logits, net(x))
    assert torch.equal(loss, torch.nn.functional.cross_entropy(net(x), y, label_smoothing=0.1))
    assert not graphed.takes(x)  # the run's first update is the loop's own: it creates the momentum buffers
    loss.backward()
    optimizer.step()
    assert graphed.takes(x) and not graphed.takes(x[:15])  # then every full batch, never a partial one


def test_warm_up_leaves_the_run_as_it_was():
    """The warm-up trains for real (it compiles and tunes on CUDA), then restores weights, batch-norm statistics
    and random streams, so a warmed-up run takes the same steps as a cold one."""
    config = cli.Config(epochs=1, batch_size=32, test_batch_size=500, lr=0.05, momentum=0.9, nesterov=True,
                        weight_decay=0.0, scheduler="none", step_size=5, gamma=0.1, rotate=0.0, shift=0.0,
                        seed=1)
    torch.manual_seed(0)
    x, y = torch.randn(2, 32, 1, 28, 28), torch.randint(0, 10, (2, 32))
    nets = [model3.Net() for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    optimizers = [common.make_optimizer_and_scheduler(net, config, 1)[0] for net in nets]
    torch.manual_seed(5)
    forward_and_loss = lambda x, y: (torch.nn.functional.cross_entropy(nets[0](x), y), None)  # noqa: E731
    cuda_graph.warm_up_updates(nets[0], forward_and_loss, common.make_optimizer_and_scheduler(nets[0], config, 1)[0],
                               [32, 17])
    after_warm_up = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(after_warm_up, torch.rand(1))
    for a, b in zip(nets[0].state_dict().values(), nets[1].state_dict().values()):
        assert torch.equal(a, b)
    assert all(p.grad is None for p in nets[0].parameters())
    loader = [(x[i], y[i]) for i in range(2)]
    sums = [common.train_epoch(net, _Batches(loader), optimizer, None, config)
            for net, optimizer in zip(nets, optimizers)]
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


def test_onecycle_keeps_the_momentum_flag(mnist):
    config = cli.Config(epochs=1, batch_size=64, test_batch_size=500, lr=0.05, momentum=0.8, nesterov=True,
                        weight_decay=0.0, scheduler="onecycle", step_size=5, gamma=0.1, rotate=0.0, shift=0.0, seed=1)
    optimizer, scheduler, every = common.make_optimizer_and_scheduler(model3.Net(), config, 10)
    for _ in range(5):
        optimizer.step()  # no gradients yet: changes nothing, but keeps the scheduler's order check quiet
        scheduler.step()
    assert every == "batch" and optimizer.param_groups[0]["momentum"] == 0.8


def test_bf16_precision_trains_and_is_recorded(tmp_path, data_dir):
    result = run_script("model3.py", "--subset", "640", "--epochs", "2", "--precision", "bf16", "--out", tmp_path,
                        data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["precision"] == "bf16"
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]


def test_bf16_changes_the_forward_pass_and_fp32_does_not():
    torch.manual_seed(0)
    net, x, y = model3.Net(), torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    with torch.no_grad():
        plain = torch.nn.functional.cross_entropy(net(x), y).item()
    losses = {}
    for precision in ("fp32", "bf16"):
        config = cli.config_from_args(cli.build_parser("model3", model3.DEFAULTS, "").parse_args(
            ["--device", "cpu", "--precision", precision]))
        optimizer = torch.optim.SGD(net.parameters(), lr=0.0)  # trains nothing: the loss of the same weights
        losses[precision] = common.train_epoch(net, _Batches([(x, y)]), optimizer, None, config)[0]
    assert losses["fp32"] == pytest.approx(plain, rel=1e-6) and losses["bf16"] != losses["fp32"]
    assert losses["bf16"] == pytest.approx(plain, rel=0.05)


def test_channels_last_trains_in_nhwc_and_is_recorded_and_off_by_default(mnist):
    """--channels-last keeps the weights in NHWC order, learns as much, and is a setting of its own: its numbers
    differ from the default run's in the last bits, and the default leaves the weights as they were built."""
    parser = cli.build_parser("model3", model3.DEFAULTS, "")
    flags = ["--device", "cpu", "--subset", "640", "--epochs", "1", "--seed", "3"]
    assert not cli.config_from_args(parser.parse_args(flags)).channels_last
    trained = {}
    for extra in ([], ["--channels-last"]):
        config = cli.config_from_args(parser.parse_args(flags + extra))
        trained[bool(extra)] = common.fit(model3.Net, config, mnist, log=lambda *_: None)
        assert cli.settings_to_record(config)["channels_last"] is bool(extra)
    weights = {nhwc: [p for p in t.model.parameters() if p.dim() == 4] for nhwc, t in trained.items()}
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights[True])
    assert any(not w.is_contiguous() for w in weights[True])  # a 1-channel or 1×1 kernel is both; the others not
    assert all(w.is_contiguous() for w in weights[False])
    losses = {nhwc: t.history[0]["train_loss"] for nhwc, t in trained.items()}
    assert losses[True] != losses[False] and losses[True] == pytest.approx(losses[False], rel=0.01)

def test_each_seed_has_its_own_command_line():
    flags = runs_module.seed_flags(["--seeds", "20", "--lr", "0.2", "--jobs=2", "--seed", "5"])
    argv = runs_module.step_argv(common.STEPS_FOLDER / "model3.py", flags, 7, "out/seed-7")
    assert list(argv[2:]) == ["--lr", "0.2", "--seed", "5", "--seed", "7", "--out", "out/seed-7"]
    assert argv[1].endswith("model3.py")


def test_seeds_in_parallel_processes_and_a_rerun_keeps_completed_seeds(tmp_path, data_dir):
    args = ("model3.py", "--seeds", "2", "--jobs", "2", "--subset", "300", "--epochs", "1", "--out", tmp_path)
    result = run_script(*args, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "seeds.json").read_text())
    assert [r["seed"] for r in summary["seeds"]] == [1, 2] and summary["count"] == 2
    seed_2 = tmp_path / "seeds" / "seed-2"
    assert json.loads((seed_2 / "metrics.json").read_text())["command"].endswith(
        f"--subset 300 --epochs 1 --out {tmp_path} --seed 2 --out {seed_2}")
    assert "epoch 1/1" in (seed_2 / "log.txt").read_text()
    before = (seed_2 / "metrics.json").stat().st_mtime_ns
    (tmp_path / "seeds" / "seed-1" / "metrics.json").unlink()  # as if interrupted before seed 1 finished
    again = run_script(*args, data_dir=data_dir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (seed_2 / "metrics.json").stat().st_mtime_ns == before  # kept, not trained again
    assert (tmp_path / "seeds" / "seed-1" / "metrics.json").exists()


def test_distilled_is_half_the_loss_and_half_the_gap_to_the_teacher():
    torch.manual_seed(0)
    logits, taught, loss = torch.randn(8, 10), torch.randn(8, 10), torch.tensor(2.0)
    assert torch.allclose(common.distilled(loss, logits, logits), loss / 2)  # the same predictions: no gap
    t = common.DISTILL_TEMPERATURE
    soft_teacher, soft_net = (torch.softmax(z / t, 1) for z in (taught, logits))
    gap = (soft_teacher * (soft_teacher.log() - soft_net.log())).sum(1).mean()  # KL(teacher ‖ net), per image
    assert torch.allclose(common.distilled(loss, logits, taught), loss / 2 + t * t * gap / 2, atol=1e-6)


def test_a_run_with_a_teacher_learns_from_the_net_a_run_saved(tmp_path, data_dir):
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    flags = ("--subset", "1280", "--epochs", "1", "--val", "256")
    result = run_script("model3.py", *flags, "--out", teacher, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run_script("designs.py", "--design", "pool1_ds-8.13.13.13", *flags, "--teacher", teacher, "--out",
                        student, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((student / "metrics.json").read_text())["config"]["teacher"] == str(teacher)
    # a teacher that trained on images this run holds out, a folder with no run: one line each, exit 2
    for folder, val, says in ((teacher, "512", "held out 256 training images and this run holds out 512"),
                              (tmp_path / "nothing", "256", "holds no run's metrics.json")):
        result = run_script("designs.py", "--subset", "1280", "--epochs", "1", "--val", val, "--teacher", folder,
                            "--out", tmp_path / "refused", data_dir=data_dir)
        assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "refused" / "metrics.json").exists()


def test_adamw_takes_a_first_step_of_the_learning_rate_on_every_weight_with_a_gradient():
    """--optimizer adamw: Adam scales each weight's step by its own gradients' size, so its first step is lr times
    the gradient's sign, whatever the gradient's size; SGD's is lr times the gradient. --weight-decay is AdamW's."""
    torch.manual_seed(0)
    net, x, y = model4.Net(), torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    config = cli.config_from_args(cli.build_parser("model4", model4.DEFAULTS, "").parse_args(
        ["--device", "cpu", "--optimizer", "adamw", "--lr", "0.003", "--scheduler", "none"]))
    optimizer, scheduler, _ = common.make_optimizer_and_scheduler(net, config, 1)
    assert isinstance(optimizer, torch.optim.AdamW) and scheduler is None
    assert optimizer.param_groups[0]["weight_decay"] == 0.0
    before = [p.detach().clone() for p in net.parameters()]
    torch.nn.functional.cross_entropy(net(x), y).backward()
    optimizer.step()
    for old, p in zip(before, net.parameters()):
        clear = p.grad.abs() > 1e-4  # Adam's eps (1e-8) shortens the steps of gradients near it
        assert clear.any() and torch.allclose((p.detach() - old)[clear], -0.003 * p.grad[clear].sign(), atol=1e-6)
    sgd = cli.config_from_args(cli.build_parser("model4", model4.DEFAULTS, "").parse_args(["--device", "cpu"]))
    assert isinstance(common.make_optimizer_and_scheduler(net, sgd, 1)[0], torch.optim.SGD)
