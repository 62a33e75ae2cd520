"""receptive_field checked against PyTorch itself — each layer's output shape against a forward pass, its
multiply-adds against torch's FlopCounterMode, its receptive field against the gradient of its output positions on a
net of positive weights — for every step's net and the layers a learner may try; a layer it cannot follow is
refused by name."""
import re
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import common
from lab import net_of
import designs
import model1
import model2
import model3
import model4
from conftest import ROOT
from harness.errors import UsageError

# The padding="same" net has an even kernel on purpose (1 before, 2 after); torch warns that it may copy the input.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")


class Blocks(nn.Module):
    """A learner's own container: its layers registered in the order its forward uses them."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.LeakyReLU(0.1)),
                                     nn.Sequential(nn.Conv2d(8, 8, 3, groups=8, dilation=2), nn.Conv2d(8, 16, 1),
                                                   nn.BatchNorm2d(16), nn.PReLU(16), nn.Dropout2d(0.1)),
                                     nn.Sequential(nn.MaxPool2d(3, stride=1, dilation=2), nn.GroupNorm(4, 16),
                                                   nn.GELU(), nn.Identity())])
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16 * 6 * 6, 10))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def keeps_the_map():
    """A convolution followed by every kind of layer that leaves the map as it is."""
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.LeakyReLU(), nn.PReLU(), nn.ELU(), nn.GELU(), nn.SiLU(),
                         nn.Mish(), nn.Sigmoid(), nn.Tanh(), nn.Hardswish(), nn.ReLU6(), nn.Softmax2d(),
                         nn.BatchNorm2d(4), nn.GroupNorm(2, 4), nn.InstanceNorm2d(4, affine=True),
                         nn.LayerNorm([4, 26, 26]), nn.LocalResponseNorm(2), nn.Dropout(0.1), nn.Dropout2d(0.1),
                         nn.AlphaDropout(0.1), nn.ChannelShuffle(2), nn.Identity(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 13 * 13, 10))


def tied():
    """A 3×3 used twice: two modules that hold one weight, which counts once, where first used."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 10))
    net[5].weight = net[2].weight
    return net


# name: (the net, its input's height and width)
NETS = {
    "model1": (model1.Net, (28, 28)),
    "model2": (model2.Net, (28, 28)),
    "model2-no-batchnorm": (lambda: common.without_batchnorm(model2.Net()), (28, 28)),
    "model3": (model3.Net, (28, 28)),
    "model4": (model4.Net, (28, 28)),  # its layer batch norms and PReLUs are layers that keep the map
    "designs-default": (designs.Net, (28, 28)),
    "designs-pool1_ds": (lambda: designs.Net("pool1_ds-10.16.16.16"), (28, 28)),
    "designs-club": (lambda: net_of("designs", ["--design", "pool1_ds-10.15.15.15", "--bn-affine", "layer"]),
                     (28, 28)),  # the 99 % club's net, one scale and shift a batch norm
    "padding-same": (lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding="same"),
        nn.Conv2d(4, 4, 4, padding="same"),                             # an even kernel: 1 before, 2 after
        nn.Conv2d(4, 6, (3, 5), padding="same", dilation=(1, 2)),
        nn.Conv2d(6, 6, 3, padding="valid"), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10)), (28, 28)),
    "ceil-mode": (lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3),                                             # 28 -> 26
        nn.MaxPool2d(3, 2, ceil_mode=True),                             # 26 -> 13 (12 without ceil_mode)
        nn.AvgPool2d(2, 2, padding=1, ceil_mode=True),                  # 13 -> 7 (8 but for PyTorch's rule)
        nn.Conv2d(4, 4, 3),                                             # 7 -> 5
        nn.MaxPool2d(2, 2, padding=1, ceil_mode=True),                  # 5 -> 3 (4 but for PyTorch's rule)
        nn.Flatten(), nn.Linear(4 * 3 * 3, 10)), (28, 28)),
    "non-square": (lambda: nn.Sequential(
        nn.Conv2d(1, 4, (3, 5), stride=(2, 1)),                         # 28×28 -> 13×24
        nn.MaxPool2d((2, 3), stride=(2, 3)),                            # -> 6×8
        nn.AvgPool2d((3, 1)),                                           # -> 2×8 (stride = kernel)
        nn.Conv2d(4, 8, (1, 3), groups=4, dilation=(1, 2)),             # -> 2×4
        nn.Flatten(), nn.Linear(8 * 2 * 4, 10)), (28, 28)),
    "non-square-input": (lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2), nn.Conv2d(4, 4, 3, padding=(0, 1)), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 10)), (28, 20)),
    "adaptive-max-1": (lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4, 10)), (28, 28)),
    "tied-weights": (tied, (28, 28)),
    "own-container": (Blocks, (28, 28)),
    "keeps-the-map": (keeps_the_map, (28, 28)),
}


