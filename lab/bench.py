"""Benchmark: the usual MNIST pipeline against this project's, on the same device and nets, in one run.

    python -m lab.bench                    # best device; 3 rounds of 200 timed steps each, then steps 3 and 4 in full
    python -m lab.bench --device cuda --out results/bench-cuda.json          # the GPU's table beside the CPU's
    python -m lab.bench --steps 5 --repeats 1 --skip-full --device cpu   # a smoke of the harness (the tests')

The reference is what most solutions of this exercise run: torchvision's MNIST dataset with per-sample PIL
transforms (RandomRotation(7), ToTensor, Normalize) in a DataLoader with 2 workers, batch 128, and an eager
training step. The project's pipeline keeps the uint8 split on the device, augments whole batches there
(common.DeviceLoader) and trains with common.train_epoch, as `fit` does (its train_step recorded and replayed as a
CUDA graph on a GPU). Both train the same three nets in turn: step 3's, step 4's and the 99 % club's
(lab/frontier.py's CLUB); the club's net also on 1 thread, as a sweep runs each of its runs. On a GPU a row runs
step 3's net with eager steps, to show what recording is worth. On a CPU it also times common.evaluate over the
test split, its batches of 1000 whole and in chunks (as evaluate runs them there), for step 3's net and the club's.
Each row trains its net with SGD for the same number of steps after a warm-up, in a fresh process of its own, and
the rows take turns for --repeats rounds; each row's median samples/s gives its s/epoch and the ratios. Then
`make model3` and `make model4` as they train (fit with each step's defaults, the data already loaded), each in a
process of its own: the seconds of their epochs, and their one-time costs apart. Rows of ideas that measured no
gain went with their code; their tables stay in RESULTS.md, each with the commit that made it. Measured on an H100
and on 2 CPU cores: lab/README.md, Performance. Writes results/bench.json; `python -m lab.report` puts its table
into RESULTS.md.
"""
import argparse
import itertools
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import common
import model3
import model4
from lab import frontier, report
from harness import cli, cuda_graph, errors, files, mnist
from harness.provenance import checkout_state

# ----------------------------------------------------------------------------------------------------------------
# Settings


def parse_args(argv):
    parser = cli.OneLineParser(prog="lab.bench", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=cli.DEVICES, default="auto", help="default: the best available")
    parser.add_argument("--steps", type=cli.positive_int, default=200, help="timed training steps per pipeline")
    parser.add_argument("--warmup", type=cli.positive_int, default=10, help="untimed steps first")
    parser.add_argument("--repeats", type=cli.positive_int, default=3,
                        help="rounds of all pipelines, interleaved; each row reports its median (default: 3)")
    parser.add_argument("--workers", type=cli.non_negative_int, default=2, help="reference DataLoader workers")
    parser.add_argument("--skip-full", action="store_true", help="skip the full 15-epoch runs of steps 3 and 4")
    parser.add_argument("--data-dir", default=mnist.default_data_dir())
    parser.add_argument("--out", default="results/bench.json", help="where to write the JSON")
    parser.add_argument("--pipeline", type=int, choices=range(len(PIPELINES)), help=argparse.SUPPRESS)  # internal: one row
    parser.add_argument("--full", choices=FULL_RUNS, help=argparse.SUPPRESS)  # internal: one step's full run
    return parser.parse_args(argv)


