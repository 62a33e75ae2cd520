"""Candidate networks for step 4 and the 99 % club, screened on the validation split beside model4's own: other
layouts, not only other widths. A design is a family and its widths, e.g. `pool-6.10.6.12.14.14`; everything else
is step 4's recipe as round 5 found it (DEFAULTS below, model4's flags, no clean epochs unless a recipe adds
--clean-epochs). --dropout, as in model4, goes after the two middle blocks.

    python designs.py --design ds-12.24.32.32.32 --val 10000 --seed 1
    python -m lab.search designs results/model4/search-recipes-designs.txt --seeds 3 --jobs 2

Families (receptive field 20 or more at the last 3×3, a 1×1 to the classes after global averaging, as step 4):
    m4       step 4's net of round 4: one 3×3 at 28×28, a strided 3×3 to 12×12, 1×1 squeeze, two 3×3, a dilated
             3×3 to 4×4
    pad      the same, the first two 3×3 padded: 28 → 28 → 14, ending on 6×6 — more positions for the same weights
    pool     two 3×3 at full size, max-pool to 12×12, then as m4: the classic transition after an RF of 5
    ds       m4's layout with every 3×3 after the first depthwise-separable (a 3×3 per channel, then a 1×1
             across channels): about 9/c of the weights of a full 3×3 of c channels, so twice the channels
    pool_ds  pool's start, then depthwise-separable blocks: the design chosen, model4's Net
    pool1_ds pool_ds with one full 3×3 before the max-pool, not two (28 → 26 → 13, ending on 5×5, RF 20 at the
             last 3×3): for nets of a thousand parameters or so, where two full 3×3s wide enough to see strokes
             would cost most of the budget; the 99 % club's net (results/club)
    shared   pool1_ds's start and first separable block (a to b channels), then ONE separable b-to-b block applied
             again and again with the same weights: `shared-8.16.3` uses it 3 times (13 → 11 → 9 → 7 → 5, RF 20),
             for the weights of one. A tiny net is short of weights, not of compute, and MNIST's strokes look alike
             at every depth; each use keeps a batch norm of its own (--bn-affine layer: 2 parameters a use)
    early    pool1_ds with the max-pool moved before the first batch norm and ReLU: the same weights, and since a
             maximum passes through any rising per-channel map, nearly the same net, but the first layer's batch norm
             and ReLU, which take most of a tiny net's time on the 26×26 map, run on 13×13 (`early-8.13.13.13`)
    late     pool1_ds with its max-pool one block later: the first separable 3×3 runs on 24×24, not 11×11, and the
             last, dilated by 3, ends on 4×4 (RF 22): the same weights applied at more positions, 1.8 times the
             multiply-adds of pool1_ds at 8.13.13.13 (`late-8.13.13.13`)
    deep     pool1_ds with four separable 3×3s and none dilated (13 -> 11 -> 9 -> 7 -> 5, RF 20, as the public 697-
             parameter net): one more ReLU for the weights the dilated block's width would have had
             (`deep-8.10.10.10.10`)
    shuffle  pool1_ds with each separable block's 1×1 in two groups (each half of the channels mixed apart, for half
             the weights), then nn.ChannelShuffle, so the next block's halves each get some of both: a 1×1 is most
             of a separable block's weights, so the same count buys about a third more width (`shuffle-8.16.16.18`)
    direct   pool1_ds without its last 1×1 of d channels and the head's 1×1 after it: the last separable 3×3's
             own 1×1 makes the ten class maps, which are averaged (`direct-8.16.16`). Between two 1×1s with no
             ReLU a net learns nothing that one 1×1 cannot, so only that ReLU is lost, and the c·d + 10·d weights
             of the two become 10·c, to spend on width
    mid      pool1_ds with batch norm and a ReLU between each separable block's 3×3 and its 1×1, as MobileNet's
             blocks have (ours mix the 3×3's maps straight into the 1×1): twice the ReLUs for the weights of one
             batch norm a block (2 with --bn-affine layer) and, with --activation prelu, one slope (`mid-8.13.13.13`)
    twopool  pool1_ds with a second max-pool where its dilated 3×3 was: the last separable 3×3 runs undilated on the
             5×5 map the pool makes of the 9×9 (13 -> 11 -> 9 -> 5 -> 3, RF 22): the same weights, a maximum (free
             of weights) taken twice, as LeNet does, and a fifth of pool1_ds's multiply-adds in that block
             (`twopool-8.13.13.13`)
    res      pool1_ds with each separable block whose channels go in and out alike added to its input, cut to the
             block's smaller map (the unpadded 3×3s take a border): a residual connection, no weight at all, so
             the gradient reaches the first layers whole; the sum goes through the block's ReLU (`res-8.13.13.13`)
"""
import argparse
import copy
import re

