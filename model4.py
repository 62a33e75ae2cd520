"""Step 4 — the limit: fewer than 5,000 parameters, still ≥ 99.4 % test accuracy in 15 epochs.

Target
    Fewer than 5,000 parameters (BatchNorm included), test accuracy ≥ 99.40 % on each of the last 3 of
    15 epochs, on at least 9 of 10 seeds.

Results
    4,966 parameters, receptive field 22; test accuracy 99.57/99.59/99.58 % on the last 3 epochs;
    best train accuracy 99.69 %; 15 epochs at 11.6 s/epoch (median) on cpu (AMD EPYC, 2 threads).
    PASS. Run: `python model4.py --device cpu`, 2026-11-27. (Written by lab/report.py from results/model4/metrics.json.)
    Over 10 seeds: 10/10 seeds met the target (the rule: at least 9 in 10 — met); final test accuracy 99.541 ±
    0.028 % (mean ± std), lowest 99.50 %, lowest of any last-3 epoch 99.46 % (python model4.py --seeds 10
    --jobs 2, cpu (AMD EPYC, 1 thread)).

Analysis
    What changed from step 3: the recipe and the head stay; the weights below the head are spent another way. Two
    full 3×3 convolutions at full size find the strokes (RF 5) before a max-pool halves the map, as in step 2; after
    it every 3×3 is depthwise-separable — a 3×3 for each channel alone, then a 1×1 that mixes them, about 9/c of a
    full 3×3's weights at c channels — so the middle blocks run at 32–40 channels where full 3×3s have room for
    12–14. The last 5 epochs train on the digits as they are (`--clean-epochs 5`): augmentation helps a net this
    small early and costs it the last epochs.
    What it bought: under 5,000 parameters, the target on the seeds of the Results above. Four rounds of widths and
    recipes with full 3×3s had ended on flat ground; this layout won round 5 on the validation split (RESULTS.md,
    "How step 4 was chosen", tells every round). The ablation there shows each ingredient's share.
    Next: is this the limit? Round 6 thinned the same layout under 4,000 parameters; its choice on validation
    (3,872 parameters) fell under the line in a last epoch on more than one seed of ten (the ablation's row
    round-6-net). Round 7 spent what the 99 % club's search found (one scale and shift a batch norm, PReLU) on
    width under 4,000, and round 8 trained that net at twice the peak rate: it held the line on nine test seeds of
    the first ten but on eight of the ten after (the row round-8-net and the sentence under it), so the line
    stays at 5,000. `make frontier` draws the whole curve, from a few hundred parameters
    to 20,000, beside the best public results.
"""
import torch.nn as nn

from common import Targets, conv_bn_relu, gap_head, run_step, separable_bn_relu

TARGETS = Targets(min_test_acc=99.40, max_params=5000, last_epochs=3, max_epochs=15, min_seed_share=0.9)
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
        self.head = gap_head(e)                             # a 1×1 to ten maps, averaged: 10·(e+1) weights

    def forward(self, x):
        return self.head(self.features(x))


if __name__ == "__main__":
    run_step("model4", Net, DEFAULTS, TARGETS, __doc__)
