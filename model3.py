"""Step 3 — the skeleton made light: fewer than 8,000 parameters, ≥ 99.4 % test accuracy in 15 epochs.

Target
    Fewer than 8,000 parameters (BatchNorm included), test accuracy ≥ 99.40 % on each of the last 3 of
    15 epochs. The original write-up stopped at 7,838 parameters and 99.22 %, naming over-fitting as the next
    problem; this step goes on and solves it.

Results
    7,970 parameters, receptive field 22; test accuracy 99.41/99.56/99.49 % on the last 3 epochs;
    best train accuracy 99.23 %; 15 epochs at 21.6 s/epoch (median) on cpu (AMD EPYC, 2 threads).
    PASS. Run: `python model3.py`, 2026-11-26. (Written by report.py from results/model3/metrics.json.)

Analysis
    Step 2's skeleton, thinned to 8–16 channels, keeps its shape: two 3×3 convolutions to RF 5, a transition
    (max-pool + 1×1) there, four 3×3 convolutions to RF 22, then a 1×1 convolution and global average pooling.
    Three cheap ingredients go with it: random rotation (±7°) and shift (±2 px) of the training digits; 5 %
    dropout after each block past the transition (not on the two widest maps, where its random masks cost more
    CPU time than their convolutions); and a OneCycle learning rate that warms up, peaks and ends near zero, so
    the last epochs settle instead of wandering. `make ablation` removes each in turn (RESULTS.md): without
    augmentation the train accuracy overtakes the test accuracy and the test loss rises the most — the
    over-fitting the original write-up ended on; without dropout the test loss rises less; with a step schedule
    instead of OneCycle the final accuracy is lower. Each variant alone still met the target on the seed tried:
    on accuracy these differences are close to the seed-to-seed spread, which is why the ablation shows the test
    loss beside it and `make seeds` runs five seeds.
"""
import torch.nn as nn

from common import Targets, conv_bn_relu, gap_head, run_step

TARGETS = Targets(min_test_acc=99.40, max_params=8000, last_epochs=3, max_epochs=15)
DEFAULTS = dict(epochs=15, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, scheduler="onecycle",
                rotate=7.0, shift=2.0, dropout=0.05)


class Net(nn.Module):
    def __init__(self, dropout=DEFAULTS["dropout"]):
        super().__init__()
        self.features = nn.Sequential(
            # No dropout on the two widest maps: its random masks cost more CPU time than all their convolutions.
            conv_bn_relu(1, 8),                      # 28 -> 26, RF 3
            conv_bn_relu(8, 16),                     # 26 -> 24, RF 5
            nn.MaxPool2d(2),                         # 24 -> 12, RF 6: the transition, where edges are seen
            conv_bn_relu(16, 8, kernel_size=1),      # 1×1 squeezes channels before the next block
            conv_bn_relu(8, 12, dropout=dropout),    # 12 -> 10, RF 10
            conv_bn_relu(12, 16, dropout=dropout),   # 10 -> 8,  RF 14
            conv_bn_relu(16, 16, dropout=dropout),   # 8 -> 6,   RF 18
            conv_bn_relu(16, 10),                    # 6 -> 4,   RF 22
        )
        self.head = gap_head(10)

    def forward(self, x):
        return self.head(self.features(x))


if __name__ == "__main__":
    run_step("model3", Net, DEFAULTS, TARGETS, __doc__)