import torch.nn as nn

import model4
from common import conv_bn_relu, gap_head, run_step, separable_bn_relu


def m4_features(a, b, squeeze, c, d, e, dropout=0.0):
    """Step 4's net of round 4 (the control): the transition a strided 3×3 right after the first."""
    return [conv_bn_relu(1, a), conv_bn_relu(a, b, stride=2),                        # 28 -> 26 -> 12, RF 5
            conv_bn_relu(b, squeeze, kernel_size=1), conv_bn_relu(squeeze, c, dropout=dropout),
            conv_bn_relu(c, d, dropout=dropout),                                       # -> 10 -> 8
            conv_bn_relu(d, e, dilation=2)]                                            # -> 4, RF 21


def pad_features(a, b, squeeze, c, d, e, dropout=0.0):
    return [conv_bn_relu(1, a, padding=1), conv_bn_relu(a, b, stride=2, padding=1),   # 28 -> 28 -> 14
            conv_bn_relu(b, squeeze, kernel_size=1), conv_bn_relu(squeeze, c, dropout=dropout),
            conv_bn_relu(c, d, dropout=dropout),                                       # -> 12 -> 10
            conv_bn_relu(d, e, dilation=2)]                                            # -> 6, RF 21


def pool_features(a, b, squeeze, c, d, e, dropout=0.0):
    return [conv_bn_relu(1, a), conv_bn_relu(a, b), nn.MaxPool2d(2),                  # 28 -> 26 -> 24 -> 12, RF 6
            conv_bn_relu(b, squeeze, kernel_size=1), conv_bn_relu(squeeze, c, dropout=dropout),
            conv_bn_relu(c, d, dropout=dropout),                                       # -> 10 -> 8
            conv_bn_relu(d, e, dilation=2)]                                            # -> 4, RF 22


def ds_features(a, b, c, d, e, dropout=0.0):
    return [conv_bn_relu(1, a), separable_bn_relu(a, b, stride=2),                   # 28 -> 26 -> 12
            separable_bn_relu(b, c, dropout=dropout), separable_bn_relu(c, d, dropout=dropout),  # -> 10 -> 8
            separable_bn_relu(d, e, dilation=2)]                                       # -> 4, RF 21


def pool1_ds_features(a, b, c, d, dropout=0.0):
    return [conv_bn_relu(1, a), nn.MaxPool2d(2),                                      # 28 -> 26 -> 13, RF 4
            separable_bn_relu(a, b, dropout=dropout), separable_bn_relu(b, c, dropout=dropout),  # -> 11 -> 9
            separable_bn_relu(c, d, dilation=2)]                                       # -> 5, RF 20


def early_features(a, b, c, d, dropout=0.0):
    (convolution, norm, activation), pool, *rest = pool1_ds_features(a, b, c, d, dropout)
    return [nn.Sequential(convolution, pool, norm, activation), *rest]  # 28 -> 26 -> 13, RF 4; norm on 13×13