def peak_memory_mb(device):
    """Peak allocated GPU memory; on the CPU, the peak resident memory of this process's own address space
    (VmHWM: unlike getrusage's figure it does not inherit the parent's peak across fork and exec; DataLoader
    workers are not included)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux; a fallback elsewhere


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reference_step(net):
    """The usual loop body: batches arrive on the host and are copied over; one eager step of plain SGD."""
    device = next(net.parameters()).device
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    def step(x, y):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    return step


def step_config(step, device, *flags):
    module = STEP_MODULES[step]
    return cli.config_from_args(cli.build_parser(step, module.DEFAULTS, "").parse_args(
        ["--device", device.type, *flags]))


def project_rate(loader, device, steps, warmup, fast=True, seed=0, make_net=model3.Net):
    """Train model3's Net (or `make_net`'s) as `fit` does — common.train_epoch over the project's batches, its
    train_step replayed as a CUDA graph where `fast` and the device is a GPU (harness/cuda_graph.graphed, warmed up
    untimed) — for warmup + steps batches, with the project's SGD at the reference's learning rate, held constant;
    return samples per second over the timed ones."""
    torch.manual_seed(seed)
    config = step_config("model3", device, "--lr", "0.01", "--scheduler", "none")
    net = make_net().to(device)
    optimizer = common.make_optimizer_and_scheduler(net, config, 1)[0]
    graphed_step = (cuda_graph.graphed(common.train_step, net, optimizer, loader, evaluate_test=lambda: None,
                                       spare_optimizer=common.make_optimizer_and_scheduler(net, config, 1)[0])
                    if fast and device.type == "cuda" else None)
    batches = endless(lambda: loader)
    common.train_epoch(net, Batches(batches, warmup, device), optimizer, None, graphed_step)
    synchronize(device)
    started = time.perf_counter()
    common.train_epoch(net, Batches(batches, steps, device), optimizer, None, graphed_step)
    synchronize(device)
    return steps * loader.batch_size / (time.perf_counter() - started)


class Batches:
    """The next `count` batches of an endless stream, as common.train_epoch reads a loader."""

    def __init__(self, stream, count, device):
        self.stream, self.count, self.device = stream, count, device

    def __len__(self):
        return self.count

    def __iter__(self):
        return itertools.islice(self.stream, self.count)


def time_steps(batches, device, steps, warmup, make_step, seed=0, make_net=model3.Net):
    """Train model3's Net (or `make_net`'s) on `batches` for warmup + steps SGD steps; return samples per second
    over the timed ones."""
    torch.manual_seed(seed)
    net = make_net().to(device)
    step = make_step(net)
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


def median_row(row_runs):
    """One pipeline's row from its rounds: the median rate (the upper middle one for an even count), the highest
    peak memory, and every round's rate."""
    rates = sorted(run["samples_per_s"] for run in row_runs)
    rate = rates[len(rates) // 2]
    return dict(row_runs[0], samples_per_s=rate, epoch_s=round(60000 / rate, 2),  # its pipeline, kind and net
                peak_memory_mb=max(run["peak_memory_mb"] for run in row_runs),
                rounds_samples_per_s=[run["samples_per_s"] for run in row_runs])


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


def project_loader(data, device):
    return common.DeviceLoader(*data["train"], 128, device, data["mean"], data["std"], shuffle=True,
                               rotate_degrees=7.0)


# Each row runs in a fresh process, so that its peak memory is its own and no setting carries over. A row is a
# pipeline and a net; each net's speedup is its reference row's time over its project row's (the defaults a user
# gets).
NETS = {"model3": "step 3's net", "model4": "step 4's net", "club": "the 99 % club's net"}
PIPELINES = ("reference model3", "project-eager model3", "project model3", "reference model4", "project model4",
             "reference club", "project club", "project-1-thread club")
LABELS = {"reference": "reference (DataLoader + PIL transforms, {workers} workers)",
          "project-eager": "project, eager steps (no CUDA graph)",
          "project": "project (in-memory batches, common.train_epoch)",
          "project-1-thread": "project on 1 thread (as a sweep runs it)"}
STEP_MODULES = {"model3": model3, "model4": model4}
FULL_RUNS = tuple(STEP_MODULES)  # `make model3` and `make model4`, timed as they train


def club_net():
    """The 99 % club's net (lab/frontier.py's CLUB)."""
    return frontier.net_of(*frontier.CLUB)


MAKE_NET = {"model3": model3.Net, "model4": model4.Net, "club": club_net}


def row_label(kind, net, workers, params):
    return f"{LABELS[kind].format(workers=workers)}, {NETS[net]} ({params:,} parameters)"


def pipelines_for(device):
    """The eager row exists to measure what recording the update as a CUDA graph is worth, which only a GPU does."""
    return [name for name in PIPELINES if not name.startswith("project-eager ") or device.type == "cuda"]


def run_pipeline(args, device, data):
    kind, net = PIPELINES[args.pipeline].split()
    make_net = MAKE_NET[net]
    label = row_label(kind, net, args.workers, common.count_params(make_net()))
    if kind == "reference":
        batches = reference_batches(args.data_dir, device, data["mean"], data["std"], args.workers)
        rate = time_steps(batches, device, args.steps, args.warmup, reference_step, make_net=make_net)
    else:
        if kind == "project-1-thread":  # this row's own process
            torch.set_num_threads(1)
        rate = project_rate(project_loader(data, device), device, args.steps, args.warmup,
                            fast=kind != "project-eager", make_net=make_net)
    return dict(pipeline=label, kind=kind, net=net, samples_per_s=round(rate, 1), epoch_s=round(60000 / rate, 2),
                peak_memory_mb=round(peak_memory_mb(device), 1))


def full_run(step, device, data):
    """`make STEP` as it trains: `fit` with the step's defaults on the data already loaded, every epoch evaluated;
    the seconds of its epochs, its one-time costs apart."""
    module = STEP_MODULES[step]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trained = common.fit(module.Net, step_config(step, device), data, log=lambda *_: None)
    train_seconds = round(sum(row["seconds"] for row in trained.history), 2)
    _, verdict = common.judge(step, module.TARGETS, common.count_params(trained.model), trained.history, smoke=False)
    return dict(step=step, epochs=len(trained.history), train_seconds=train_seconds,
                setup_seconds=round(trained.setup_seconds, 3), final_test_acc=trained.history[-1]["test_acc"],
                verdict=verdict, peak_memory_mb=round(peak_memory_mb(device), 1))


def where_the_time_goes(device, steps=30, top=8):
    """torch.profiler over `steps` training steps of each step's net (after a warm-up), on random batches: the
    operators that take the most of a step, forward and backward, as {net: [{operator, shapes, ms, share}]}, each
    one operator on one input shape. What a speed-up has to shrink."""
    from torch.profiler import ProfilerActivity, profile
    found = {}
    for net_name in ("model3", "model4"):
        torch.manual_seed(0)
        net = MAKE_NET[net_name]().to(device)
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        x, y = torch.randn(128, 1, 28, 28, device=device), torch.randint(0, 10, (128,), device=device)
        for _ in range(5):
            common.train_step(net, optimizer, x, y)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as run:
            for _ in range(steps):
                common.train_step(net, optimizer, x, y)
        events = run.key_averages(group_by_input_shape=True)
        total = sum(event.self_cpu_time_total for event in events)
        found[net_name] = [dict(operator=event.key, shapes=str(event.input_shapes[:2]),
                                ms=round(event.self_cpu_time_total / steps / 1000, 2),
                                share=round(event.self_cpu_time_total / total, 3))
                           for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]]
    return found


