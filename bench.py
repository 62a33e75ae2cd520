"""Benchmark: the usual MNIST pipeline against this project's, on the same device and net, in one process.

    python bench.py                    # best device; 200 timed steps each, then model3's full 15-epoch run
    python bench.py --steps 5 --skip-full --device cpu   # a smoke of the harness (used by the tests)

The reference is what most solutions of this exercise run: torchvision's MNIST dataset with per-sample PIL
transforms (RandomRotation(7), ToTensor, Normalize) in a DataLoader with 2 workers, batch 128. The project's
pipeline keeps the uint8 split on the device and augments whole batches there (common.DeviceLoader). Both train
model3's Net with SGD for the same number of steps after a warm-up; samples/s gives s/epoch and the ratio.
Writes results/bench.json; `python report.py` puts its table into RESULTS.md.
"""
import argparse
import itertools
import resource
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import common
import model3

# ----------------------------------------------------------------------------------------------------------------
# Settings


def parse_args(argv):
    parser = common.OneLineParser(prog="bench.py", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=common.DEVICES, default="auto", help="default: the best available")
    parser.add_argument("--steps", type=common.positive_int, default=200, help="timed training steps per pipeline")
    parser.add_argument("--warmup", type=common.positive_int, default=10, help="untimed steps first")
    parser.add_argument("--workers", type=common.non_negative_int, default=2, help="reference DataLoader workers")
    parser.add_argument("--skip-full", action="store_true", help="skip model3's full 15-epoch run")
    parser.add_argument("--data-dir", default=common.default_data_dir())
    parser.add_argument("--out", default="results/bench.json", help="where to write the JSON")
    return parser.parse_args(argv)


def peak_memory_mb(device):
    """Peak allocated GPU memory, or the peak resident memory of this process and its (worker) children on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024  # ru_maxrss is in KiB on Linux


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_step(net, optimizer):
    """The usual loop body: batches arrive on the host and are copied over; one eager step."""
    device = next(net.parameters()).device

    def step(x, y):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    return step


def model3_config(device, *flags):
    return common.config_from_args(common.build_parser("model3", model3.DEFAULTS, "").parse_args(
        ["--device", device.type, *flags]))


def project_step(net, _optimizer):
    """The project's step (common.TrainStep) with the project's SGD (fused, and recorded as a graph, on CUDA);
    the same learning rate as the reference, held constant."""
    config = model3_config(next(net.parameters()).device, "--lr", "0.01", "--scheduler", "none")
    return common.TrainStep(net, common.make_optimizer_and_scheduler(net, config, 1)[0])


def time_steps(batches, device, steps, warmup, make_step, seed=0):
    """Train model3's Net on `batches` for warmup + steps SGD steps; return samples per second over the timed ones."""
    torch.manual_seed(seed)
    net = model3.Net().to(device)
    step = make_step(net, torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True))
    net.train()
    seen, started = 0, None
    for index, (x, y) in enumerate(itertools.islice(batches, warmup + steps)):
        if index == warmup:
            synchronize(device)
            started = time.perf_counter()
        step(x, y)
        if index >= warmup:
            seen += len(y)
    synchronize(device)
    return seen / (time.perf_counter() - started)


def endless(make_iterable):
    while True:
        yield from make_iterable()


# ----------------------------------------------------------------------------------------------------------------
# The two pipelines