def late_features(a, b, c, d, dropout=0.0):
    return [conv_bn_relu(1, a), separable_bn_relu(a, b, dropout=dropout), nn.MaxPool2d(2),  # 28 -> 26 -> 24 -> 12
            separable_bn_relu(b, c, dropout=dropout),                                  # -> 10, RF 10
            separable_bn_relu(c, d, dilation=3)]                                       # -> 4, RF 22


def shuffled(block, groups=2):
    """A separable block with its 1×1 in `groups` groups, then its channels dealt out across the groups."""
    depthwise, pointwise, *rest = block
    grouped = nn.Conv2d(pointwise.in_channels, pointwise.out_channels, 1, groups=groups, bias=False)
    return nn.Sequential(depthwise, grouped, *rest, nn.ChannelShuffle(groups))


def shuffle_features(a, b, c, d, dropout=0.0):
    first, pool, *blocks = pool1_ds_features(a, b, c, d, dropout)
    return [first, pool, *map(shuffled, blocks)]                                      # 28 -> 26 -> 13 ... -> 5, RF 20


def deep_features(a, b, c, d, e, dropout=0.0):
    return [conv_bn_relu(1, a), nn.MaxPool2d(2),                                      # 28 -> 26 -> 13, RF 4
            separable_bn_relu(a, b, dropout=dropout), separable_bn_relu(b, c, dropout=dropout),  # -> 11 -> 9
            separable_bn_relu(c, d), separable_bn_relu(d, e)]                          # -> 7 -> 5, RF 20


def direct_features(a, b, c, dropout=0.0):
    return [conv_bn_relu(1, a), nn.MaxPool2d(2),                                      # 28 -> 26 -> 13, RF 4
            separable_bn_relu(a, b, dropout=dropout), separable_bn_relu(b, c, dropout=dropout),  # -> 11 -> 9
            nn.Conv2d(c, c, 3, dilation=2, groups=c, bias=False),                      # -> 5, RF 20
            nn.Conv2d(c, 10, 1)]                                                       # the ten class maps


def reused(block):
    """`block` applied once more: a copy whose convolutions hold the very same weights (one tensor, trained by every
    use), with a batch norm of its own, since each use sees maps of another depth."""
    again = copy.deepcopy(block)
    for layer, original in zip(again, block):
        if isinstance(layer, nn.Conv2d):
            layer.weight = original.weight
    return again


def shared_features(a, b, uses, dropout=0.0):
    block = separable_bn_relu(b, b, dropout=dropout)
    return [conv_bn_relu(1, a), nn.MaxPool2d(2),                                      # 28 -> 26 -> 13, RF 4
            separable_bn_relu(a, b, dropout=dropout),                                  # -> 11, RF 8
            block, *(reused(block) for _ in range(uses - 1))]                          # 3 uses: -> 5, RF 20


def mid_features(a, b, c, d, dropout=0.0):
    first, pool, *blocks = pool1_ds_features(a, b, c, d, dropout)
    return [first, pool, *(nn.Sequential(depthwise, nn.BatchNorm2d(depthwise.out_channels), nn.ReLU(), *rest)
                           for depthwise, *rest in blocks)]                           # 28 -> 26 -> 13 ... -> 5, RF 20


def twopool_features(a, b, c, d, dropout=0.0):
    return [conv_bn_relu(1, a), nn.MaxPool2d(2),                                      # 28 -> 26 -> 13, RF 4
            separable_bn_relu(a, b, dropout=dropout), separable_bn_relu(b, c, dropout=dropout),  # -> 11 -> 9
            nn.MaxPool2d(2, ceil_mode=True), separable_bn_relu(c, d)]                  # -> 5 -> 3, RF 22


class Residual(nn.Module):
    """A block [convolutions..., batch norm, activation, (dropout)] that adds its input to the batch norm's output,
    before the activation; the input's border is cut to the block's map (an unpadded 3×3 of dilation k takes k
    pixels a side)."""

    def __init__(self, block):
        super().__init__()
        norm = next(i for i, layer in enumerate(block) if isinstance(layer, nn.BatchNorm2d))
        self.layers, self.after = nn.Sequential(*block[:norm + 1]), nn.Sequential(*block[norm + 1:])

    def forward(self, x):
        out = self.layers(x)
        border = (x.shape[-1] - out.shape[-1]) // 2
        return self.after(out + x[..., border:x.shape[-2] - border, border:x.shape[-1] - border])


