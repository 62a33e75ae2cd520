"""Step 4 — the limit: fewer than 5,000 parameters, still ≥ 99.4 % test accuracy in 15 epochs.

Target
    Fewer than 5,000 parameters (BatchNorm included), test accuracy ≥ 99.40 % on each of the last 3 of
    15 epochs, on at least 9 of 10 seeds.

Results
    4,748 parameters, receptive field 21; test accuracy 99.54/99.50/99.47 % on the last 3 epochs;
    best train accuracy 99.29 %; 15 epochs at 6.9 s/epoch (median) on cpu (AMD EPYC, 2 threads).
    PASS. Run: `python model4.py --device cpu`, 2026-11-27. (Written by report.py from results/model4/metrics.json.)
    Over 10 seeds: 6/10 seeds met the target; final test accuracy 99.446 ± 0.049 % (mean ± std), lowest
    99.38 %, lowest of any last-3 epoch 99.34 % (python model4.py --seeds 10 --jobs 2, cpu (AMD EPYC, 1
    thread)).

Analysis
    Step 3's recipe and its first five blocks, thinned to 6–14 channels; only the end changes. Step 3's last
    dilated 3×3 convolution made one map per class, which costs 90 weights for every channel it reads; here the
    last 3×3, still dilated (RF 21), keeps a few channels on a 4×4 map, and the head averages each and weighs
    them into the ten classes, 10 weights a channel. The parameters saved there go to the middle blocks.
    Every choice was made on the validation split, never on the test set (`make search STEP=model4`, RESULTS.md):
    twenty designs — widths of this layout, step 3's layout thinned under 5,000, and changes of recipe — first over
    one seed, then the leaders over three, ranked by validation accuracy on the last 3 epochs. The search's lesson
    is how flat the ground is at this size: every design between about 3,900 and 5,000 parameters ended within a
    few hundredths of a point of the others on validation, about as far apart as two seeds of one design, so
    the chosen widths (6,12,8,12,12,14: the best mean over three seeds) won by a hair, not by a margin.
    Two recipe changes that a small net might want did not help: lighter augmentation (±5° or ±7°, ±1 px)
    raised the train accuracy and lowered the validation accuracy, and smaller batches (twice the steps) did not
    lift the leaders; a higher peak learning rate lowered it.
    The ten seeds (above, and RESULTS.md) are the verdict, and it is a miss: the target asks for nine seeds in
    ten, and this net holds every last epoch on the line on six. Its mean ends a few hundredths of a point above
    99.40 with a spread about as wide, so a seed that dips under the line in some last epoch is common — as on
    validation, where none of the leaders held it on all three seeds. The target is not loosened; the
    search table and the frontier say where it stands. `make ablation STEP=model4` (one change at a time, three
    seeds) shows why this net is not over-fitting's victim, as step 3 was: without augmentation its train
    accuracy climbs and its test loss rises, yet its test accuracy hardly moves — at this size the net is
    short of capacity, not of regularisation. Lighter augmentation ended all three of its seeds above the
    line on the test set, a hint and no more: on validation it lost for another design, three seeds are within
    one seed's spread of the recipe, and a choice made from the test set would be no choice at all. Screening
    it on validation for these widths is the next experiment.
"""
import torch.nn as nn

from common import Targets, conv_bn_relu, gap_head, run_step

TARGETS = Targets(min_test_acc=99.40, max_params=5000, last_epochs=3, max_epochs=15)
DEFAULTS = dict(epochs=15, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, scheduler="onecycle",
                rotate=10.0, shift=2.0, dropout=0.0, widths=(6, 12, 6, 12, 14, 14))


class Net(nn.Module):
    def __init__(self, widths=DEFAULTS["widths"], dropout=DEFAULTS["dropout"]):
        super().__init__()
        a, b, squeeze, c, d, e = widths
        self.features = nn.Sequential(
            conv_bn_relu(1, a),                             # 28 -> 26, RF 3
            conv_bn_relu(a, b, stride=2),                   # 26 -> 12, RF 5: the transition, by stride
            conv_bn_relu(b, squeeze, kernel_size=1),        # 1×1 squeezes channels before the next block
            conv_bn_relu(squeeze, c, dropout=dropout),      # 12 -> 10, RF 9
            conv_bn_relu(c, d, dropout=dropout),            # 10 -> 8,  RF 13
            conv_bn_relu(d, e, dilation=2),                 # 8 -> 4,   RF 21: the last 3×3 spread over 5×5
        )
        self.head = gap_head(e)                             # average first, then 10·(e+1) weights to the classes

    def forward(self, x):
        return self.head(self.features(x))


if __name__ == "__main__":
    run_step("model4", Net, DEFAULTS, TARGETS, __doc__)
