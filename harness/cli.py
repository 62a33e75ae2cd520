"""The command line every step shares, in the pytorch/examples style: flags validated before any work starts, a
`Config` of the run's settings, the device it trains on, and the settings a run records (how a completed run is
recognised when the same command means the same recipe)."""
import argparse
import contextlib
import json
import math
import os
import platform
import shlex
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import torch

from harness.errors import UsageError
from harness.mnist import TRAIN_IMAGES, default_data_dir

# Hyper-parameters every step shares; a step's DEFAULTS override any of them. step_size and gamma shape the "step"
# schedule (steps 1 and 2) and are set only there.
BASE_DEFAULTS = dict(epochs=15, batch_size=128, lr=0.01, momentum=0.9, nesterov=False, scheduler="none", step_size=5,
                     gamma=0.1, rotate=0.0, shift=0.0, scale=0.0, clean_epochs=0, seed=1)
SCHEDULERS = ("onecycle", "step", "none")
# What the published nets' own recipes need beyond the steps' (public.py): their flags exist only in a script whose
# DEFAULTS name an optimizer. Each is off at its Config default, so the steps' runs are what they were.
OWN_RECIPE_SCHEDULERS = ("piecewise", "plateau")
OPTIMIZERS = ("sgd", "adam", "adamw")
INITS = ("torch", "xavier")
OWN_RECIPE_OFF = dict(optimizer="sgd", weight_decay=0.0, init="torch", lr_knots=[], augment_p=1.0, brightness=0.0,
                      contrast=0.0)  # as a run records them
DEVICES = ("auto", "cpu", "cuda", "mps")
CLUSTER_ENV = "MNIST_DASK_CLUSTER"  # the scheduler sweeps submit to when --cluster is not given
RUN_FOLDER_ENV = "MNIST_RUN_FOLDER"  # set by harness.runs.run_on_worker: where the run writes instead of its --out


@dataclass
class Config:
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    nesterov: bool
    scheduler: str
    step_size: int
    gamma: float
    rotate: float
    shift: float
    seed: int
    device: str = "cpu"
    subset: int = None
    val: int = 0
    batchnorm: bool = True
    clean_epochs: int = 0
    scale: float = 0.0
    net_kwargs: dict = field(default_factory=dict)
    optimizer: str = OWN_RECIPE_OFF["optimizer"]
    weight_decay: float = OWN_RECIPE_OFF["weight_decay"]
    init: str = OWN_RECIPE_OFF["init"]
    lr_knots: tuple = ()
    augment_p: float = OWN_RECIPE_OFF["augment_p"]
    brightness: float = OWN_RECIPE_OFF["brightness"]
    contrast: float = OWN_RECIPE_OFF["contrast"]


# Settings that runs recorded before their flags went (ideas that measured no gain: RESULTS.md), at the value that
# meant "off". A run recorded with one of these at another value was made with another recipe.
RETIRED_SETTINGS = dict(test_batch_size=1000, label_smoothing=0.0, precision="fp32", channels_last=False,
                        bn_affine="channel", activation="relu", ema=0.0, teacher=None)


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
momentum_value = number_parser(float, "a momentum in [0, 1)", lambda v: 0 <= v < 1)
degrees = number_parser(float, "degrees in [0, 180]", lambda v: 0 <= v <= 180)
pixels = number_parser(float, "pixels in [0, 14)", lambda v: 0 <= v < 14)
zoom_range = number_parser(float, "a fraction in [0, 0.5]", lambda v: 0 <= v <= 0.5)
non_negative_float = number_parser(float, "a finite number ≥ 0", lambda v: math.isfinite(v) and v >= 0)
probability = number_parser(float, "a probability in (0, 1]", lambda v: 0 < v <= 1)
fraction = number_parser(float, "a fraction in [0, 1)", lambda v: 0 <= v < 1)


