"""The MNIST exercise's shared code, in the order a learner meets it: the data, the building blocks of every step's
`Net`, ways of seeing inside a net, the training and test loop, the pictures, the verdict, and a step's run.

Each step file (model1.py ... model4.py) holds only its story, its `Net`, its targets and its hyper-parameter
defaults, and hands them to `run_step` at the bottom of this file. What a step needs but never shows a reader —
errors and exit statuses, the MNIST files, atomic writes, the command line, which code made a run, the fast path
on a GPU, many runs at once — lives in the package harness/ (its __init__.py lists the modules).
"""
import contextlib
import copy
import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from harness import cuda_graph
from harness.cli import (build_parser, command_line, config_from_args, describe_device, run_folder,
                         settings_to_record)
from harness.errors import Diverged, one_line_errors
from harness.files import json_text, png_bytes, prepare_run_folder, replace_run, state_dict_bytes
from harness.layers import CannotFollow, keeps_the_map, pair, shown, window_of
from harness.mnist import ensure_mnist, load_split
from harness.provenance import code_record
from harness.runs import run_seeds

STEPS = ("model1", "model2", "model3", "model4")  # the exercise, in order
STEPS_FOLDER = Path(__file__).resolve().parent  # where model1.py ... model4.py live


# -----------------------------------------------------------------------------------------------------------------
# Data: both splits in memory, their statistics, a validation split, batches made on the device


def prepare_data(data_dir, log=print):
    """Verify (or fetch) MNIST, load both splits, and measure the training set's statistics."""
    source = ensure_mnist(data_dir, log)
    train, test = load_split(data_dir, True), load_split(data_dir, False)
    stats = data_statistics(*train)
    return dict(train=train, test=test, mean=stats["mean"], std=stats["std"], stats=stats, source=source)


def data_statistics(images, labels):
    """What step 1 looks at before designing anything; mean and std normalise every step's input. Computed from
    the histogram of the 256 byte values, exactly and without a float copy of the 47M pixels."""
    counts = torch.bincount(images.flatten(), minlength=256).tolist()
    n = sum(counts)
    total = sum(value * count for value, count in enumerate(counts))
    squares = sum(value * value * count for value, count in enumerate(counts))
    mean = total / n
    variance = (squares - n * mean * mean) / (n - 1)  # unbiased, as torch.std
    present = [value for value, count in enumerate(counts) if count]
    return {"count": int(images.shape[0]), "shape": list(images.shape[1:]),
            "mean": round(mean / 255, 4), "std": round(math.sqrt(variance) / 255, 4),
            "min": round(present[0] / 255, 4), "max": round(present[-1] / 255, 4),
            "class_counts": torch.bincount(labels, minlength=10).tolist()}


def split_training(train, config):
    """The images a run trains on and the ones it holds out for validation: the last `config.val` images of the
    training split (after --subset), in MNIST's order, never augmented."""
    images, labels = train
    if config.subset:
        images, labels = images[:config.subset], labels[:config.subset]
    cut = len(labels) - config.val
    return (images[:cut], labels[:cut]), (images[cut:], labels[cut:])


class DeviceLoader:
    """Keeps a whole split on the training device as uint8 and yields normalised (optionally augmented) batches.

    MNIST is 47 MB as bytes, so per-sample PIL transforms and worker processes only add cost: a whole batch is
    converted, augmented and normalised at once, on the device (`make bench` measures the difference)."""

    def __init__(self, images, labels, batch_size, device, mean, std, shuffle=False, rotate_degrees=0.0,
                 shift_pixels=0.0, seed=0, limit=None, scale=0.0, augment_p=1.0, brightness=0.0, contrast=0.0):
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        self.images = images.to(device).unsqueeze(1)  # N×1×28×28 uint8
        self.labels = labels.to(device)
        self.batch_size, self.device = batch_size, torch.device(device)
        self.mean, self.std = mean, std
        self.shuffle, self.rotate_degrees, self.shift_pixels, self.scale = shuffle, rotate_degrees, shift_pixels, scale
        self.augment_p, self.brightness, self.contrast = augment_p, brightness, contrast  # a published net's recipe
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self):
        return math.ceil(len(self.labels) / self.batch_size)

    def augment(self, x):
        """Rotate each image by its own angle in ±rotate_degrees, shift it by up to ±shift_pixels in x and y and
        (with a scale) zoom it by a factor in 1 ± scale: one sampling grid for the whole batch, one bilinear
        resample. With augment_p < 1 (woolly-of-cv's recipe) each image is moved with probability augment_p, and
        its brightness and contrast changed with probability augment_p."""
        n, size = len(x), x.shape[-1]
        uniform = lambda: (torch.rand(n, 1, 1, device=self.device, generator=self.generator) * 2 - 1)  # noqa: E731
        if self.rotate_degrees or self.shift_pixels or self.scale:
            angles = uniform() * math.radians(self.rotate_degrees)
            shift_x, shift_y = (uniform() * (2 * self.shift_pixels / size) for _ in range(2))  # the grid spans 2
            # drawn last, and only with a scale, so that the angles and shifts of a run without one stay as they were
            zoom = 1 + uniform() * self.scale if self.scale else 1.0
            cos, sin = angles.cos() / zoom, angles.sin() / zoom  # a digit drawn larger samples the input closer
            # Where each output pixel samples the input: the affine map applied to the pixel centres in [-1, 1]
            # (F.affine_grid's convention, align_corners=False). Written out because affine_grid's batched 3×2
            # products took 4 ms a batch on 2 CPU cores, longer than everything else in augmentation together.
            centres = (torch.arange(size, device=self.device, dtype=x.dtype) * 2 + 1) / size - 1
            across, down = centres.view(1, 1, size), centres.view(1, size, 1)
            grid = torch.stack((cos * across - sin * down + shift_x, sin * across + cos * down + shift_y), dim=-1)
            moved = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            x = moved if self.augment_p == 1 else torch.where(self.chosen(n), moved, x)
        if self.brightness or self.contrast:  # on [0, 1] pixels, clipped there as on the bytes of an image
            factor, offset = 1 + uniform().unsqueeze(1) * self.contrast, uniform().unsqueeze(1) * self.brightness
            x = torch.where(self.chosen(n), (x * factor + offset).clamp_(0, 1), x)
        return x

    def chosen(self, n):
        """Which of n images a transform applied with probability augment_p reaches (N×1×1×1)."""
        return torch.rand(n, 1, 1, 1, device=self.device, generator=self.generator) < self.augment_p

    def __iter__(self):
        n = len(self.labels)
        order = (torch.randperm(n, device=self.device, generator=self.generator) if self.shuffle
                 else torch.arange(n, device=self.device))
        # A GPU converts and augments the whole epoch in a few kernels; batch by batch it would pay a launch per
        # operation at every step. On the CPU one batch at a time stays in cache.
        chunk = n if self.device.type == "cuda" else self.batch_size
        for chunk_start in range(0, n, chunk):
            index = order[chunk_start:chunk_start + chunk]
            x = self.images[index].float().div_(255)
            if self.rotate_degrees or self.shift_pixels or self.scale or self.brightness or self.contrast:
                x = self.augment(x)  # on [0, 1] pixels, so the borders it uncovers are true background (0)
            x, y = x.sub_(self.mean).div_(self.std), self.labels[index]
            for start in range(0, len(index), self.batch_size):
                yield x[start:start + self.batch_size], y[start:start + self.batch_size]


