"""Step 3 — the skeleton made light: fewer than 8,000 parameters, ≥ 99.4 % test accuracy in 15 epochs.

Target
    Fewer than 8,000 parameters (BatchNorm included), test accuracy ≥ 99.40 % on each of the last 3 of
    15 epochs. The original write-up stopped at 7,838 parameters and 99.22 %, naming over-fitting as the next
    problem; this step goes on and solves it.

Results
    7,970 parameters, receptive field 25; test accuracy 99.61/99.57/99.57 % on the last 3 epochs;
    best train accuracy 99.70 %; 15 epochs at 7.9 s/epoch (median) on cpu (AMD EPYC, 2 threads).
    PASS. Run: `python model3.py --device cpu`, 2026-11-27. (Written by lab/report.py from results/model3/metrics.json.)
    Over 20 seeds: 20/20 seeds met the target (the rule: every seed — met); final test accuracy 99.529 ±
    0.039 % (mean ± std), lowest 99.46 %, lowest of any last-3 epoch 99.44 % (python model3.py --seeds 20
    --jobs 2, cpu (AMD EPYC, 1 thread)).
    Seeds 21–30, which no choice of the recipe saw: 10/10 seeds met the target (the rule: every seed — met);
    final test accuracy 99.538 ± 0.051 % (mean ± std), lowest 99.43 %, lowest of any last-3 epoch 99.43 %
    (python model3.py --seed 21 --seeds 10 --jobs 2 --out results/model3/seeds-21-30, cpu (AMD EPYC, 1
    thread)).

Analysis
    What changed from step 2: the same skeleton at 8–16 channels, and two changes to its layout. The transition,
    still at RF 5, halves the map with a stride-2 convolution instead of a max-pool, so the net never builds a
    24×24×16 map and needs half the multiply-adds (`rf.md` counts them layer by layer); the last 3×3 is dilated,
    its taps spread over 5×5, which takes the receptive field to 25 at no cost in parameters. Around it, a recipe
    chosen on a validation split, never on the test set: rotations up to ±10° and shifts up to ±2 px done on the
    device, a OneCycle learning rate that ends near zero, and the last 3 epochs on the digits as they are
    (`--clean-epochs 3`), so the weights and batch-norm statistics settle on the kind of digit the net is judged on.
    What it bought: the target under 8,000 parameters on every seed of the Results above. Augmentation ends the
    over-fitting the original write-up stopped at (without it, the train accuracy ends far above the test accuracy,
    the test loss ends higher, and seeds fall under the line); the clean epochs are the margin, not the pass
    (RESULTS.md: the ablation of step 3).
    Next: the net ends about a tenth of a percent above the line and a seed moves it as much, so one run proves
    little — `make seeds` is the evidence. The search, round by round, is in RESULTS.md ("How step 3's recipe was
    chosen"). Step 4 asks how far below 8,000 parameters the line still holds.
"""
import torch.nn as nn

from common import Targets, conv_bn_relu, gap_head, run_step

TARGETS = Targets(min_test_acc=99.40, max_params=8000, last_epochs=3, max_epochs=15)
DEFAULTS = dict(epochs=15, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, scheduler="onecycle",
                rotate=10.0, shift=2.0, clean_epochs=3, widths=(8, 16, 8, 12, 16, 16))


class Net(nn.Module):
    def __init__(self, widths=DEFAULTS["widths"]):
        super().__init__()
        a, b, squeeze, c, d, e = widths
        self.features = nn.Sequential(
            conv_bn_relu(1, a),                             # 28 -> 26, RF 3
            conv_bn_relu(a, b, stride=2),                   # 26 -> 12, RF 5: the transition, by stride not pool
            conv_bn_relu(b, squeeze, kernel_size=1),        # 1×1 squeezes channels before the next block
            conv_bn_relu(squeeze, c),                       # 12 -> 10, RF 9
            conv_bn_relu(c, d),                             # 10 -> 8,  RF 13
            conv_bn_relu(d, e),                             # 8 -> 6,   RF 17
            conv_bn_relu(e, 10, dilation=2),                # 6 -> 2,   RF 25: a 3×3 spread over 5×5
        )
        self.head = gap_head(10)

    def forward(self, x):
        return self.head(self.features(x))


if __name__ == "__main__":
    run_step("model3", Net, DEFAULTS, TARGETS, __doc__)