def lr_knots(text):
    """--lr-knots: EPOCH:FRACTION pairs, e.g. 0:0.5,2:1,8:0.1,12:0.05,15:0 — the rate, as a fraction of --lr, at
    the start of epoch EPOCH (0 the first), from 0 on, at rising epochs; the epochs between on a line through them."""
    try:
        knots = tuple((float(epoch), float(rate)) for epoch, rate in (part.split(":") for part in text.split(",")))
    except ValueError:
        knots = ()
    epochs = [epoch for epoch, _ in knots]
    if not knots or epochs[0] != 0 or any(b <= a for a, b in zip(epochs, epochs[1:])) \
            or not all(math.isfinite(v) and v >= 0 for knot in knots for v in knot):
        raise argparse.ArgumentTypeError(f"expected EPOCH:FRACTION pairs from epoch 0 on, rising epochs, separated "
                                         f"by commas (e.g. 0:0.5,2:1,8:0.1,15:0), got {text!r}")
    return knots


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


def add_cluster_flag(parser):
    """--cluster, beside --jobs in every program that runs sweeps (harness.runs.run_commands)."""
    parser.add_argument("--cluster", default=os.environ.get(CLUSTER_ENV) or None, metavar="ADDRESS",
                        help="send the runs to the Dask scheduler at ADDRESS (tcp://HOST:PORT) instead of starting "
                             "--jobs workers here (default: $MNIST_DASK_CLUSTER, else none)")


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
    add("--lr", type=positive_float, default=d["lr"],
        help="learning rate; the peak for onecycle (default: %(default)s)")
    add("--momentum", type=momentum_value, default=d["momentum"], help="SGD momentum (default: %(default)s)")
    add("--nesterov", action=argparse.BooleanOptionalAction, default=d["nesterov"], help="Nesterov momentum")
    own_recipes = "optimizer" in defaults  # public.py: the published nets' own recipes
    add("--scheduler", choices=SCHEDULERS + OWN_RECIPE_SCHEDULERS * own_recipes, default=d["scheduler"],
        help="learning-rate schedule; 'step' multiplies the rate by the step's gamma every step_size epochs" + (
            "; 'piecewise' follows --lr-knots; 'plateau' divides it by 4 after 50 epochs without a lower "
            "validation loss, down to 2.5e-5 (needs --val)" if own_recipes else "") + " (default: %(default)s)")
    add("--rotate", type=degrees, default=d["rotate"],
        help="random rotation of training images, ± degrees; 0 turns it off (default: %(default)s)")
    add("--shift", type=pixels, default=d["shift"],
        help="random translation of training images, ± pixels in x and y; 0 turns it off (default: %(default)s)")
    add("--scale", type=zoom_range, default=d["scale"], metavar="FRACTION",
        help="random zoom of training images by a factor in 1 ± FRACTION; 0 turns it off (default: %(default)s)")
    add("--no-augment", action="store_true", help="no augmentation at all (same as --rotate 0 --shift 0 --scale 0"
        + " --brightness 0 --contrast 0" * ("optimizer" in defaults) + ")")
    add("--clean-epochs", type=non_negative_int, default=None, metavar="N",
        help=f"train the last N epochs on the images as they are, augmentation off (default: {d['clean_epochs']}, "
             "or every epoch of a shorter run)")
    parser.set_defaults(step_clean_epochs=d["clean_epochs"], step_size=d["step_size"], gamma=d["gamma"])
    if "design" in defaults:  # designs.py: a family of layouts and its widths, checked by the module's own parser
        add("--design", type=defaults["design_type"], default=defaults["design"],
            help="the candidate network, FAMILY-WIDTHS (default: %(default)s)")
        add("--bn-affine", choices=("channel", "layer"), default=defaults["bn_affine"],
            help="what each batch norm learns after normalising: a scale and a shift per channel (PyTorch's) or one "
                 "of each for the whole layer (2 parameters a layer) (default: %(default)s)")
    if own_recipes:
        add("--optimizer", choices=OPTIMIZERS, default=defaults["optimizer"],
            help="sgd (with --momentum), adam or adamw (Keras' epsilon, 1e-7) (default: %(default)s)")
        add("--weight-decay", type=non_negative_float, default=0.0,
            help="weight decay; adamw's is decoupled, multiplied by the rate as PyTorch's (default: %(default)s)")
        add("--init", choices=INITS, default="torch",
            help="the weights' first values: PyTorch's, or Xavier-uniform for every convolution and dense layer "
                 "with zero biases (Keras' default) (default: %(default)s)")
        add("--lr-knots", type=lr_knots, default=(), metavar="EPOCH:FRACTION,...",
            help="with --scheduler piecewise: each epoch's rate as a fraction of --lr (epoch 0 the first), on a line "
                 "between the knots")
        add("--augment-p", type=probability, default=1.0, metavar="P",
            help="each image is rotated, shifted and zoomed with probability P, and given a brightness and "
                 "contrast with probability P (default: %(default)s)")
        add("--brightness", type=fraction, default=0.0, metavar="B",
            help="random brightness of training images, ± B added to pixels in [0, 1]; 0 turns it off "
                 "(default: %(default)s)")
        add("--contrast", type=fraction, default=0.0, metavar="C",
            help="random contrast of training images, pixels times 1 ± C; 0 turns it off (default: %(default)s)")
    if "net" in defaults:  # public.py: one of the published nets
        add("--net", choices=defaults["nets"], default=defaults["net"], help="the net (default: %(default)s)")
    if "widths" in defaults:
        add("--widths", type=widths_list(len(defaults["widths"])), default=defaults["widths"],
            help="channels of the Net's convolutions, comma-separated (default: %(default)s)")
    add("--seed", type=non_negative_int, default=d["seed"], help="random seed (default: %(default)s)")
    add("--seeds", type=positive_int, default=None, metavar="N",
        help="train N times with seeds seed..seed+N-1 and write seeds.json and seeds.md")
    add("--no-batchnorm", action="store_true",
        help="replace every BatchNorm layer by identity: the step as it trains without batch norm")
    add("--jobs", type=positive_int, default=1, metavar="J",
        help="with --seeds: run J seeds at once, each in its own process with 1/J of the cores (default: 1)")
    add_cluster_flag(parser)
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


