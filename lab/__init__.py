"""The lab around the exercise: the drivers that run the steps many times and write what the runs show. Each is run
from the project's folder as `python -m lab.NAME` (the Makefile's targets do it).

    report       RESULTS.md, the README's results and each step's docstring Results, from results/
    search       a step's recipes screened on a validation split, several seeds each (`make search`)
    frontier     steps 3 and 4 at many sizes, and the 99 % club's net over ten seeds (`make frontier`)
    bench        the reference pipeline against ours, update by update, and model3's 15 epochs (`make bench`)
    bench_sweep  what a sweep's engine costs: plain runs against the same runs through Dask

They import common.py and harness/; nothing in the exercise imports them.
"""
import importlib
import shlex
from pathlib import Path

from common import TRAINING_PATH, build_net
from harness.cli import build_parser, config_from_args, settings_meant_by, without_flags
from harness.provenance import fingerprint, fingerprint_parts
from harness.runs import Run, step_argv


def net_of(step, flags):
    """The net that `step`'s script (model1 ... model4, designs) builds from these flags: how the lab sizes the net
    of a command it runs or a run recorded."""
    module = importlib.import_module(step)
    return build_net(module.Net, config_from_args(build_parser(step, module.DEFAULTS, "").parse_args(flags)))


def code_meant_by(step, flags):
    """{"fingerprint", "parts"} of the code that `python STEP.py FLAGS` runs with today's files: the net it builds and
    the training path (harness/provenance.py)."""
    parts = fingerprint_parts(net_of(step, [str(flag) for flag in flags]), TRAINING_PATH)
    return dict(fingerprint=fingerprint(parts), parts=parts)


def step_run(script, flags, seed, out):
    """A Run of a step's `script` (model3.py, designs.py ...) with `flags`, a seed and a folder: a completed run there
    is reused while it was made with the settings these flags mean today under the step's DEFAULTS, and by the code
    today's files make of them."""
    step = Path(script).stem
    argv = step_argv(script, flags, seed, out)
    settings = settings_meant_by(argv[2:], importlib.import_module(step).DEFAULTS)
    # flags the step refuses today make no run to compare with
    return Run(argv, Path(out), settings, code_meant_by(step, flags) if settings is not None else None)


def flags_of(command):
    """(script, flags) of a recorded command (`python model3.py FLAGS...`), its --seed and --out taken out."""
    words = shlex.split(command)[1:]
    return words[0], without_flags(words[1:], ("--seed", "--out"))


def code_words(code, command):
    """"" where `code` (what a run or a seeds table records of its code) is the code today's files make of
    `command`; else "made by unknown code" (made before runs recorded theirs, and not shown the same since) or
    "made by other code than today's"."""
    if not (code or {}).get("fingerprint"):
        return "made by unknown code"
    script, flags = flags_of(command)
    try:
        today = code_meant_by(Path(script).stem, flags)["fingerprint"]
    except (Exception, SystemExit):  # a script or flags that today's code no longer has
        today = None
    return "" if today == code["fingerprint"] else "made by other code than today's"