def built(name):
    make, size = NETS[name]
    torch.manual_seed(0)
    net = make().eval()
    return net, size, common.receptive_field(net, input_size=size)


def outputs_by_layer(net, rows, x):
    """Each row's layer's output in a forward pass of `x`."""
    modules, outputs = dict(net.named_modules()), {}
    hooks = [modules[row["layer"]].register_forward_hook(
        lambda module, args, output, layer=row["layer"]: outputs.__setitem__(layer, output)) for row in rows]
    try:
        net(x)
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


@pytest.mark.parametrize("name", NETS)
def test_each_layers_output_size_is_the_forward_passs(name):
    net, (h, w), rows = built(name)
    windows = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Linear)
    assert [row["layer"] for row in rows] == [n for n, m in net.named_modules() if isinstance(m, windows)]
    outputs = outputs_by_layer(net, rows, torch.zeros(2, 1, h, w))
    for row in rows:
        shape = (row["channels"],) if row["kind"] == "linear" else (
            row["channels"], row["height"].size, row["width"].size)
        assert tuple(outputs[row["layer"]].shape[1:]) == shape, row["layer"]


@pytest.mark.parametrize("name", NETS)
def test_each_layers_multiply_adds_are_half_torchs_flops(name):
    """FlopCounterMode counts 2 FLOPs a multiply-add for convolutions and matrix products, and none for pooling."""
    net, (h, w), rows = built(name)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, 1, h, w))
    flops = {module: sum(by_op.values()) for module, by_op in counter.get_flop_counts().items()}
    for row in rows:
        assert flops.get(f"{type(net).__name__}.{row['layer']}", 0) == 2 * row["macs"], row["layer"]
    assert flops["Global"] == 2 * sum(row["macs"] for row in rows) > 0
    assert sum(row["params"] for row in rows) == common.count_params(net)  # every layer's, BatchNorm's included


