"""Step 4 — the limit: fewer than 5,000 parameters, still ≥ 99.4 % test accuracy in 15 epochs.

Target
    Fewer than 5,000 parameters (BatchNorm included), test accuracy ≥ 99.40 % on each of the last 3 of
    15 epochs, on at least 9 of 10 seeds.

Results
    (written by report.py from results/model4/metrics.json)

Analysis
    (written after the search and the seeds)
"""
import torch.nn as nn

from common import Targets, conv_bn_relu, gap_head, run_step

TARGETS = Targets(min_test_acc=99.40, max_params=5000, last_epochs=3, max_epochs=15)
DEFAULTS = dict(epochs=15, batch_size=128, lr=0.1, momentum=0.9, nesterov=True, scheduler="onecycle",
                rotate=10.0, shift=2.0, dropout=0.0, widths=(6, 12, 8, 12, 12, 14))


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
