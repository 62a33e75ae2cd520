"""Step 4 — the limit: fewer than 4,000 parameters, still ≥ 99.4 % test accuracy in 15 epochs.

Target
    Fewer than 4,000 parameters (BatchNorm included), test accuracy ≥ 99.40 % on each of the last 3 of
    15 epochs, on at least 9 of 10 seeds.

Results
    3,915 parameters, receptive field 22; test accuracy 99.53/99.57/99.56 % on the last 3 epochs;
    best train accuracy 99.72 %; 15 epochs at 16.9 s/epoch (median) on cpu (AMD EPYC, 2 threads).
    PASS. Run: `python model4.py --device cpu`, 2026-12-06. (Written by lab/report.py from results/model4/metrics.json.)
    Over 10 seeds: 10/10 seeds met the target (the rule: at least 9 in 10 — met); final test accuracy 99.507 ±
    0.059 % (mean ± std), lowest 99.45 %, lowest of any last-3 epoch 99.44 % (python model4.py --seeds 10
    --jobs 2, cpu (AMD EPYC, 1 thread)).
    Seeds 11–20, which took part in the choice (round 8's net held the line on 8 of them, so the line stayed
    at 5,000 and rounds 9 and 10 followed; round 10's recipe was then confirmed on them): 9/10 seeds met the
    target (the rule: at least 9 in 10 — met); final test accuracy 99.471 ± 0.049 % (mean ± std), lowest
    99.38 %, lowest of any last-3 epoch 99.35 % (python model4.py --seed 11 --seeds 10 --jobs 2 --out
    results/model4/seeds-11-20, cpu (AMD EPYC, 1 thread)).
    Seeds 21–30, which no choice of the recipe saw: 9/10 seeds met the target (the rule: at least 9 in 10 —
    met); final test accuracy 99.471 ± 0.055 % (mean ± std), lowest 99.37 %, lowest of any last-3 epoch
    99.36 % (python model4.py --seed 21 --seeds 10 --jobs 2 --out results/model4/seeds-21-30, cpu (AMD EPYC, 1
    thread)).

Analysis
    What changed from step 3: the head stays; the weights below it are spent another way. Two full 3×3 convolutions
    at full size find the strokes (RF 5) before a max-pool halves the map, as in step 2; after it every 3×3 is
    depthwise-separable — a 3×3 for each channel alone, then a 1×1 that mixes them, about 1/9 + 1/c of a full 3×3's
    weights at c channels (a seventh at 30) — so the middle blocks run at 30 channels where full 3×3s have room for
    12. Each batch norm learns one scale and one shift for its whole layer, not one per channel (`LayerBatchNorm`),
    and a PReLU learns how much of a negative input to pass (1 parameter a layer): the 99 % club's search proposed
    both (PReLU's gain there did not hold over three more seeds; step 4 kept it from round 7), and they give width
    back. The recipe: a peak rate of 0.2, each training image rotated, shifted and zoomed by up to 10 %
    (`--scale 0.1`), the last 5 epochs on the digits as they are.
    What it bought: under 4,000 parameters, the target on 9 of seeds 21–30, which no choice saw — the rule met with
    no seed to spare (seeds 1–10 confirmed the recipe, 11–20 took part in choosing it). The same net without the
    zoom held on 17 of seeds 1–20 (the ablation's row scale-0, made at commit 2f78bf5): it learns the training
    digits 0.2 points better than the test digits, and digits differ in size, which nothing varied before
    (RESULTS.md, "How step 4 was chosen", round 10). The other ingredients' rows were measured on round 5's recipe
    (RESULTS.md).
    Next: `make frontier` draws the whole curve, from a few hundred parameters to 20,000, beside the best public
    results; the 99 % club asks the same question of 99.0 %.
"""
import torch.nn as nn

from common import LayerBatchNorm, Targets, conv_bn_relu, gap_head, run_step, separable_bn_relu

TARGETS = Targets(min_test_acc=99.40, max_params=4000, last_epochs=3, max_epochs=15, min_seed_share=0.9)
DEFAULTS = dict(epochs=15, batch_size=128, lr=0.2, momentum=0.9, nesterov=True, scheduler="onecycle",
                rotate=10.0, shift=2.0, scale=0.1, clean_epochs=5, widths=(6, 12, 30, 30, 32))


class Net(nn.Module):
    def __init__(self, widths=DEFAULTS["widths"]):
        super().__init__()
        a, b, c, d, e = widths
        light = dict(norm=LayerBatchNorm, activation=nn.PReLU)  # one scale and shift a batch norm; a learned slope
        self.features = nn.Sequential(
            conv_bn_relu(1, a, **light),                    # 28 -> 26, RF 3
            conv_bn_relu(a, b, **light),                    # 26 -> 24, RF 5
            nn.MaxPool2d(2),                                # 24 -> 12, RF 6: the transition, as in step 2
            separable_bn_relu(b, c, **light),               # 12 -> 10, RF 10: a 3×3 per channel, then a 1×1
            separable_bn_relu(c, d, **light),               # 10 -> 8,  RF 14
            separable_bn_relu(d, e, dilation=2, **light),   # 8 -> 4,   RF 22: the last 3×3 spread over 5×5
        )
        self.head = gap_head(e)                             # a 1×1 to ten maps, averaged: 10·(e+1) weights

    def forward(self, x):
        return self.head(self.features(x))


if __name__ == "__main__":
    run_step("model4", Net, DEFAULTS, TARGETS, __doc__)