def run_folder(name, args):
    """Where a step's run writes: --out, else results/STEP (results/STEP-subset with --subset); a sweep's worker
    names a folder of its own instead (harness.runs.run_on_worker), and the command recorded stays as typed."""
    return Path(os.environ.get(RUN_FOLDER_ENV) or args.out or
                (f"results/{name}-subset" if args.subset else f"results/{name}"))


def config_from_args(args):
    if getattr(args, "dry_run", False):
        args.epochs, args.subset = 1, min(args.subset or 256, 256)
    net_kwargs = {key: getattr(args, key) for key in ("widths", "design", "bn_affine", "net") if hasattr(args, key)}
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
    own = {key: getattr(args, key) for key in OWN_RECIPE_OFF if hasattr(args, key)}  # public.py's flags only
    if own and args.no_augment:
        own.update(brightness=0.0, contrast=0.0)
    if (args.scheduler == "piecewise") != bool(own.get("lr_knots")):
        raise UsageError("argument --lr-knots: it sets the rates of --scheduler piecewise, and that schedule needs it "
                         "(give both or neither)")
    if args.scheduler == "plateau" and not args.val:
        raise UsageError("argument --scheduler: 'plateau' watches the validation loss: give --val N as well")
    return Config(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                  nesterov=args.nesterov, scheduler=args.scheduler, step_size=args.step_size, gamma=args.gamma,
                  rotate=0.0 if args.no_augment else args.rotate, shift=0.0 if args.no_augment else args.shift,
                  scale=0.0 if args.no_augment else args.scale, seed=args.seed, device=resolve_device(args.device),
                  subset=args.subset, val=args.val, batchnorm=not args.no_batchnorm, clean_epochs=args.clean_epochs,
                  net_kwargs=net_kwargs, **own)