def positive_twin(net):
    """`net` with every weight positive and every max-pool an average pool of the same windows (a max passes its
    gradient to one input of its window, an average to all): the input pixels an output's gradient reaches are
    then exactly the ones it sees."""
    for parent in net.modules():
        for key, child in parent.named_children():
            if isinstance(child, nn.MaxPool2d):
                assert child.dilation in (1, (1, 1)), "no average pool has a dilation"
                setattr(parent, key, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
            elif isinstance(child, nn.AdaptiveMaxPool2d):
                setattr(parent, key, nn.AdaptiveAvgPool2d(child.output_size))
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.fill_(1.0 / parameter[0].numel() if parameter.dim() > 1 else 0.5)
    return net.double().eval()


def extent(gradient):
    """(height, width) of the smallest box around the input pixels a gradient reaches."""
    reached = gradient.abs().sum(dim=(0, 1)) > 0
    sides = []
    for axis in (1, 0):
        where = reached.any(dim=axis).nonzero()
        sides.append(int(where.max() - where.min() + 1))
    return tuple(sides)


# The nets whose receptive fields are measured: not own-container (no average pool stands in for its dilated max-pool)
# nor keeps-the-map (whose normalisations' statistics reach every pixel). A padded or ceil_mode net's whole-map layers
# also see padding, which no gradient reaches, so only its windows are measured (each net's input holds a window).
MEASURED = [name for name in NETS if name not in ("own-container", "keeps-the-map")]
PADDED = {"padding-same", "ceil-mode", "non-square-input"}


@pytest.mark.slow
@pytest.mark.parametrize("name", MEASURED)
def test_each_layers_receptive_field_is_what_its_gradient_reaches(name):
    """Every output position of a small map is measured, the middle one of a larger map (it sees no padding): the
    largest box is the layer's receptive field."""
    net, size, rows = built(name)
    net, padded = positive_twin(net), name in PADDED
    x = torch.ones(1, 1, *size, dtype=torch.float64, requires_grad=True)
    outputs = outputs_by_layer(net, rows, x)
    for row in rows:
        output, whole_map = outputs[row["layer"]], row["kind"] in ("gap", "global maxpool", "linear")
        if padded and whole_map:
            continue
        if output.dim() == 2:
            positions = [output[0]]
        elif output.shape[2] * output.shape[3] <= 64:
            positions = [output[0, :, i, j] for i in range(output.shape[2]) for j in range(output.shape[3])]
        else:
            positions = [output[0, :, output.shape[2] // 2, output.shape[3] // 2]]
        boxes = [extent(torch.autograd.grad(p.sum(), x, retain_graph=True)[0]) for p in positions]
        assert max(boxes) == (row["height"].rf, row["width"].rf), row["layer"]


@pytest.mark.parametrize("step", ["model1", "model2", "model3", "model4", "model2-no-batchnorm"])
@pytest.mark.committed
def test_the_committed_rf_tables_are_what_receptive_field_writes_today(step):
    """Each step's rf.md, written by its run, byte for byte (no "3×5" cell where both sides agree)."""
    net = common.without_batchnorm(model2.Net()) if step == "model2-no-batchnorm" else NETS[step][0]()
    text = (ROOT / "results" / step / "rf.md").read_text()
    assert common.rf_markdown(common.receptive_field(net), text.splitlines()[0][2:]) == text


def test_padding_same_keeps_the_size_and_an_even_kernel_pads_one_more_after():
    rows = built("padding-same")[2]
    assert [(r["size"], r["rf"], r["padding"]) for r in rows[:4]] == [
        (28, 3, "same"), (28, 6, "same"), (28, "8×14", "same"), (26, "10×16", "valid")]


def test_ceil_mode_rounds_up_but_no_window_starts_in_the_right_padding():
    rows = built("ceil-mode")[2]
    assert [r["size"] for r in rows] == [26, 13, 7, 5, 3, 1]
    assert [r["rf"] for r in rows[:5]] == [3, 5, 7, 15, 19]


def test_non_square_layers_are_tracked_side_by_side_and_shown_as_height_by_width():
    rows = built("non-square")[2]
    assert [(r["kernel"], r["stride"], r["size"], r["jump"], r["rf"]) for r in rows[:4]] == [
        ("3×5", "2×1", "13×24", "2×1", "3×5"), ("2×3", "2×3", "6×8", "4×3", "5×7"),
        ("3×1", "3×1", "2×8", "12×3", "13×7"), ("1×3", 1, "2×4", "12×3", "13×19")]
    assert rows[3]["dilation"] == "1×2" and rows[3]["macs"] == 2 * 4 * 8 * 1 * 3
    text = common.rf_markdown(rows, "non-square")
    assert "| 0 | conv | 3×5 | 2×1 | 0 | 1 | 13×24 | 2×1 | 3×5 | 4 |" in text
    assert "Receptive field 13×19 at the last convolution or pooling window" in text


def test_global_pooling_is_followed_and_pooling_to_more_than_one_position_refused_by_name():
    assert [r["kind"] for r in built("adaptive-max-1")[2]] == ["conv", "global maxpool", "linear"]
    for pool in (nn.AdaptiveAvgPool2d(3), nn.AdaptiveMaxPool2d((2, 7)), nn.AdaptiveAvgPool2d((None, 1))):
        with pytest.raises(common.CannotFollow, match=re.escape(
                f"receptive_field cannot follow features.1 ({type(pool).__name__}): it pools to")):
            common.receptive_field(features(pool))


def test_a_dense_layer_sees_what_the_whole_map_before_it_sees():
    # 28 -> 9 positions 3 apart, each seeing 2: together pixels 0..25 of 28, not all 28
    net = nn.Sequential(nn.Conv2d(1, 2, 2, stride=3), nn.Flatten(), nn.Linear(2 * 9 * 9, 10))
    assert [r["rf"] for r in common.receptive_field(net)] == [2, 2 + 8 * 3]


def features(*layers):
    return nn.Sequential(OrderedDict(features=nn.Sequential(nn.Conv2d(1, 4, 3), *layers)))


class Halve(nn.Module):
    def forward(self, x):
        return x[..., ::2, ::2]


@pytest.mark.parametrize("layer", [nn.Upsample(scale_factor=2), nn.UpsamplingNearest2d(scale_factor=2),
                                   nn.ConvTranspose2d(4, 4, 2), nn.PixelShuffle(2), nn.PixelUnshuffle(2),
                                   nn.LPPool2d(2, 2), nn.FractionalMaxPool2d(2, output_size=5), nn.MaxUnpool2d(2),
                                   nn.ZeroPad2d(1), nn.ReflectionPad2d(1), nn.Unflatten(1, (2, 2)), nn.GLU(),
                                   nn.Conv1d(4, 4, 3), nn.MaxPool1d(2), nn.AvgPool3d(2), Halve()],
                         ids=lambda layer: type(layer).__name__)
def test_a_layer_that_changes_the_map_unknown_to_it_is_refused_by_name(layer):
    with pytest.raises(common.CannotFollow, match=re.escape(
            f"receptive_field cannot follow features.1 ({type(layer).__name__}): it knows Conv2d, MaxPool2d")):
        common.receptive_field(features(layer, nn.Conv2d(4, 4, 3)))
    assert issubclass(common.CannotFollow, UsageError)  # a run of such a net ends in that one line, exit status 2


@pytest.mark.parametrize("net, words", [
    (features(nn.Linear(26, 10)), "receptive_field cannot follow features.1 (Linear): it takes 26 inputs, but the "
                                  "map before it holds 4×26×26 (is an nn.Flatten missing?)"),
    (features(nn.MaxPool2d(13), nn.Conv2d(4, 4, 3)),
     "receptive_field cannot follow features.2 (Conv2d): its window spans 3 positions, more than the 2 it gets"),
])
def test_numbers_it_cannot_know_are_refused_with_the_layer_named(net, words):
    with pytest.raises(common.CannotFollow, match=re.escape(words)):
        common.receptive_field(net)


def test_a_map_too_small_for_a_layer_is_refused_by_name():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.Conv2d(2, 2, 3, dilation=2)))
    with pytest.raises(common.CannotFollow, match=re.escape("cannot follow 1.0 (Conv2d): its window spans "
                                                            "5 positions, more than the 4 it gets")):
        common.receptive_field(net, input_size=6)


def test_rf_of_stacked_3x3_convs_and_a_pool_worked_by_hand():
    # 3x3 -> RF 3; 3x3 -> 5; pool 2/2 -> 6, jump 2; 3x3 -> 6 + 2*2 = 10; sizes 28 -> 26 -> 24 -> 12 -> 10
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3))
    rows = common.receptive_field(net)
    assert [r["rf"] for r in rows] == [3, 5, 6, 10]
    assert [r["size"] for r in rows] == [26, 24, 12, 10]
    assert [r["jump"] for r in rows] == [1, 1, 2, 2]
    # multiply-adds per image: output pixels × (in × k × k) per output channel × out channels; a pool has none
    assert [r["macs"] for r in rows] == [26 * 26 * 2 * 9, 24 * 24 * 2 * 2 * 9, 0, 10 * 10 * 2 * 2 * 9]


