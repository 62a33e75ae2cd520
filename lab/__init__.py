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

from common import build_net
from harness.cli import build_parser, config_from_args


def net_of(step, flags):
    """The net that `step`'s script (model1 ... model4, designs) builds from these flags: how the lab sizes the net
    of a command it runs or a run recorded."""
    module = importlib.import_module(step)
    return build_net(module.Net, config_from_args(build_parser(step, module.DEFAULTS, "").parse_args(flags)))