# -----------------------------------------------------------------------------------------------------------------
# Building blocks: the units the steps' nets are stacked from


def conv_bn_relu(in_channels, out_channels, kernel_size=3, padding=0, stride=1, dilation=1, norm=nn.BatchNorm2d,
                 activation=nn.ReLU):
    """The unit that steps 2 and 3 stack: convolution, batch norm, ReLU. Step 4 passes a lighter `norm` and a
    learned `activation` (LayerBatchNorm, nn.PReLU)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                   dilation=dilation, bias=False),
                         norm(out_channels), activation())


def separable_bn_relu(in_channels, out_channels, stride=1, dilation=1, norm=nn.BatchNorm2d, activation=nn.ReLU):
    """Step 4's unit: a depthwise-separable 3×3 — a 3×3 per input channel (no mixing), then a 1×1 that mixes them
    — in·9 + in·out weights where a full 3×3 needs in·out·9; batch norm and activation after, as conv_bn_relu."""
    return nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, stride=stride, dilation=dilation, groups=in_channels,
                                   bias=False),
                         nn.Conv2d(in_channels, out_channels, 1, bias=False), norm(out_channels), activation())


def gap_head(in_channels, classes=10):
    """The output of steps 2 to 4: a 1×1 convolution to one map per class, then global average pooling —
    10·(in_channels + 1) parameters where a dense layer over the whole map would need thousands."""
    return nn.Sequential(nn.Conv2d(in_channels, classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


class LayerBatchNorm(nn.BatchNorm2d):
    """Batch norm that learns one scale and one shift for the whole layer (2 parameters) where PyTorch's learns one
    of each per channel: at a few thousand parameters, BatchNorm's 2 per channel are a tenth of the net."""

    def __init__(self, channels):
        super().__init__(channels, affine=False)
        self.scale, self.shift = nn.Parameter(torch.ones(())), nn.Parameter(torch.zeros(()))

    def forward(self, x):
        # The layer's scale and shift, one copy a channel, go into batch norm's own kernel, which applies them in
        # the same pass over the map (a tiny net's update is mostly such passes over its largest maps).
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(x, self.running_mean, self.running_var, self.scale.repeat(self.num_features),
                            self.shift.repeat(self.num_features), self.training, self.momentum, self.eps)


def without_batchnorm(model):
    """Every batch norm of `model` replaced by identity (--no-batchnorm): step 2's lesson, for any step."""
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, nn.Identity())
        else:
            without_batchnorm(child)
    return model


def build_net(net_class, config):
    """A step's `Net` with the run's widths (--widths), without batch norm under --no-batchnorm; under --init xavier
    (a published net's own recipe) with Keras' first weights: Xavier-uniform, zero biases."""
    net = net_class(**config.net_kwargs)
    if config.init == "xavier":
        for layer in net.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
    return net if config.batchnorm else without_batchnorm(net)


# -----------------------------------------------------------------------------------------------------------------
# Seeing inside: parameters, receptive field, multiply-adds, feature maps, torchsummary


def count_params(model):
    """Every parameter, BatchNorm's affine weights included (buffers such as running means are not parameters)."""
    return sum(p.numel() for p in model.parameters())


