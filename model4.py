"""Step 4 — the limit: fewer than 5,000 parameters, still ≥ 99.4 % test accuracy in 15 epochs.

Target
    Fewer than 5,000 parameters (BatchNorm included), test accuracy ≥ 99.40 % on each of the last 3 of
    15 epochs, on at least 9 of 10 seeds.

Results
    4,976 parameters, receptive field 21; test accuracy 99.54/99.53/99.54 % on the last 3 epochs;
    best train accuracy 99.31 %; 15 epochs at 7.8 s/epoch (median) on cpu (AMD EPYC, 2 threads).
    PASS. Run: `python model4.py --device cpu`, 2026-11-27. (Written by report.py from results/model4/metrics.json.)
    Over 10 seeds: 7/10 seeds met the target; final test accuracy 99.464 ± 0.080 % (mean ± std), lowest
    99.32 %, lowest of any last-3 epoch 99.31 % (python model4.py --seeds 10 --jobs 2, cpu (AMD EPYC, 1
    thread)).

Analysis
    Step 3's recipe and its first five blocks, thinned to 6–14 channels; only the end changes. Step 3's last
    dilated 3×3 convolution made one map per class, which costs 90 weights for every channel it reads; here the
    last 3×3, still dilated (RF 21), keeps a few channels on a 4×4 map, and the head averages each and weighs
    them into the ten classes, 10 weights a channel. The parameters saved there go to the middle blocks.
    Every choice was made on the validation split, never on the test set (RESULTS.md lists every table). On 2
    CPU cores (`make search STEP=model4`), twenty designs — widths of this layout, step 3's layout thinned under
    5,000, and changes of recipe — first over one seed, then the leaders over three. Then a fourth round on a
    GPU (results/model4/search-recipes-wide.txt): the chosen widths with one change of recipe at a time —
    the last N epochs trained on the digits as they are (`--clean-epochs`), lighter augmentation, label
    smoothing, a lower or higher learning rate, weight decay, momentum — and the widths that came closest, four
    seeds each, then the five leaders over ten. Every round teaches the same thing: the ground is flat at this
    size. The three best of the ten-seed round ended within a hundredth of a point of each other on validation,
    far less than one seed moves a run, and the rule that picks (the best mean; a tie goes to the best worst
    epoch) took widths 6,12,6,12,14,14: a 1×1 squeeze down to 6 channels pays for a wider fifth block, 4,976
    parameters.
    Label smoothing and a lower learning rate lowered validation accuracy, weight decay left it as it was; lighter
    augmentation and clean last epochs lift the train accuracy well above the validation accuracy and the
    latter only a little — this net is short of capacity, not of regularisation.
    The ten seeds (above, and RESULTS.md) are the verdict, and it is still a miss: the target asks for nine
    seeds in ten, and this net holds every last epoch on the line on fewer; ten further seeds that no choice
    saw did better, not enough to lift the twenty to nine in ten (RESULTS.md). The ablation (`make ablation
    STEP=model4`, one change at a time) keeps the previous widths' ten seeds as a row of their own, so the step
    from one choice to the next is measured on the same seeds. Lighter augmentation (±5°, ±1 px) again ended
    its three seeds above the line on the test set; over ten seeds on validation it ranked below the choice,
    so it stays a hint. The target is not loosened; the search tables
    and the frontier say where the line lies: step 4's layout holds it on all three of the frontier's seeds
    from about 8,000 parameters, as step 3's does.
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