def evaluation_rates(data, device, repeats):
    """common.evaluate's images/s over the test split in its batches of 1000, evaluated whole and (as on a CPU it
    does) CPU_EVAL_CHUNK at a time, for model3's net and the club's: in one process, the two ways taking turns
    for `repeats` rounds, each its median. An evaluation of a run's every epoch, which at a thousand parameters
    costs about as much as a fifth of its training."""
    loader = common.DeviceLoader(*data["test"], 1000, device, data["mean"], data["std"])
    rows = []
    for name, make_net in (("model3", model3.Net), ("club", club_net)):
        torch.manual_seed(0)
        net, rates = make_net().to(device), {"whole": [], "chunked": []}
        common.evaluate(net, loader)  # warm-up: the first pass allocates
        for _ in range(repeats):
            for way, chunk in (("whole", None), ("chunked", common.CPU_EVAL_CHUNK)):
                started = time.perf_counter()
                common.evaluate(net, loader, chunk=chunk)
                rates[way].append(len(loader.labels) / (time.perf_counter() - started))
        whole, chunked = (sorted(rates[way])[len(rates[way]) // 2] for way in ("whole", "chunked"))
        rows.append(dict(net=name, params=common.count_params(net), chunk=common.CPU_EVAL_CHUNK,
                         whole_images_per_s=round(whole), chunked_images_per_s=round(chunked),
                         ratio=round(chunked / whole, 2)))
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Main


def main(argv=None):
    args = parse_args(argv)
    if args.pipeline is not None or args.full is not None:  # a child: SIGTERM from the parent ends it at once
        return bench(args, argv)
    return errors.run_main("lab.bench", lambda: bench(args, argv),
                           f"{args.out} was not written, and whatever it held before is kept")


def run_child(argv):
    """Run one pipeline's process to its end: (exit status, stdout, stderr). A session of its own, so that Ctrl-C
    reaches this process alone, which ends the child before it stops."""
    child = None
    try:
        with errors.interrupts_held():  # an interrupt inside Popen would leave a child that nothing ends
            child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        stdout, stderr = child.communicate()
    except KeyboardInterrupt:
        if child is not None:
            child.terminate()  # the child stops as on Ctrl-C, within a second or two
            child.wait()
        raise
    return child.returncode, stdout, stderr


def child_result(args, device, *flags):
    """Run this module in a fresh process for one row or one full run; its JSON result (the last line it prints)."""
    returncode, stdout, stderr = run_child([sys.executable, "-m", "lab.bench", *flags, "--device", device.type,
                                            "--data-dir", args.data_dir])
    if returncode != 0:
        raise errors.TrainingError(f"the child `{' '.join(flags)}` failed:\n{stderr.strip()}")
    return json.loads(stdout.strip().splitlines()[-1])


def bench(args, argv):
    device = torch.device(cli.resolve_device(args.device))
    files.check_writable(Path(args.out).parent)
    data = common.prepare_data(args.data_dir)
    device_text = cli.describe_device(device)
    if args.pipeline is not None:  # a child process: one pipeline, its row as JSON on the last line
        print(json.dumps(run_pipeline(args, device, data)))
        return 0
    if args.full is not None:  # a child process: one step's full run, as JSON on the last line
        print(json.dumps(full_run(args.full, device, data)))
        return 0
    print(f"bench: {device_text}; {args.warmup} warm-up + {args.steps} timed steps of batch 128 per pipeline, "
          f"each pipeline in its own process, {args.repeats} interleaved round(s)")
    names = pipelines_for(device)
    rounds = [[] for _ in names]
    # Rounds interleave the pipelines (A B C A B C ...), so a slow spell of a shared machine hits every row alike;
    # each row reports its median round.
    for round_index in range(args.repeats):
        for index, name in enumerate(names):
            row = child_result(args, device, "--pipeline", str(PIPELINES.index(name)), "--steps", str(args.steps),
                               "--warmup", str(args.warmup), "--workers", str(args.workers))
            rounds[index].append(row)
            print(f"  round {round_index + 1}/{args.repeats}: {row['pipeline']}: {row['samples_per_s']:,.0f} "
                  f"samples/s, {row['epoch_s']:.2f} s/epoch")
    rows = [median_row(row_runs) for row_runs in rounds]
    epoch_s = {name: row["epoch_s"] for name, row in zip(names, rows)}
    speedups = {net: round(epoch_s[f"reference {net}"] / epoch_s[f"project {net}"], 2) for net in NETS}
    command = cli.command_line("lab.bench", sys.argv[1:] if argv is None else argv)
    result = dict(device=device_text, command=command, code=checkout_state(),
                  date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), torch=torch.__version__, steps=args.steps,
                  warmup=args.warmup, repeats=args.repeats, pipelines=rows, speedups=speedups,
                  speedup=speedups["model3"], reference_epoch_s=epoch_s["reference model3"],
                  project_epoch_s=epoch_s["project model3"], full_runs=[])
    if device.type == "cpu":
        result["evaluation"] = evaluation_rates(data, device, args.repeats)
        result["profile"] = where_the_time_goes(device)
        for row in result["evaluation"]:
            print(f"  evaluation, {row['net']}: {row['whole_images_per_s']:,} images/s 1000 at once, "
                  f"{row['chunked_images_per_s']:,} {row['chunk']} at a time ({row['ratio']:.2f}x)")
    for step in () if args.skip_full else FULL_RUNS:
        print(f"bench: {step}'s full run with its defaults (training + per-epoch evaluation, data already loaded)")
        run = child_result(args, device, "--full", step)
        result["full_runs"].append(run)
        print(f"  {run['verdict']}\n  {step}: {run['epochs']} epochs in {run['train_seconds']:.1f} s "
              f"(+ {run['setup_seconds']:.1f} s one-time setup)")
    result["peak_memory_mb"] = round(peak_memory_mb(device), 1)
    result["table_markdown"] = report.bench_table(result)
    print("\n" + result["table_markdown"])
    print(f"speedup vs reference ({device_text}): " + ", ".join(f"{NETS[net]} {ratio:.1f}x"
                                                                for net, ratio in speedups.items()))
    files.atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