def reference_batches(data_dir, device, mean, std, workers):
    from torchvision import datasets, transforms
    transform = transforms.Compose([transforms.RandomRotation(7), transforms.ToTensor(),
                                    transforms.Normalize((mean,), (std,))])
    dataset = datasets.MNIST(data_dir, train=True, download=False, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=128, shuffle=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    return endless(lambda: loader)


def project_batches(data, device):
    loader = common.DeviceLoader(*data["train"], 128, device, data["mean"], data["std"], shuffle=True,
                                 rotate_degrees=7.0)
    return endless(lambda: loader)


# ----------------------------------------------------------------------------------------------------------------
# Main


def main(argv=None):
    args = parse_args(argv)
    try:
        device = torch.device(common.resolve_device(args.device))
        common.check_writable(Path(args.out).parent)
        data = common.prepare_data(args.data_dir)
    except common.UsageError as e:
        print(f"bench.py: error: {e}", file=sys.stderr)
        return 2
    except common.DataError as e:
        print(f"bench.py: error: {e}", file=sys.stderr)
        return 1
    device_text = common.describe_device(device)
    print(f"bench: {device_text}; {args.warmup} warm-up + {args.steps} timed steps of batch 128 per pipeline")
    # The middle row is the project without its device-specific setting, to show what that setting is worth:
    # the CUDA graph on a GPU, glibc keeping freed memory on the CPU (it stays on once set, hence this order).
    without = "eager steps, no CUDA graph" if device.type == "cuda" else "glibc's default allocator"
    pipelines = [
        (f"reference (DataLoader + PIL transforms, {args.workers} workers)",
         lambda: reference_batches(args.data_dir, device, data["mean"], data["std"], args.workers), reference_step),
        (f"project, {without}", lambda: project_batches(data, device), project_step),
        ("project (in-memory batches, common.TrainStep)", lambda: project_batches(data, device), project_step)]
    rows = []
    for index, (name, make_batches, make_step) in enumerate(pipelines):
        common.CUDA_GRAPHS = index != 1
        if index == 2 and device.type == "cpu":
            common.keep_freed_memory()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        rate = time_steps(make_batches(), device, args.steps, args.warmup, make_step)
        rows.append(dict(pipeline=name, samples_per_s=round(rate, 1), epoch_s=round(60000 / rate, 2),
                         peak_memory_mb=round(peak_memory_mb(device), 1)))
        print(f"  {name}: {rate:,.0f} samples/s, {60000 / rate:.2f} s/epoch")
    speedup = rows[0]["epoch_s"] / rows[-1]["epoch_s"]
    command = " ".join(["python", "bench.py", *(sys.argv[1:] if argv is None else argv)])
    result = dict(device=device_text, command=command,
                  date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), torch=torch.__version__, steps=args.steps,
                  warmup=args.warmup, pipelines=rows, reference_epoch_s=rows[0]["epoch_s"],
                  project_epoch_s=rows[-1]["epoch_s"], speedup=round(speedup, 2),
                  model3_train_seconds=None, model3_final_test_acc=None, model3_verdict=None)
    if not args.skip_full:
        print("bench: model3's full run with its defaults (training + per-epoch evaluation, data already loaded)")
        config = model3_config(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        metrics = common.run_once("model3", model3.Net, config, model3.TARGETS, data, out=None,
                                  command="python model3.py", log=lambda *_: None)
        result.update(model3_train_seconds=metrics["train_seconds"], model3_setup_seconds=metrics["setup_seconds"],
                      model3_final_test_acc=metrics["final_test_acc"],
                      model3_verdict=metrics["verdict"], model3_peak_memory_mb=round(peak_memory_mb(device), 1))
        print(f"  {metrics['verdict']}\n  model3: {metrics['epochs']} epochs in {metrics['train_seconds']:.1f} s "
              f"(+ {metrics['setup_seconds']:.1f} s one-time setup)")
    result["peak_memory_mb"] = round(peak_memory_mb(device), 1)
    table = ["| pipeline | device | samples/s | s/epoch | peak memory so far (MB) |", "|---|---|---|---|---|"]
    table += [f"| {r['pipeline']} | {device_text} | {r['samples_per_s']:,.0f} | {r['epoch_s']:.2f} "
              f"| {r['peak_memory_mb']:,.0f} |" for r in rows]
    result["table_markdown"] = "\n".join(table)
    print("\n" + result["table_markdown"])
    print(f"speedup vs reference ({device_text}): {speedup:.1f}x")
    common.atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