class Side(NamedTuple):
    """One side (the height or the width) of the map a layer outputs, measured in input pixels."""
    size: int   # positions along the side
    jump: int   # input pixels from one position to the next
    rf: int     # input pixels one position sees
    whole: int  # input pixels all the positions see together: rf + (size - 1)·jump


def slide(side, kernel, stride, padding, dilation, ceil_mode=False):
    """A convolution's or pooling's window sliding along one side — the textbook recurrences with PyTorch's
    rounding. `padding` is (before, after)."""
    before, after = padding
    span = dilation * (kernel - 1) + 1  # input positions from a window's first tap to its last
    size = (side.size + before + after - span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (size - 1) * stride >= side.size + before:  # PyTorch: the last window must start inside the
        size -= 1                                                 # input or its left padding, not the right one
    if size < 1:
        raise CannotFollow(f"its window spans {span} positions, more than the {side.size + before + after} it gets")
    jump, rf = side.jump * stride, side.rf + (span - 1) * side.jump
    return Side(size, jump, rf, rf + (size - 1) * jump)


def everything(side):
    """One position that sees the whole side: global pooling, or a dense layer."""
    return Side(1, side.jump * side.size, side.whole, side.whole)


def receptive_field(model, input_size=28, in_channels=1):
    """Walk the model's layers in registration order and compute, for each layer that moves the window, its output
    size, jump (distance in input pixels between neighbouring outputs) and receptive field, for the height and the
    width apart (a table shows "3×5" where they differ; row["height"] and row["width"] hold each side's Side).

    Uses the textbook recurrences on each side: n_out = floor((n_in + p_before + p_after - d(k-1) - 1) / s) + 1
    (rounded up under ceil_mode), r_out = r_in + d(k-1)·j_in, j_out = j_in·s; a global pool or a dense layer sees
    the whole map. It knows Conv2d (any padding, stride, dilation, groups), MaxPool2d and AvgPool2d (ceil_mode too),
    global pooling (AdaptiveAvgPool2d(1), AdaptiveMaxPool2d(1)), Linear, and the layers that keep the map;
    any other layer is refused by name, since the numbers after it would be wrong. The parameters of a layer that
    keeps the map (BatchNorm's) are counted with the layer before it; `macs` is a layer's multiply-adds per image
    (convolutions and dense layers), which decides its time more than its parameters do. Layers must be registered
    in the order the forward pass uses them (nn.Sequential blocks guarantee it); a layer used twice is registered
    twice, as two modules that hold the same weights, which count once, where first used."""
    rows, channels, counted = [], in_channels, set()
    height, width = (Side(n, 1, 1, n) for n in pair(input_size))

    def new_params(module):  # a weight used again (two modules holding one tensor) counts where first used
        fresh = [p for p in module.parameters() if id(p) not in counted]
        counted.update(id(p) for p in fresh)
        return sum(p.numel() for p in fresh)

    for name, module in model.named_modules():
        try:
            if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
                kernel, stride, padding, dilation = window_of(module)
                ceil_mode = getattr(module, "ceil_mode", False)
                height, width = (slide(side, k, s, p, d, ceil_mode)
                                 for side, k, s, p, d in zip((height, width), kernel, stride, padding, dilation))
                conv = isinstance(module, nn.Conv2d)
                kind = "conv" if conv else "maxpool" if isinstance(module, nn.MaxPool2d) else "avgpool"
                channels = module.out_channels if conv else channels
                # each output pixel of a convolution: out × in/groups × k × k multiply-adds; a pool has none
                macs = height.size * width.size * module.weight.numel() if conv else 0
                window = (shown(*kernel), shown(*stride), module.padding if isinstance(module.padding, str) else
                          shown(*(before for before, _ in padding)), shown(*dilation))
                rows.append(_row(name, kind, window, height, width, channels, new_params(module), macs))
            elif isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
                if pair(module.output_size) != (1, 1):
                    raise CannotFollow(f"it pools to {module.output_size}: only global pooling, to 1×1, is followed")
                kind = "gap" if isinstance(module, nn.AdaptiveAvgPool2d) else "global maxpool"
                window = (shown(height.size, width.size), shown(height.size, width.size), 0, 1)
                height, width = everything(height), everything(width)
                rows.append(_row(name, kind, window, height, width, channels, 0, 0))
            elif isinstance(module, nn.Linear):  # a dense layer sees the whole map before it
                if module.in_features != channels * height.size * width.size:
                    raise CannotFollow(f"it takes {module.in_features:,} inputs, but the map before it holds "
                                       f"{channels}×{height.size}×{width.size} (is an nn.Flatten missing?)")
                height, width, channels = everything(height), everything(width), module.out_features
                row = _row(name, "linear", ("-",) * 4, height, width, channels, new_params(module),
                           module.weight.numel())
                rows.append(row | dict(jump="-"))  # no map after it to step along
            elif keeps_the_map(module):
                if rows:
                    rows[-1]["params"] += new_params(module)
            elif next(module.children(), None) is None:  # a container's own layers come next; a leaf is unknown
                raise CannotFollow("it knows Conv2d, MaxPool2d, AvgPool2d, global pooling (AdaptiveAvgPool2d(1), "
                                   "AdaptiveMaxPool2d(1)), Linear and the layers that keep the map (activations, "
                                   "normalisation, dropout, Flatten, Identity)")
        except CannotFollow as reason:
            raise CannotFollow(f"receptive_field cannot follow {name or 'the model'} ({type(module).__name__}): "
                               f"{reason}") from None
    return rows


def _row(layer, kind, window, height, width, channels, params, macs):
    """One row of the table; `window` is its kernel, stride, padding and dilation cells."""
    kernel, stride, padding, dilation = window
    return dict(layer=layer, kind=kind, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                size=shown(height.size, width.size), jump=shown(height.jump, width.jump),
                rf=shown(height.rf, width.rf), channels=channels, params=params, macs=macs, height=height, width=width)


WINDOW_KINDS = ("conv", "maxpool", "avgpool")


def feature_rf(rows):
    """The receptive field of the last convolution or pooling window, before any global pooling or dense layer."""
    windows = [row["rf"] for row in rows if row["kind"] in WINDOW_KINDS]
    return windows[-1] if windows else 1


def transition_rf(rows):
    """Where the transition sits: the receptive field of the features the map is first shrunk on — the input of
    the first max-pool, or the output of the first strided convolution (which computes and subsamples at once)."""
    for previous, row in zip([{"rf": 1}] + rows, rows):
        if row["kind"] == "maxpool":
            return previous["rf"]
        if row["kind"] == "conv" and row["stride"] != 1:
            return row["rf"]
    return None


def rf_markdown(rows, title):
    header = ["layer", "kind", "kernel", "stride", "padding", "dilation", "output", "jump", "RF", "channels", "params",
              "mult-adds"]
    keys = ["layer", "kind", "kernel", "stride", "padding", "dilation", "size", "jump", "rf", "channels", "params",
            "macs"]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"{row[k]:,}" if k in ("params", "macs") else str(row[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Receptive field {feature_rf(rows)} at the last convolution or pooling window, "
              f"{rows[-1]['rf'] if rows else 1} at the output (of a 28×28 input); "
              f"transition (first shrinking of the map) at RF {transition_rf(rows)}; "
              f"parameters listed: {sum(r['params'] for r in rows):,} (BatchNorm counted with its convolution); "
              f"{sum(r['macs'] for r in rows):,} multiply-adds per image."]
    return "\n".join(lines) + "\n"


@torch.inference_mode()
def feature_maps(model, image):
    """What each block of `model.features` makes of one normalised 1×28×28 image: [(block name, receptive field of
    its output, its maps C×H×W)]. A bare convolution counts with the activation after it (step 1's layout); the
    page of demo.py and every step's features.png both come from here."""
    model.eval()
    rf_by_layer = {row["layer"]: row["rf"] for row in receptive_field(model)}
    children = list(model.features.named_children())
    x, rf, blocks = image.reshape(1, 1, *image.shape[-2:]), 1, []
    for index, (name, child) in enumerate(children):
        for sub, _ in child.named_modules():
            rf = rf_by_layer.get(f"features.{name}" + (f".{sub}" if sub else ""), rf)
        x = child(x)
        followed_by_activation = index + 1 < len(children) and isinstance(children[index + 1][1], nn.ReLU)
        if isinstance(child, nn.Conv2d) and followed_by_activation:
            continue
        blocks.append((f"features.{name}", rf, x[0].float().cpu()))
    return blocks


def first_kernels(model):
    """The first convolution's kernels, out_channels × k × k (its input is the one grey channel)."""
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return conv.weight.detach().float().cpu()[:, 0]


def summary_text(model, input_size=(1, 28, 28)):
    """torchsummary's table for a CPU copy of the model (its default device is CUDA, which may not exist), with the
    true count below it where torchsummary's misses some (it counts only a layer's `weight` and `bias`)."""
    from torchsummary import summary
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        summary(copy.deepcopy(model).cpu(), input_size, device="cpu")
    counted = count_params(model)
    if f"Total params: {counted:,}" in buffer.getvalue():
        return buffer.getvalue()
    return buffer.getvalue() + f"All params: {counted:,} (common.count_params: LayerBatchNorm's scale and shift too)\n"


# -----------------------------------------------------------------------------------------------------------------
# Training and testing: the optimizer, an epoch of the textbook loop, an evaluation, `fit`


def make_optimizer_and_scheduler(model, config, batches_per_epoch):
    """SGD with momentum for every step; the schedule is a step's choice (model3 relies on OneCycle). Adam, AdamW and
    the piecewise and plateau schedules are the published nets' own recipes (public.py), not the exercise's.

    On CUDA the learning rate lives in a device tensor that the scheduler overwrites in place, so an update recorded
    once as a CUDA graph reads the current rate at every replay; the fused update is one kernel."""
    cuda = next(model.parameters()).device.type == "cuda"
    lr = torch.tensor(config.lr, device="cuda") if cuda else config.lr
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum,
                                    nesterov=config.nesterov and config.momentum > 0, weight_decay=config.weight_decay,
                                    fused=True if cuda else None)
    else:  # eps: Keras' default, the framework of the two authors who used Adam
        optimizer = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.optimizer](
            model.parameters(), lr=lr, eps=1e-7, weight_decay=config.weight_decay, fused=True if cuda else None,
            capturable=cuda)
    if config.scheduler == "onecycle":
        # Momentum stays at --momentum: OneCycle's default of cycling it too would override the flag.
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, epochs=config.epochs,
                                                        steps_per_epoch=batches_per_epoch, cycle_momentum=False)
        return optimizer, scheduler, "batch"
    if config.scheduler == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
        return optimizer, scheduler, "epoch"
    if config.scheduler == "piecewise":  # each epoch at its rate on a line through the knots (a fraction of --lr)
        epochs, fractions = zip(*config.lr_knots)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: float(np.interp(epoch, epochs, fractions)))
        return optimizer, scheduler, "epoch"
    if config.scheduler == "plateau":
        # JoshWarn's ReduceLROnPlateau(factor=0.25, patience=50, min_delta=1e-16, min_lr=2.5e-5) in Keras: it cuts
        # after 50 epochs without a lower validation loss, where PyTorch's patience counts the epochs it waits before
        # the one it cuts at.
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.25, patience=49, threshold=1e-16,
                                                               threshold_mode="abs", min_lr=2.5e-5)
        return optimizer, scheduler, "validation"
    return optimizer, None, None


