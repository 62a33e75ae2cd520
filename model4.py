"""Step 4 — the limit: fewer than 5,000 parameters, still ≥ 99.4 % test accuracy in 15 epochs.

Target
    Fewer than 5,000 parameters (BatchNorm included), test accuracy ≥ 99.40 % on each of the last 3 of
    15 epochs, on at least 9 of 10 seeds.

Results
    4,966 parameters, receptive field 22; test accuracy 99.57/99.59/99.58 % on the last 3 epochs;
    best train accuracy 99.69 %; 15 epochs at 11.6 s/epoch (median) on cpu (AMD EPYC, 2 threads).
    PASS. Run: `python model4.py --device cpu`, 2026-11-27. (Written by lab/report.py from results/model4/metrics.json.)
    Over 10 seeds: 10/10 seeds met the target; final test accuracy 99.541 ± 0.028 % (mean ± std), lowest
    99.50 %, lowest of any last-3 epoch 99.46 % (python model4.py --seeds 10 --jobs 2, cpu (AMD EPYC, 1
    thread)).

Analysis
    Step 4 keeps step 3's recipe and its head — a last dilated 3×3 on a 4×4 map, averaged, then 10 weights a
    channel into the classes — and changes how the weights below it are spent. Two full 3×3 convolutions at
    full size find the strokes (RF 5) before a max-pool halves the map, as in step 2; after it every 3×3 is
    depthwise-separable: a 3×3 for each channel alone, then a 1×1 that mixes them, about 9/c of the weights of
    a full 3×3 at c channels. So the middle and last blocks run at 32–40 channels where a net of full 3×3s has
    room for 12–14 under 5,000 parameters. And the last 5 epochs train on the digits as they are
    (`--clean-epochs 5`): augmentation helps the early epochs and costs a net this small the last ones.
    Every choice was made on the validation split, never on the test set (RESULTS.md lists every table). Four
    rounds changed widths and recipe within one layout of full 3×3s (a strided 3×3 right after the first as
    the transition) — twenty designs on 2 CPU cores, then one change of recipe at a time on a GPU — and ended
    on flat ground: the leaders within a hundredth of a point of each other on validation, and the net they
    chose held the line on too few of its ten test seeds. Round 5 (`designs.py`, on a GPU) tried other layouts
    under 5,000 parameters, with that net as the control in the same table: the first two 3×3 padded to keep
    larger maps, the max-pool transition, depthwise-separable 3×3s behind the strided transition, and the
    max-pool followed by depthwise-separable 3×3s. The last led over three seeds and again over ten, where
    with the clean epochs it held every last validation epoch on the line on every seed. Separable blocks
    behind the strided transition ranked around the control, not clearly above it: what makes the cheap
    blocks pay, it seems, is the two full 3×3s at full size below them.
    The ablation (`make ablation STEP=model4`, one change at a time, RESULTS.md) measures each ingredient on
    the test set: without the clean epochs, without augmentation, or with lighter augmentation the net still
    ends near the line, each with less margin and a seed or two of ten below it; the round-4 net (the other
    layout, no clean epochs), whose ten seeds are a row of their own, falls furthest.
    Is this the limit? Round 6 (CPU, results/model4/search-recipes-under-4000.txt) thinned the same layout six
    ways under 4,000 parameters and chose 6,12,28,28,32 (3,872 parameters) on the validation split; on the test
    set it ended near the line but not on it often enough — a last epoch under 99.40 % on more than one seed of
    ten (its seeds run is the row round-6-net of the ablation). So the line stays at 5,000: below it, this
    layout holds 99.4 % on most seeds, not on nine in ten.
"""
import torch.nn as nn

from common import Targets, conv_bn_relu, gap_head, run_step, separable_bn_relu

TARGETS = Targets(min_test_acc=99.40, max_params=5000, last_epochs=3, max_epochs=15)
DEFAULTS = dict(epochs=15, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, scheduler="onecycle",
                rotate=10.0, shift=2.0, clean_epochs=5, dropout=0.0, widths=(8, 12, 32, 32, 40))


class Net(nn.Module):
    def __init__(self, widths=DEFAULTS["widths"], dropout=DEFAULTS["dropout"]):
        super().__init__()
        a, b, c, d, e = widths
        self.features = nn.Sequential(
            conv_bn_relu(1, a),                             # 28 -> 26, RF 3
            conv_bn_relu(a, b),                             # 26 -> 24, RF 5
            nn.MaxPool2d(2),                                # 24 -> 12, RF 6: the transition, as in step 2
            separable_bn_relu(b, c, dropout=dropout),       # 12 -> 10, RF 10: a 3×3 per channel, then a 1×1
            separable_bn_relu(c, d, dropout=dropout),       # 10 -> 8,  RF 14
            separable_bn_relu(d, e, dilation=2),            # 8 -> 4,   RF 22: the last 3×3 spread over 5×5
        )
        self.head = gap_head(e)                             # average first, then 10·(e+1) weights to the classes

    def forward(self, x):
        return self.head(self.features(x))


if __name__ == "__main__":
    run_step("model4", Net, DEFAULTS, TARGETS, __doc__)