def command_line(script, args):
    """How a command is recorded and shown, whatever the interpreter's path: `python model3.py ARGS...` for a step's
    file (by its name), `python -m lab.search ARGS...` for a module of the lab (named without .py)."""
    program = [Path(script).name] if str(script).endswith(".py") else ["-m", str(script)]
    return " ".join(["python", *program, *map(str, args)])


def without_flags(argv, flags):
    """`argv` without each of `flags` and its value (`--seed 3` or `--seed=3`)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        elif not arg.startswith(tuple(f"{flag}=" for flag in flags)):
            kept.append(arg)
    return kept


def same_command(recorded, command):
    """Whether a recorded command line and `command` make the same run: the same words, but for earlier copies of
    --seed and --out, which argparse overrides by the last (a seed of a --seeds run recorded them twice once)."""
    def canonical(text):
        words = shlex.split(text) if isinstance(text, str) else []
        last = {flag: next((value for arg, value in reversed(list(zip(words, words[1:]))) if arg == flag), None)
                for flag in ("--seed", "--out")}
        return without_flags(words, ("--seed", "--out")), last
    return isinstance(recorded, str) and canonical(recorded) == canonical(command)


def settings_to_record(config):
    """A run's settings as metrics.json keeps them (JSON types; where and on how much data it ran are kept apart)."""
    return json.loads(json.dumps({k: v for k, v in vars(config).items() if k not in ("device", "subset")}))


def settings_recorded_in(metrics):
    """A run's settings from its metrics.json, in today's terms so that they compare with settings_to_record: a
    setting added since the run was made at its default (what the run then did), a retired one that was off left out
    (one that was on stays, and tells another recipe), and designs.py's --bn-affine among its net's arguments, where
    it now lives."""
    recorded = dict(metrics.get("config") or {})
    net_kwargs = recorded["net_kwargs"] = dict(recorded.get("net_kwargs") or {})
    if net_kwargs.get("dropout") == 0:
        del net_kwargs["dropout"]
    if "design" in net_kwargs and "bn_affine" in recorded:
        net_kwargs["bn_affine"] = recorded.pop("bn_affine")
    for key, off in RETIRED_SETTINGS.items():
        if key in recorded and recorded[key] == off:
            del recorded[key]
    for f in fields(Config):
        if f.name not in recorded and f.name not in ("device", "subset"):
            if f.default is not MISSING:
                recorded[f.name] = f.default
            elif f.default_factory is not MISSING:
                recorded[f.name] = f.default_factory()
    return json.loads(json.dumps(recorded))


def beside_retired(settings):
    """Settings (settings_recorded_in's form) without those retired since (RETIRED_SETTINGS): how a run that was shown
    to compute what today's code computes (lab/vouch.py) compares with today's settings, a retired setting it
    recorded being what its code then did (step 4's --bn-affine layer and PReLU, built into its Net since)."""
    return {key: value for key, value in settings.items() if key not in RETIRED_SETTINGS}


def quiet_parser(defaults):
    """A step's parser whose refusal of a flag raises UsageError instead of printing a line and exiting."""
    def refuse(message):
        raise UsageError(message)

    parser = build_parser("step", defaults, "")
    parser.error = refuse
    return parser


def refusal(flags, defaults):
    """What a step's parser says of these flags today (a flag retired since a recipe was written, say), or None."""
    try:
        quiet_parser(defaults).parse_args([str(flag) for flag in flags])
    except UsageError as e:
        return str(e)
    return None


def settings_meant_by(flags, defaults):
    """The settings a step's flags mean today, given the step's DEFAULTS, or None where that cannot be told: the
    same command can mean another recipe once a step's DEFAULTS change. Flags the parser refuses (a retired flag in a
    recorded command) are None here, not a line on stderr."""
    try:
        return settings_to_record(config_from_args(quiet_parser(defaults).parse_args([str(flag) for flag in flags])))
    except (Exception, SystemExit):
        return None