def train_step(model, optimizer, x, y):
    """One training update, the textbook lines. The only copy: on a GPU, cuda_graph records this very function."""
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()
    return loss.detach(), logits.detach()


def train_epoch(model, loader, optimizer, scheduler=None, graphed_step=None, bar=None, check_every=20):
    """One pass over the training data, a train_step a batch. `scheduler` is moved after every batch (OneCycle; None
    for a schedule by epoch); `bar` is a tqdm bar over the loader, or None. The loss and the correct predictions are
    summed on the device and read only every `check_every` batches (for the bar and the non-finite-loss check), so
    the device never waits."""
    model.train()
    loss_sum = torch.zeros((), device=loader.device)
    correct = torch.zeros((), dtype=torch.long, device=loader.device)
    seen = 0
    for index, (x, y) in enumerate(bar if bar is not None else loader, 1):
        # On a GPU, graphed_step replays this same train_step recorded as a CUDA graph (harness/cuda_graph.py).
        loss, logits = (graphed_step or train_step)(model, optimizer, x, y)
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if index % check_every == 0 or index == len(loader):
            mean_loss = loss_sum.item() / seen
            if not math.isfinite(mean_loss):
                raise Diverged(f"the training loss became {mean_loss} at batch {index}; the learning rate "
                               f"{float(optimizer.param_groups[0]['lr']):g} is probably too high (try a smaller --lr)")
            if bar is not None:
                bar.set_postfix(loss=f"{mean_loss:.4f}", acc=f"{100 * correct.item() / seen:.2f}%", refresh=False)
    return loss_sum.item() / seen, 100.0 * correct.item() / seen


