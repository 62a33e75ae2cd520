"""Step 3 — the skeleton made light: fewer than 8,000 parameters, ≥ 99.4 % test accuracy in 15 epochs.

Target
    Fewer than 8,000 parameters (BatchNorm included), test accuracy ≥ 99.40 % on each of the last 3 of
    15 epochs. The original write-up stopped at 7,838 parameters and 99.22 %, naming over-fitting as the next
    problem; this step goes on and solves it.

Results
    7,970 parameters, receptive field 25; test accuracy 99.61/99.57/99.57 % on the last 3 epochs;
    best train accuracy 99.70 %; 15 epochs at 7.9 s/epoch (median) on cpu (AMD EPYC, 2 threads).
    PASS. Run: `python model3.py --device cpu`, 2026-11-27. (Written by lab/report.py from results/model3/metrics.json.)
    Over 20 seeds: 20/20 seeds met the target; final test accuracy 99.529 ± 0.039 % (mean ± std), lowest
    99.46 %, lowest of any last-3 epoch 99.44 % (python model3.py --seeds 20 --jobs 2, cpu (AMD EPYC, 1
    thread)).

Analysis
    Step 2's skeleton thinned to 8–16 channels, with two changes. The transition, still at RF 5, halves the map
    with a stride-2 convolution instead of a max-pool: the second 3×3 convolution is computed at every second row
    and column only, instead of everywhere and then pooled, so the network never builds a 24×24×16 map and needs
    half the multiply-adds of the max-pool layout this step used until commit 3ebf458, with the same parameter
    count (`rf.md` lists both per layer: on 2 CPU cores the work on the wide maps, not the parameter count,
    decides a light network's time). And the last 3×3 convolution is dilated — its taps spread over 5×5 — which
    takes the receptive field to 25 at no cost in parameters.
    The recipe around it was chosen on a validation split, never on the test set: `make search` holds out the
    last training images (`--val`), trains each recipe over several seeds, and ranks them by validation accuracy
    on the last 3 epochs (RESULTS.md lists every recipe of every round). The first two rounds, on 2 CPU cores
    with three seeds a recipe (results/model3/search-recipes.txt), chose rotations of up to ±10° (with the ±2 px
    shift kept), as the only recipe whose every seed held the line on every last epoch. A higher peak learning
    rate, smaller batches, lighter or heavier augmentation, weight decay, label smoothing and a rebalanced layout
    moved the result by about as much as another seed does, or lowered it. That recipe held the target on
    twenty seeds of twenty, but with its mean a hair under 99.50 % — no margin.
    The third round, on a GPU with four seeds a recipe and the leaders over ten
    (results/model3/search-recipes-wide.txt), found the margin: the last three epochs train on the digits as
    they are (`--clean-epochs 3`). Rotated and shifted digits teach the net what a digit may look like, but the
    test digits are neither; once the learning rate is low, three epochs on plain digits let the weights and
    the batch-norm statistics settle on the kind of digit the net is judged on, too late in the schedule to
    over-fit them. It led its round by more than a tie, ahead of a higher peak learning rate and light label
    smoothing. Step 4's layout at this budget (results/model3/search-recipes-m4-layout.txt) scored a little
    higher on validation, by less than one seed moves a run; step 3 keeps the layout the exercise builds (the
    two were not tried together). The rest of the recipe stays: a OneCycle learning rate that warms up, peaks
    and anneals to near zero, so that the last epochs settle instead of wandering, and no dropout (`--dropout P`
    puts it after the three blocks past the 1×1).
    A network this small ends about a tenth of a percent above the target, and a seed moves it by about as much,
    so one run proves little: `make seeds` (twenty seeds, RESULTS.md, and ten more that no choice saw) is the
    evidence. `make ablation` changes one thing at a time (RESULTS.md). Without the clean epochs — the same
    twenty seeds, run before this change — every seed still held the line, but the mean final accuracy is a few
    hundredths lower and the test loss higher: the clean epochs are the margin, not the pass. Rotating by ±7°
    instead of ±10° did as well over three seeds, so the wider rotation is not shown to matter. Without
    augmentation the train accuracy climbs above the test accuracy and the test loss rises — the over-fitting
    the original write-up ended on — and two of its three seeds fall under the target; bf16 autocast in the
    forward pass cost nothing measurable (its three seeds ended no lower than the recipe's).
"""
import torch.nn as nn

from common import Targets, conv_bn_relu, gap_head, run_step

TARGETS = Targets(min_test_acc=99.40, max_params=8000, last_epochs=3, max_epochs=15)
DEFAULTS = dict(epochs=15, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, scheduler="onecycle",
                rotate=10.0, shift=2.0, clean_epochs=3, dropout=0.0, widths=(8, 16, 8, 12, 16, 16))


class Net(nn.Module):
    def __init__(self, widths=DEFAULTS["widths"], dropout=DEFAULTS["dropout"]):
        super().__init__()
        a, b, squeeze, c, d, e = widths
        self.features = nn.Sequential(
            conv_bn_relu(1, a),                             # 28 -> 26, RF 3
            conv_bn_relu(a, b, stride=2),                   # 26 -> 12, RF 5: the transition, by stride not pool
            conv_bn_relu(b, squeeze, kernel_size=1),        # 1×1 squeezes channels before the next block
            conv_bn_relu(squeeze, c, dropout=dropout),      # 12 -> 10, RF 9
            conv_bn_relu(c, d, dropout=dropout),            # 10 -> 8,  RF 13
            conv_bn_relu(d, e, dropout=dropout),            # 8 -> 6,   RF 17
            conv_bn_relu(e, 10, dilation=2),                # 6 -> 2,   RF 25: a 3×3 spread over 5×5
        )
        self.head = gap_head(10)

    def forward(self, x):
        return self.head(self.features(x))


if __name__ == "__main__":
    run_step("model3", Net, DEFAULTS, TARGETS, __doc__)