def res_features(a, b, c, d, dropout=0.0):
    first, pool, *blocks = pool1_ds_features(a, b, c, d, dropout)
    return [first, pool, *(Residual(block) if block[0].in_channels == block[1].out_channels else block
                           for block in blocks)]                           # 28 -> 26 -> 13 ... -> 5, RF 20


FAMILIES = dict(m4=m4_features, pad=pad_features, pool=pool_features, ds=ds_features, pool1_ds=pool1_ds_features,
                shared=shared_features, direct=direct_features, early=early_features, deep=deep_features,
                late=late_features, shuffle=shuffle_features, mid=mid_features, res=res_features,
                twopool=twopool_features)
ARITY = dict(m4=6, pad=6, pool=6, ds=5, pool_ds=5, pool1_ds=4, shared=3, direct=3, early=4, deep=5, late=4,
             shuffle=4, mid=4, res=4, twopool=4)  # pool_ds: model4.Net
MAX_USES = 5  # shared: 11 -> 9 -> 7 -> 5 -> 3 -> 1
WIDTHS = dict(shared=2)  # a family's numbers that are widths, where not all are (shared's last is its uses)
DESIGN = re.compile(r"^([a-z_0-9]+)-(\d+(?:\.\d+)*)$")


def parse_design(text):
    """FAMILY-W1.W2... as (family, widths): the family one of ARITY and as many widths (1..256) as it takes."""
    match = DESIGN.match(text)
    family, widths = (match[1], tuple(int(w) for w in match[2].split("."))) if match else (None, ())
    if family not in ARITY or len(widths) != ARITY[family] or not all(0 < w <= 256 for w in widths):
        raise argparse.ArgumentTypeError(
            f"expected FAMILY-WIDTHS with FAMILY one of {', '.join(ARITY)} and that many widths in 1..256 "
            f"({', '.join(f'{k}: {n}' for k, n in ARITY.items())}) joined by dots, e.g. pool-6.10.6.12.14.14; "
            f"got {text!r}")
    if family == "shared" and widths[-1] > MAX_USES:
        raise argparse.ArgumentTypeError(f"shared-A.B.USES: the block fits at most {MAX_USES} uses on the 11×11 map "
                                         f"it starts on (each unpadded 3×3 takes 2 positions); got {text!r}")
    return family, widths


def design_name(text):
    """--design: the text itself, once parse_design accepts it (it is what the runs record)."""
    parse_design(text)
    return text


class Net(nn.Module):
    def __init__(self, design="m4-6.12.6.12.14.14", dropout=0.0):
        super().__init__()
        family, widths = parse_design(design)
        if family == "pool_ds":  # the design chosen: model4's own Net
            net = model4.Net(widths, dropout)
            self.features, self.head = net.features, net.head
        else:
            self.features = nn.Sequential(*FAMILIES[family](*widths, dropout=dropout))
            last_conv = [m for m in self.features.modules() if isinstance(m, nn.Conv2d)][-1]
            self.head = (nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()) if family == "direct"  # the class maps,
                         else gap_head(last_conv.out_channels))                                  # only averaged

    def forward(self, x):
        return self.head(self.features(x))


# Step 4's recipe as round 5 found it, written out rather than read from model4, so that every recorded search
# command of this file means what it meant when it ran, whatever step 4's recipe becomes.
DEFAULTS = dict(epochs=15, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, scheduler="onecycle", rotate=10.0,
                shift=2.0, dropout=0.0, design="m4-6.12.6.12.14.14", design_type=design_name)

if __name__ == "__main__":
    run_step("designs", Net, DEFAULTS, model4.TARGETS, __doc__)