TEST_BATCH_SIZE = 1000  # images evaluated a batch (validation and test)
CPU_EVAL_CHUNK = 256  # images a CPU evaluates at once: see evaluate


@torch.inference_mode()
def evaluate(model, loader, chunk=CPU_EVAL_CHUNK):
    """Mean loss, accuracy (%) and every prediction over a split."""
    model.eval()
    loss_sum = torch.zeros((), device=loader.device)
    predictions = []
    for x, y in loader:
        # A CPU runs a batch of 1000 images' maps out of its cache: `chunk` at a time is faster (make bench
        # measures it), and each image's logits come out the same to the bit.
        logits = (torch.cat([model(part) for part in x.split(chunk)]) if chunk and x.device.type == "cpu"
                  else model(x))
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        predictions.append(logits.argmax(1))
    predictions = torch.cat(predictions)
    accuracy = 100.0 * (predictions == loader.labels).sum().item() / len(loader.labels)
    return loss_sum.item() / len(loader.labels), accuracy, predictions.cpu()


def epoch_line(row, epochs):
    """One epoch as a row of a table: every column keeps its width and precision from epoch to epoch."""
    splits = [name for name in ("train", "val", "test") if f"{name}_acc" in row]
    columns = [f"{name} loss {row[name + '_loss']:.4f} acc {row[name + '_acc']:6.2f}%" for name in splits]
    return (f"epoch {row['epoch']:{len(str(epochs))}d}/{epochs}  " + "  ".join(columns)
            + f"  lr {row['lr']:.2e}  {row['seconds']:6.1f}s")


@dataclass
class Trained:
    """What `fit` returns: the final model, one row per epoch, the final test predictions with their labels, the
    seconds of one-time setup (on a GPU: warm-up, graph recording) the epochs' times leave out, and how each batch's
    update ran (train_step as it is, or replayed as a CUDA graph)."""
    model: nn.Module
    history: list
    predictions: torch.Tensor
    labels: torch.Tensor
    setup_seconds: float
    update: str


