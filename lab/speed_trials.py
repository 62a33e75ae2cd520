"""Speed trials of issue 42 on a CPU: ways to make a training step of steps 3 and 4 cheaper, each against today's
step in the same process, taking turns over rounds (each its median), and whether each gives today's weights to
the bit after 20 updates. Those that measured no gain go with this file; results/speed-trials.json and RESULTS.md
keep the table, with the commit that ran it.

    python -m lab.speed_trials          # writes results/speed-trials.json
"""
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import common
import model3
import model4
from harness.cli import describe_device
from harness.files import atomic_write_json
from harness.provenance import checkout_state


class SplitPReLU(nn.PReLU):
    """PReLU as ReLU plus the slope times the negative part: the same sums, in separate elementwise passes."""

    def forward(self, x):
        return F.relu(x) + self.weight * torch.clamp(x, max=0)


class FirstMaxPool(torch.autograd.Function):
    """A 2×2 max-pool from four strided views; the gradient goes to the first maximum of each window, as
    F.max_pool2d sends it."""

    @staticmethod
    def forward(ctx, x):
        a, b, c, d = x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]
        y = torch.maximum(torch.maximum(a, b), torch.maximum(c, d))
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        taken, parts = torch.zeros_like(y, dtype=torch.bool), []
        for view in (x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]):
            first = (view == y) & ~taken
            taken |= first
            parts.append(torch.where(first, grad, torch.zeros_like(grad)))
        n, c, h, w = grad.shape
        return torch.stack(parts, -1).view(n, c, h, w, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, 2 * h, 2 * w)


class ComparedMaxPool(nn.MaxPool2d):
    def forward(self, x):
        return FirstMaxPool.apply(x)


def swapped(net, trial):
    for module in list(net.modules()):
        for name, child in module.named_children():
            if trial == "split-prelu" and isinstance(child, nn.PReLU):
                split = SplitPReLU()
                split.weight = child.weight
                setattr(module, name, split)
            if trial == "compared-max-pool" and isinstance(child, nn.MaxPool2d):
                setattr(module, name, ComparedMaxPool(2))
    return net


TRIALS = {"model4": ("today", "split-prelu", "compared-max-pool", "torch.compile"), "model3": ("today", "torch.compile")}
NETS = {"model3": model3.Net, "model4": model4.Net}


def make(step, trial):
    torch.manual_seed(0)
    net = swapped(NETS[step](), trial)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    update = torch.compile(common.train_step) if trial == "torch.compile" else common.train_step
    return net, optimizer, update


def weights_after(step, trial, updates=20):
    net, optimizer, update = make(step, trial)
    generator = torch.Generator().manual_seed(1)
    for _ in range(updates):
        update(net, optimizer, torch.randn(128, 1, 28, 28, generator=generator),
               torch.randint(0, 10, (128,), generator=generator))
    return [t.detach().clone() for t in (*net.parameters(), *net.buffers())]


def main(rounds=5, steps=30):
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    rows = []
    for step, trials in TRIALS.items():
        today = weights_after(step, "today")
        runs = {}
        for trial in trials:
            started = time.perf_counter()
            runs[trial] = make(step, trial)
            net, optimizer, update = runs[trial]
            update(net, optimizer, x, y)  # compiling, where the trial compiles
            runs[trial] += (time.perf_counter() - started,)
        times = {trial: [] for trial in trials}
        for _ in range(rounds):
            for trial in trials:
                net, optimizer, update, _ = runs[trial]
                for _ in range(3):
                    update(net, optimizer, x, y)
                started = time.perf_counter()
                for _ in range(steps):
                    update(net, optimizer, x, y)
                times[trial].append(1000 * (time.perf_counter() - started) / steps)
        base = statistics.median(times["today"])
        for trial in trials:
            same = all(torch.equal(a, b) for a, b in zip(today, weights_after(step, trial)))
            ms = statistics.median(times[trial])
            rows.append(dict(step=step, trial=trial, ms_per_step=round(ms, 1),
                             rounds_ms=[round(t, 1) for t in times[trial]], speedup=round(base / ms, 2),
                             first_update_s=round(runs[trial][3], 1), same_weights=same))
            print(json.dumps(rows[-1]))
    atomic_write_json("results/speed-trials.json", dict(
        device=describe_device("cpu"), torch=torch.__version__, command="python -m lab.speed_trials",
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), code=checkout_state(), rounds=rounds, steps=steps, rows=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