def test_rf_with_stride_padding_and_dilation_worked_by_hand():
    # 3x3 stride 2 pad 1: 28 -> 14, RF 3, jump 2; dilated 3x3 (d=2) adds (3-1)*2*2 = 8 -> RF 11, size 14 -> 10
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.Conv2d(2, 2, 3, dilation=2),
                        nn.AdaptiveAvgPool2d(1))
    rows = common.receptive_field(net)
    assert [(r["size"], r["jump"], r["rf"]) for r in rows[:2]] == [(14, 2, 3), (10, 2, 11)]
    assert rows[2]["kind"] == "gap" and rows[2]["rf"] == 11 + 9 * 2 and rows[2]["size"] == 1


def test_a_weight_used_twice_counts_once_where_first_used_and_works_at_each_use():
    rows = built("tied-weights")[2]
    # the first 3×3 and its bias; the tied 3×3 and its batch norm; at its second use only that use's batch norm
    assert [r["params"] for r in rows] == [4 * 9 + 4, 4 * 4 * 9 + 2 * 4, 2 * 4, 0, 4 * 10 + 10]
    assert [r["macs"] for r in rows[:3]] == [26 * 26 * 4 * 9, 24 * 24 * 4 * 4 * 9, 22 * 22 * 4 * 4 * 9]
    assert [r["rf"] for r in rows[:3]] == [3, 5, 7]


def test_rf_table_counts_batchnorm_with_its_convolution_and_renders():
    rows = common.receptive_field(model3.Net())
    assert sum(r["params"] for r in rows) == common.count_params(model3.Net())
    text = common.rf_markdown(rows, "model3")
    assert "| features.0.0 | conv | 3 |" in text and "transition (first shrinking of the map) at RF 5" in text