def fit(make_net, config, data, log=print):
    """Train a fresh model, `make_net()`, with `config` on `data` (from `prepare_data`), testing it after every
    epoch."""
    torch.manual_seed(config.seed)  # the weights; the batches' order and augmentation draw from the loader's own seed
    device = torch.device(config.device)
    model = make_net().to(device)
    train, val = split_training(data["train"], config)
    train_loader = DeviceLoader(*train, config.batch_size, device, data["mean"], data["std"], shuffle=True,
                                rotate_degrees=config.rotate, shift_pixels=config.shift, seed=config.seed,
                                scale=config.scale, augment_p=config.augment_p, brightness=config.brightness,
                                contrast=config.contrast)
    val_loader = DeviceLoader(*val, TEST_BATCH_SIZE, device, data["mean"], data["std"]) if config.val else None
    test_loader = DeviceLoader(*data["test"], TEST_BATCH_SIZE, device, data["mean"], data["std"],
                               limit=config.subset)
    optimizer, scheduler, schedule_every = make_optimizer_and_scheduler(model, config, len(train_loader))
    # On a GPU, train_step is recorded once as a CUDA graph and replayed (harness/cuda_graph.py); its one-time costs
    # are paid here, before the clock starts.
    graphed_step = (cuda_graph.graphed(train_step, model, optimizer, train_loader, lambda: evaluate(model, test_loader),
                                       spare_optimizer=make_optimizer_and_scheduler(model, config, 1)[0], log=log)
                    if device.type == "cuda" else None)
    setup_seconds = lambda: graphed_step.setup_seconds if graphed_step else 0.0  # noqa: E731
    history = []
    for epoch in range(1, config.epochs + 1):
        started, setup_before = time.perf_counter(), setup_seconds()
        lr = float(optimizer.param_groups[0]["lr"])
        if epoch == config.epochs - config.clean_epochs + 1:  # the last --clean-epochs see the digits unaugmented
            train_loader.rotate_degrees = train_loader.shift_pixels = train_loader.scale = 0.0
            train_loader.brightness = train_loader.contrast = 0.0
        try:
            train_loss, train_acc = train_epoch(model, train_loader, optimizer,
                                                scheduler if schedule_every == "batch" else None, graphed_step,
                                                tqdm(train_loader, f"epoch {epoch}/{config.epochs}", leave=False,
                                                     disable=None, dynamic_ncols=True))  # a bar on a terminal only
        except Diverged as stop:  # the run ends here; its record keeps the epochs before
            raise Diverged(f"in epoch {epoch}, {stop}", epoch, history) from None
        if schedule_every == "epoch":
            scheduler.step()
        row = dict(epoch=epoch, train_loss=round(train_loss, 5), train_acc=round(train_acc, 2))
        if val_loader is not None:
            val_loss, val_acc, _ = evaluate(model, val_loader)
            row.update(val_loss=round(val_loss, 5), val_acc=round(val_acc, 2))
            if schedule_every == "validation":
                scheduler.step(val_loss)
        test_loss, test_acc, predictions = evaluate(model, test_loader)
        seconds = time.perf_counter() - started - (setup_seconds() - setup_before)  # one-time costs apart
        row.update(test_loss=round(test_loss, 5), test_acc=round(test_acc, 2), lr=lr, seconds=round(seconds, 3))
        history.append(row)
        log(epoch_line(row, config.epochs))
    update = graphed_step.described() if graphed_step else "train_step"
    return Trained(model, history, predictions, test_loader.labels.cpu(), setup_seconds(), update)


# -----------------------------------------------------------------------------------------------------------------
# Pictures: curves, digits, feature maps, confusion


def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only; no display is needed or assumed
    import matplotlib.pyplot as plt
    return plt


def plot_curves(history, title, target=None):
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for split, style in (("train", "-o"), ("test", "-s")):
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], style, ms=3, label=split)
        ax_acc.plot(epochs, [h[f"{split}_acc"] for h in history], style, ms=3, label=split)
    if target is not None:
        ax_acc.axhline(target, color="tab:red", ls="--", lw=1, label=f"target {target:.2f} %")
    if len(history) > 2:  # zoom on where the steps differ; the first epoch's climb would flatten everything
        settled = [h[f"{split}_acc"] for h in history[1:] for split in ("train", "test")]
        ax_acc.set_ylim(min(settled + [target or 100]) - 0.3, 100.05)
    ax_loss.set(title=f"{title}: loss", xlabel="epoch", ylabel="cross-entropy", yscale="log")
    ax_acc.set(title=f"{title}: accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def plot_digits(images, captions, title, columns=10):
    plt = pyplot()
    rows = max(1, math.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.1, rows * 1.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(image, cmap="gray_r")
        ax.set_title(caption, fontsize=8)
    fig.suptitle(title)
    return fig


def plot_features(kernels, blocks, image, title, columns=16):
    """The first layer's kernels, then each block's feature maps (up to `columns` channels a row), each row
    titled with its receptive field."""
    plt = pyplot()
    rows = 1 + len(blocks)
    fig, axes = plt.subplots(rows, columns + 1, figsize=((columns + 1) * 0.75, rows * 0.95), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0][0].imshow(image, cmap="gray_r")
    axes[0][0].set_title("input", fontsize=7)
    for ax, kernel in zip(axes[0][1:], kernels):
        ax.imshow(kernel, cmap="RdBu_r", vmin=-kernels.abs().max(), vmax=kernels.abs().max())
    axes[0][1].set_title(f"first layer's {len(kernels)} kernels ({kernels.shape[-1]}×{kernels.shape[-1]})",
                         fontsize=7, loc="left")
    for row, (name, rf, maps) in enumerate(blocks, 1):
        axes[row][0].text(0, 0.5, f"{name}\nRF {rf}, {maps.shape[-1]}×{maps.shape[-1]}\n{len(maps)} channels",
                          fontsize=6, va="center")
        for ax, fmap in zip(axes[row][1:], maps):
            ax.imshow(fmap, cmap="viridis")
    fig.suptitle(title)
    return fig


def plot_confusion(confusion, title):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5.5))
    matrix = np.array(confusion, dtype=float)
    off_diagonal = matrix.copy()
    np.fill_diagonal(off_diagonal, 0)  # colour the errors; the diagonal would drown them
    ax.imshow(off_diagonal, cmap="Reds")
    for i in range(10):
        for j in range(10):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                    color="black" if i != j else "tab:blue")
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true", title=title)
    return fig


