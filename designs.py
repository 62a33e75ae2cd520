"""The lab's candidate nets, screened on the validation split beside the steps' own: a layout family and its widths,
e.g. `pool1_ds-10.15.15.15`; everything else is step 4's recipe as round 5 found it (DEFAULTS below, no clean epochs
unless a command adds --clean-epochs). What stays here is the family of a current result, the 99 % club's net
(lab/frontier.py's CLUB); the families that measured no gain (m4, pad, pool, ds, shared, direct, early, late, deep,
shuffle, mid, twopool, res) are in RESULTS.md's tables, each with the commit that ran it.

    python designs.py --design pool1_ds-10.15.15.15 --bn-affine layer --clean-epochs 5 --lr 0.2 --val 10000
    python -m lab.search designs results/club/search-recipes.txt --seeds 3 --jobs 2

Families (a 1×1 to the classes after global averaging, as step 4):
    pool1_ds one full 3×3 before the max-pool (28 → 26 → 13), then step 4's depthwise-separable blocks, the last
             dilated (ending on 5×5, RF 20 at the last 3×3): for nets of a thousand parameters or so, where two
             full 3×3s wide enough to see strokes would cost most of the budget; the 99 % club's net (results/club)
--bn-affine layer gives each batch norm one scale and one shift for the whole layer (common.LayerBatchNorm).
A run is judged against the 99 % club's line (TARGETS): 99.0 % on each of the last 3 of 15 epochs, fewer than 2,000
parameters, and over seeds, 9 in 10.
"""
import argparse
import re

import torch.nn as nn

from common import LayerBatchNorm, Targets, conv_bn_relu, gap_head, run_step, separable_bn_relu


def pool1_ds_features(a, b, c, d, norm=nn.BatchNorm2d):
    return [conv_bn_relu(1, a, norm=norm), nn.MaxPool2d(2),                           # 28 -> 26 -> 13, RF 4
            separable_bn_relu(a, b, norm=norm), separable_bn_relu(b, c, norm=norm),    # -> 11 -> 9
            separable_bn_relu(c, d, dilation=2, norm=norm)]                            # -> 5, RF 20


FAMILIES = dict(pool1_ds=pool1_ds_features)
ARITY = dict(pool1_ds=4)
NORMS = dict(channel=nn.BatchNorm2d, layer=LayerBatchNorm)  # --bn-affine
DESIGN = re.compile(r"^([a-z_0-9]+)-(\d+(?:\.\d+)*)$")


def parse_design(text):
    """FAMILY-W1.W2... as (family, widths): the family one of ARITY and as many widths (1..256) as it takes."""
    match = DESIGN.match(text)
    family, widths = (match[1], tuple(int(w) for w in match[2].split("."))) if match else (None, ())
    if family not in ARITY or len(widths) != ARITY[family] or not all(0 < w <= 256 for w in widths):
        raise argparse.ArgumentTypeError(
            f"expected FAMILY-WIDTHS with FAMILY one of {', '.join(ARITY)} and that many widths in 1..256 "
            f"({', '.join(f'{k}: {n}' for k, n in ARITY.items())}) joined by dots, e.g. pool1_ds-10.15.15.15; "
            f"got {text!r}")
    return family, widths


def design_name(text):
    """--design: the text itself, once parse_design accepts it (it is what the runs record)."""
    parse_design(text)
    return text


class Net(nn.Module):
    def __init__(self, design="pool1_ds-10.15.15.15", bn_affine="channel"):
        super().__init__()
        family, widths = parse_design(design)
        self.features = nn.Sequential(*FAMILIES[family](*widths, norm=NORMS[bn_affine]))
        self.head = gap_head(widths[-1])

    def forward(self, x):
        return self.head(self.features(x))


# Step 4's recipe as round 5 found it, written out, so that every recorded search command of this file means what it
# meant when it ran.
DEFAULTS = dict(epochs=15, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, scheduler="onecycle", rotate=10.0,
                shift=2.0, design="pool1_ds-10.15.15.15", design_type=design_name, bn_affine="channel")

# The 99 % club's line: 99.0 % on each of the last 3 of 15 epochs, on 9 seeds in 10, with fewer parameters than the
# club's layouts span (lab/frontier.py sizes them from 500 to 2,000).
TARGETS = Targets(min_test_acc=99.0, max_params=2000, last_epochs=3, max_epochs=15, min_seed_share=0.9)

if __name__ == "__main__":
    run_step("designs", Net, DEFAULTS, TARGETS, __doc__)