# -----------------------------------------------------------------------------------------------------------------
# The verdict: a step's targets, judged on its last epochs


@dataclass(frozen=True)
class Targets:
    """What a step must reach: parameters in [min_params, max_params), test accuracy >= min_test_acc on each of
    the last `last_epochs` epochs, and no more than `max_epochs` epochs; and of a run over seeds (`--seeds N`), at
    least the share `min_seed_share` of the seeds must reach all that (1.0: every seed; 0.9: 9 in 10)."""
    min_test_acc: float
    max_params: int
    min_params: int = 0
    last_epochs: int = 3
    max_epochs: int = 15
    min_seed_share: float = 1.0

    def __post_init__(self):
        if not 0 < self.min_seed_share <= 1:
            raise ValueError(f"Targets.min_seed_share is a share of the seeds, in (0, 1]: {self.min_seed_share!r}")

    def seeds_needed(self, count):
        """How many of `count` seeds must meet the target: the share, rounded up (9 of 10 at 0.9, 3 of 3)."""
        return seeds_needed(self.min_seed_share, count)


def seeds_needed(share, count):
    """The seeds of `count` that a share of them means, rounded up: the one rule of steps and the club alike."""
    return math.ceil(round(share * count, 9))  # rounded first: 0.3 × 10 is a hair above 3


def judge(name, targets, params, history, smoke):
    """Return (passed, verdict line). Judged on the final epochs, never on the best one. A smoke run (subset or
    dry run) cannot judge accuracy: `passed` is None then unless the parameter limit already fails."""
    params_ok = targets.min_params <= params < targets.max_params
    params_part = (f"params {params:,} {'<' if params_ok else '≥'} {targets.max_params:,}"
                   if not targets.min_params else
                   f"params {params:,} {'within' if params_ok else 'outside'} "
                   f"{targets.min_params:,}–{targets.max_params:,}")
    last = [h["test_acc"] for h in history[-targets.last_epochs:]]
    acc_ok = bool(last) and len(history) >= targets.last_epochs and min(last) >= targets.min_test_acc
    acc_part = (f"test acc {'/'.join(f'{a:.2f}' for a in last)} {'≥' if acc_ok else 'not all ≥'} "
                f"{targets.min_test_acc:.2f} on the last {targets.last_epochs} epochs")
    epochs_ok = len(history) <= targets.max_epochs
    epochs_part = f"{len(history)} epochs {'≤' if epochs_ok else '>'} {targets.max_epochs}"
    if smoke:  # the parameter limit still holds; the accuracy of a few hundred steps means nothing
        passed = False if not params_ok else None
        word = "FAIL" if passed is False else "N/A (smoke run on a subset: accuracy not judged)"
        return passed, f"{name}: {word} {params_part}; final test acc {history[-1]['test_acc']:.2f}"
    passed = params_ok and acc_ok and epochs_ok
    return passed, f"{name}: {'PASS' if passed else 'FAIL'} {params_part}; {acc_part}; {epochs_part}"


# -----------------------------------------------------------------------------------------------------------------
# A step's run: the command line of every step, from its flags to its verdict

# What a run's numbers depend on besides its net: MNIST's loading, the statistics that normalise it, and `fit` with
# everything it calls. Each run records a fingerprint of that code and of its net (harness/provenance.py); a sweep
# reuses a completed run only when today's code has the same.
TRAINING_PATH = (load_split, data_statistics, build_net, fit)


def run_step(name, net_class, defaults, targets, doc, argv=None, analyse_data=False):
    """A step's whole command line: read its flags, build the net and show it, train it (`fit`), judge it and save
    it; with --seeds, the same command once for each seed (harness.runs.run_seeds). Exits 0 when the step met its
    targets, 1 when it did not; an error is one line and an exit status (harness.errors), never a traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(name, defaults, doc).parse_args(argv)
    out = run_folder(name, args)
    with one_line_errors(f"{name}.py", interrupted=(
            f"the seeds finished so far are in {out / 'seeds'}; seeds.json was not updated" if args.seeds else
            f"this run wrote nothing, and whatever {out} held before is kept")):
        config = config_from_args(args)
        targets = targets(config) if callable(targets) else targets  # public.py: each net judged at its own line
        if not args.dry_run:
            prepare_run_folder(out)  # refused in one line now, not after 15 epochs
        net = build_net(net_class, config)
        code = code_record(net, TRAINING_PATH)
        if args.seeds and not args.dry_run:
            ensure_mnist(args.data_dir, print)  # once, before the seeds' processes look for it
            rule_met = run_seeds(name, STEPS_FOLDER / f"{name}.py", config, targets, out, args.seeds, argv, code,
                                 args.jobs, cluster=args.cluster)
            sys.exit(0 if rule_met or config.subset else 1)
        data = prepare_data(args.data_dir)
        print(f"{name}: data from {data['source']}; training mean {data['mean']}, std {data['std']}")
        params, rf_rows = count_params(net), receptive_field(net)
        print(f"{name}: {params:,} parameters, receptive field {feature_rf(rf_rows)} before the head, on "
              f"{describe_device(config.device)}")
        print(rf_markdown(rf_rows, f"{name}: receptive field").rstrip())
        command = command_line(f"{name}.py", argv)
        try:
            trained = fit(lambda: build_net(net_class, config), config, data)
        except Diverged as stop:  # a failure of its target: recorded where it replaces no run (a sweep's seed)
            if args.dry_run:
                raise
            if (out / "metrics.json").exists():
                raise Diverged(f"{stop}; {out} keeps the run it held") from None
            replace_run(out, {"metrics.json": json_text(dict(
                run_record(name, config, targets, data, code, command, params, stop.history),
                diverged=str(stop), final_test_acc=None, last_test_accs=[], passed=False,
                verdict=f"{name}: FAIL: {stop}"))})
            raise Diverged(f"{stop} (recorded in {out / 'metrics.json'})") from None
        passed, verdict = judge(name, targets, params, trained.history, smoke=config.subset is not None)
        if not args.dry_run:
            metrics = run_metrics(name, config, targets, data, trained, rf_rows, code, passed, verdict, command,
                                  analyse_data)
            written = write_artifacts(out, name, trained, metrics, rf_rows, data, analyse_data)
            print(f"{name}: wrote {', '.join(written)} to {out}")
        print(verdict)
    sys.exit(1 if passed is False else 0)


def run_record(name, config, targets, data, code, command, params, history):
    """What every run's metrics.json records, a diverged one's too: what ran (the command, its settings, the code,
    the device), its targets and every epoch it finished."""
    return dict(
        model=name, params=params, epochs=len(history), seed=config.seed, device=describe_device(config.device),
        command=command, date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), torch=torch.__version__, code=code,
        subset=config.subset, data_source=data["source"], normalisation=dict(mean=data["mean"], std=data["std"]),
        config=settings_to_record(config), history=history, val_images=config.val,
        train_seconds=round(sum(h["seconds"] for h in history), 2),
        targets={key: getattr(targets, key) for key in ("min_test_acc", "last_epochs", "min_params", "max_params",
                                                         "max_epochs")})


def run_metrics(name, config, targets, data, trained, rf_rows, code, passed, verdict, command, analyse_data):
    """What metrics.json records of a completed run: run_record, then how each update ran, the receptive field, the
    final epochs, the verdict and the test set's confusion."""
    history, predictions, labels = trained.history, trained.predictions, trained.labels
    confusion = torch.bincount(labels * 10 + predictions, minlength=100).reshape(10, 10).tolist()  # true × predicted
    per_class = [round(100.0 * confusion[c][c] / max(1, sum(confusion[c])), 2) for c in range(10)]
    metrics = dict(
        run_record(name, config, targets, data, code, command, count_params(trained.model), history),
        update=trained.update, receptive_field=feature_rf(rf_rows), output_rf=rf_rows[-1]["rf"],
        transition_rf=transition_rf(rf_rows), final_test_acc=history[-1]["test_acc"],
        **({"final_val_acc": history[-1]["val_acc"],
            "last_val_accs": [h["val_acc"] for h in history[-targets.last_epochs:]]} if config.val else {}),
        last_test_accs=[h["test_acc"] for h in history[-targets.last_epochs:]],
        best_train_acc=max(h["train_acc"] for h in history), setup_seconds=round(trained.setup_seconds, 3),
        seconds_per_epoch=round(sum(h["seconds"] for h in history) / len(history), 2),
        per_class_test_acc=per_class, confusion=confusion, passed=passed, verdict=verdict)
    if analyse_data:
        metrics["data"] = dict(train=data["stats"], test=data_statistics(*data["test"]))
    return metrics


def write_artifacts(out, name, trained, metrics, rf_rows, data, analyse_data):
    """Every file of a run, put into `out` as one whole (harness.files.replace_run): until the last of them is
    written, `out` holds the previous run; then this one, never a mix. Returns the files' names."""
    model, predictions, labels = trained.model, trained.predictions, trained.labels
    test_images = data["test"][0][:len(labels)]
    wrong = (predictions != labels).nonzero().flatten()[:40].tolist()
    digit = 0  # the test digit features.png shows: the first of the test set
    image = (test_images[digit].float() / 255 - data["mean"]) / data["std"]
    device = next(model.parameters()).device
    run = {
        "summary.txt": summary_text(model),
        "rf.md": rf_markdown(rf_rows, f"{name}: receptive field, computed from the model"),
        "curves.png": png_bytes(plot_curves(metrics["history"], name, metrics["targets"]["min_test_acc"])),
        "misclassified.png": png_bytes(plot_digits(
            [test_images[i].numpy() for i in wrong], [f"{labels[i].item()}→{predictions[i].item()}" for i in wrong],
            f"{name}: {int((predictions != labels).sum())} misclassified test images (true→predicted), "
            f"first {len(wrong)} shown")),
        "confusion.png": png_bytes(plot_confusion(metrics["confusion"], f"{name}: confusion on the test set")),
        "features.png": png_bytes(plot_features(
            first_kernels(model), feature_maps(model, image.to(device)), test_images[digit].numpy(),
            f"{name}: what each block sees of test digit {digit} (a {labels[digit].item()})")),
    }
    if analyse_data:
        images, sample_labels = data["train"]
        run["samples.png"] = png_bytes(plot_digits([images[i].numpy() for i in range(40)],
                                                   [str(sample_labels[i].item()) for i in range(40)],
                                                   "MNIST: the first 40 training images and their labels"))
    run["model.pt"] = state_dict_bytes(model)
    run["metrics.json"] = json_text(metrics)
    replace_run(out, run)
    return list(run)


