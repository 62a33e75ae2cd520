"""The four networks: parameter budgets, shapes, and receptive fields computed from the layers themselves."""
import pytest
import torch
import torch.nn as nn

import common
import model1
import model2
import model3
import model4
from conftest import ROOT

STEPS = [model1, model2, model3, model4]


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.__name__)
def test_net_builds_without_arguments_and_outputs_ten_logits(step):
    net = step.Net().eval()
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_parameter_budgets_match_the_exercise():
    assert common.count_params(model3.Net()) < 8000
    assert 1_400_000 <= common.count_params(model1.Net()) < 1_800_000
    assert 300_000 <= common.count_params(model2.Net()) < 500_000
    # ...and each step's own targets say the same, so `make modelN` asserts them
    assert model3.TARGETS.max_params == 8000 and model3.TARGETS.min_test_acc == 99.40
    assert model3.TARGETS.last_epochs == 3 and model3.TARGETS.max_epochs == 15
    assert (model1.TARGETS.min_params, model1.TARGETS.max_params) == (1_400_000, 1_800_000)
    assert (model2.TARGETS.min_params, model2.TARGETS.max_params) == (300_000, 500_000)


def test_step4_is_under_4000_parameters_and_its_targets_say_so():
    """As its recipe builds it: one scale and shift a batch norm, a PReLU after each (model4.DEFAULTS)."""
    net = common.net_of("model4", [])
    assert common.count_params(net) == 3915 < 4000
    assert sum(isinstance(m, common.LayerAffineBatchNorm) for m in net.modules()) == 5
    assert sum(isinstance(m, nn.PReLU) for m in net.modules()) == 5
    assert model4.TARGETS.max_params == 4000 and model4.TARGETS.min_test_acc == 99.40
    assert model4.TARGETS.last_epochs == 3 and model4.TARGETS.max_epochs == 15


def test_step4_sees_most_of_the_digit_before_its_head():
    rows = common.receptive_field(model4.Net())
    assert common.transition_rf(rows) == 5
    assert common.feature_rf(rows) >= 20  # the digit's 20×20 box, which MNIST centres in the 28×28 frame
    assert any(isinstance(m, nn.BatchNorm2d) for m in model4.Net().modules())


@pytest.mark.parametrize("step", [model3, model4], ids=lambda s: s.__name__)
def test_a_step_net_takes_its_widths_as_an_argument(step):
    small = tuple(max(1, w // 2) for w in step.DEFAULTS["widths"])
    assert common.count_params(step.Net(widths=small)) < common.count_params(step.Net()) / 2.5
    assert step.Net(widths=small).eval()(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_count_params_includes_batchnorm():
    block = common.conv_bn_relu(1, 4)
    assert common.count_params(block) == 1 * 4 * 9 + 2 * 4


@pytest.mark.parametrize("step", [model2, model3], ids=lambda s: s.__name__)
def test_skeleton_has_transition_at_rf5_and_reaches_rf22(step):
    rows = common.receptive_field(step.Net())
    assert common.transition_rf(rows) == 5
    assert common.feature_rf(rows) >= 22
    assert any(isinstance(m, nn.BatchNorm2d) for m in step.Net().modules())
    assert not any(isinstance(m, nn.Linear) for m in step.Net().modules()), "the head is a 1×1 conv + GAP"


# Each round of step 4's search on other layouts, and the budget it searched under.
ROUNDS = {"search-recipes-designs.txt": 5000, "search-recipes-under-4000.txt": 4000}


def _designs_screened():
    from lab import search
    return [pytest.param(flags, budget, id=name) for recipes, budget in ROUNDS.items()
            for name, flags in search.read_recipes(ROOT / "results/model4" / recipes)]


@pytest.mark.parametrize("flags, budget", _designs_screened())
def test_every_design_screened_for_step4_is_under_its_budget_and_sees_the_digit(flags, budget):
    """Each net as its recipe builds it (--bn-affine, --activation and the rest of its flags)."""
    import designs
    from harness.cli import build_parser, config_from_args
    parse = build_parser("designs", designs.DEFAULTS, "").parse_args
    net, with_dropout = (common.build_net(designs.Net, config_from_args(parse([*flags, *more])))
                         for more in ([], ["--dropout", "0.1"]))
    rows = common.receptive_field(net)
    assert common.count_params(net) < budget and common.feature_rf(rows) >= 20
    assert net.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    dropped = [m for m in with_dropout.modules() if isinstance(m, nn.Dropout)]
    assert len(dropped) == 2 and not any(isinstance(m, nn.Dropout) for m in net.modules())  # --dropout is honoured


def test_designs_pool_ds_family_is_model4s_own_net():
    import designs
    chosen = "pool_ds-" + ".".join(map(str, model4.DEFAULTS["widths"]))
    torch.manual_seed(0)
    candidate = designs.Net(chosen).state_dict()
    torch.manual_seed(0)
    own = model4.Net().state_dict()
    assert list(candidate) == list(own) and all(torch.equal(candidate[k], own[k]) for k in own)
    # the separable 3×3: in·9 + in·out weights (and batch norm's 2·out), not in·out·9
    assert common.count_params(common.separable_bn_relu(32, 40)) == 32 * 9 + 32 * 40 + 2 * 40


def test_the_shared_block_is_one_set_of_weights_used_three_times():
    import designs
    net = designs.Net("shared-8.16.3")
    uses = list(net.features)[3:]
    convs = [[m for m in use if isinstance(m, nn.Conv2d)] for use in uses]
    norms = [next(m for m in use if isinstance(m, nn.BatchNorm2d)) for use in uses]
    assert len(uses) == 3 and all(len(c) == 2 for c in convs)
    assert all(mine.weight is first.weight for later in convs[1:] for mine, first in zip(later, convs[0]))
    assert len({id(n.weight) for n in norms}) == 3  # each use normalises the maps it gets
    # the weights of one use: a 3×3 of 8, its batch norm, a separable 8 -> 16, one separable 16 -> 16, three
    # batch norms of 16, the head
    assert common.count_params(net) == (8 * 9 + 16) + (8 * 9 + 8 * 16 + 32) + (16 * 9 + 16 * 16) + 3 * 32 + 170
    rows = common.receptive_field(net)
    assert sum(r["params"] for r in rows) == common.count_params(net) and common.feature_rf(rows) == 20
    # a later use's convolutions count nothing (their weights counted at the first use), its batch norm its own
    assert [r["params"] for r in rows if r["layer"].startswith("features.5.")] == [0, 32]


def test_the_direct_layout_is_pool1_ds_with_its_last_two_1x1s_made_one():
    """direct-A.B.C: pool1_ds-A.B.C.D without the last block's 1×1 to D channels, its batch norm and ReLU, and the
    head's 1×1: one 1×1 from C channels to the ten class maps, which the head only averages."""
    import designs
    direct, pool1_ds = designs.Net("direct-8.16.16"), designs.Net("pool1_ds-8.16.16.16")
    assert common.count_params(direct) == common.count_params(pool1_ds) - (16 * 16 + 2 * 16) - 170 + 16 * 10 + 10
    assert not any(isinstance(m, nn.Conv2d) for m in direct.head.modules())
    assert direct.features[-1].out_channels == 10 and not isinstance(direct.features[-1], nn.Sequential)
    rows = common.receptive_field(direct)
    assert common.feature_rf(rows) == common.feature_rf(common.receptive_field(pool1_ds)) == 20
    assert direct.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_the_early_layout_is_pool1_ds_with_the_first_max_pool_before_its_batch_norm():
    """early-A.B.C.D: pool1_ds-A.B.C.D's modules, in the same order but for the max-pool, which comes straight after
    the first convolution, so that its batch norm and ReLU see the 13×13 map."""
    import designs
    torch.manual_seed(0)
    early = designs.Net("early-8.13.13.13")
    torch.manual_seed(0)
    pool1_ds = designs.Net("pool1_ds-8.13.13.13")
    assert [type(m) for m in early.features[0]] == [nn.Conv2d, nn.MaxPool2d, nn.BatchNorm2d, nn.ReLU]
    assert [type(m) for m in pool1_ds.features[:2]] == [nn.Sequential, nn.MaxPool2d]
    assert [p.shape for p in early.parameters()] == [p.shape for p in pool1_ds.parameters()]
    rows, theirs = common.receptive_field(early), common.receptive_field(pool1_ds)
    assert [(r["size"], r["rf"]) for r in rows] == [(r["size"], r["rf"]) for r in theirs]
    assert common.feature_rf(rows) == 20 and sum(r["params"] for r in rows) == common.count_params(early)
    # the same initial weights; with batch norm's statistics as they start (mean 0, variance 1) its map rises, as
    # ReLU does, and a maximum passes through both: pooling first changes nothing
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(early.eval()(x), pool1_ds.eval()(x), atol=1e-6)
    assert [name for name, _, _ in common.feature_maps(early, x[0])][0] == "features.0"


def test_the_late_layout_is_pool1_ds_s_weights_with_the_max_pool_a_block_later():
    import designs
    late, pool1_ds = designs.Net("late-8.13.13.13"), designs.Net("pool1_ds-8.13.13.13")
    assert [p.shape for p in late.parameters()] == [p.shape for p in pool1_ds.parameters()]
    assert isinstance(late.features[2], nn.MaxPool2d) and isinstance(pool1_ds.features[1], nn.MaxPool2d)
    rows, theirs = common.receptive_field(late), common.receptive_field(pool1_ds)
    assert common.feature_rf(rows) == 22 and [r["size"] for r in rows if r["kind"] == "conv"][-1] == 4
    assert sum(r["macs"] for r in rows) > 1.7 * sum(r["macs"] for r in theirs)  # the weights used more often
    assert late.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_the_shuffle_layout_mixes_each_half_apart_then_deals_the_channels_out():
    import designs
    net = designs.Net("shuffle-8.16.16.18")
    blocks = list(net.features)[2:]
    assert all(block[1].groups == 2 and isinstance(block[-1], nn.ChannelShuffle) for block in blocks)
    # a 3×3 of 8; each block a 3×3 per channel and a 1×1 of two halves (in/2 · out weights); batch norm's 2 a
    # channel; the head's full 1×1
    halves = [(8, 16), (16, 16), (16, 18)]
    assert common.count_params(net) == (72 + 16) + sum(9 * i + i * o // 2 + 2 * o for i, o in halves) + 18 * 10 + 10
    rows = common.receptive_field(net)
    assert common.feature_rf(rows) == 20 and sum(r["params"] for r in rows) == common.count_params(net)
    x = torch.arange(4.0).view(1, 4, 1, 1)
    assert nn.ChannelShuffle(2)(x).flatten().tolist() == [0.0, 2.0, 1.0, 3.0]  # each half now holds some of both


def test_the_deep_layout_is_four_separable_3x3s_undilated():
    import designs
    net = designs.Net("deep-8.10.10.11.11")
    convs = [m for m in net.features.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 9 and all(c.dilation == (1, 1) for c in convs)
    # a 3×3 of 8, then four separable blocks (a 3×3 per channel, a 1×1), batch norm's 2 a channel, the head
    blocks = [(8, 10), (10, 10), (10, 11), (11, 11)]
    assert common.count_params(net) == (9 * 8 + 16) + sum(i * 9 + i * o + 2 * o for i, o in blocks) + 11 * 10 + 10
    rows = common.receptive_field(net)
    assert common.feature_rf(rows) == 20 and rows[-3]["size"] == 5


def test_the_mid_layout_puts_a_batch_norm_and_an_activation_between_each_3x3_and_its_1x1():
    import designs
    net, pool1_ds = designs.Net("mid-8.13.13.13"), designs.Net("pool1_ds-8.13.13.13")
    blocks = list(net.features)[2:]
    assert all([type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
               for block in blocks)
    assert common.count_params(net) == common.count_params(pool1_ds) + 2 * (8 + 13 + 13)  # batch norm's 2 a channel
    rows = common.receptive_field(net)
    assert common.feature_rf(rows) == 20 and sum(r["params"] for r in rows) == common.count_params(net)
    # as the recipe builds it: one scale and shift a batch norm, a PReLU for each activation, 3 parameters a block
    built = common.with_bn_affine(common.with_activation(designs.Net("mid-8.13.13.13"), "prelu"), "layer")
    plain = common.with_bn_affine(common.with_activation(designs.Net("pool1_ds-8.13.13.13"), "prelu"), "layer")
    assert common.count_params(built) == common.count_params(plain) + 3 * 3 == 981
    assert sum(isinstance(m, nn.PReLU) for m in built.modules()) == 1 + 2 * 3


def test_the_twopool_layout_is_pool1_ds_s_weights_with_a_max_pool_for_the_dilation():
    import designs
    net, pool1_ds = designs.Net("twopool-8.13.13.13"), designs.Net("pool1_ds-8.13.13.13")
    assert [p.shape for p in net.parameters()] == [p.shape for p in pool1_ds.parameters()]
    assert not any(m.dilation != (1, 1) for m in net.modules() if isinstance(m, nn.Conv2d))
    rows = common.receptive_field(net)
    convs = [r for r in rows if r["kind"] == "conv"]
    assert [r["size"] for r in rows if r["kind"] == "maxpool"] == [13, 5]  # the 9×9 map's last row kept (ceil)
    assert convs[-1]["size"] == 3 and common.feature_rf(rows) == 22
    assert sum(r["macs"] for r in rows) < sum(r["macs"] for r in common.receptive_field(pool1_ds))
    assert net.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_the_res_layout_adds_each_block_s_input_cut_to_its_map_and_no_weight():
    import designs
    torch.manual_seed(0)
    net = designs.Net("res-8.13.13.13")
    torch.manual_seed(0)
    pool1_ds = designs.Net("pool1_ds-8.13.13.13")
    assert [p.shape for p in net.parameters()] == [p.shape for p in pool1_ds.parameters()]
    # the 8-to-13 block has no input of its size to add; the 13-to-13 ones (the last dilated) have
    assert [type(m).__name__ for m in net.features[2:]] == ["Sequential", "Residual", "Residual"]
    rows = common.receptive_field(net)
    assert [(r["size"], r["rf"]) for r in rows] == [(r["size"], r["rf"]) for r in common.receptive_field(pool1_ds)]
    assert common.feature_rf(rows) == 20 and sum(r["params"] for r in rows) == common.count_params(net)
    # each residual block is pool1_ds's block with its input's centre added before the activation
    net.eval(), pool1_ds.eval()
    x = torch.randn(2, 13, 9, 9)
    block, theirs = net.features[4], pool1_ds.features[4]
    assert torch.allclose(block(x), torch.relu(theirs[:-1](x) + x[..., 2:7, 2:7]), atol=1e-6)
    # with --activation the sum goes through the new one; --dropout comes after it, as in pool1_ds's blocks
    assert isinstance(common.with_activation(net, "prelu").features[3].after[0], nn.PReLU)
    assert [type(m) for m in designs.Net("res-8.13.13.13", dropout=0.1).features[3].after] == [nn.ReLU, nn.Dropout]


def test_the_shared_weights_train_as_one_and_save_as_one():
    import designs
    torch.manual_seed(0)
    net = designs.Net("shared-8.16.3")
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    first = net.features[3][0].weight
    before = first.detach().clone()
    for _ in range(2):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(torch.randn(4, 1, 28, 28)), torch.arange(4)).backward()
        optimizer.step()
    assert not torch.equal(first, before)  # trained by the sum of every use's gradient ...
    assert net.features[5][0].weight is first  # ... and still one tensor
    twin = designs.Net("shared-8.16.3")
    twin.load_state_dict(net.state_dict())
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(twin.eval()(x), net.eval()(x)) and twin.features[4][0].weight is twin.features[3][0].weight


@pytest.mark.parametrize("kind, learned", [("channel", lambda c: 2 * c), ("layer", lambda c: 2), ("none", lambda c: 0)])
def test_bn_affine_sets_what_each_batch_norm_learns(kind, learned):
    net = common.with_bn_affine(model4.Net(), kind)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    without_norms = common.count_params(model4.Net()) - 2 * sum(model4.DEFAULTS["widths"])
    assert len(norms) == 5
    assert common.count_params(net) == without_norms + sum(learned(n.num_features) for n in norms)
    rows = common.receptive_field(net)
    assert sum(r["params"] for r in rows) == common.count_params(net)
    assert net.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_layer_affine_batch_norm_is_plain_batch_norm_then_one_scale_and_one_shift(memory_format):
    norm, plain = common.LayerAffineBatchNorm(15), nn.BatchNorm2d(15, affine=False)
    with torch.no_grad():
        norm.scale.fill_(1.5)
        norm.shift.fill_(-0.25)
    x = torch.randn(8, 15, 5, 5).to(memory_format=memory_format)
    twin = x.detach().clone().requires_grad_()
    x.requires_grad_()
    out, normalised = norm(x), plain(twin)
    assert torch.allclose(out, normalised * 1.5 - 0.25, atol=1e-6)  # one pass rounds otherwise than two
    # every gradient as the two passes after the norm would give it (the forward does them in the norm's own)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    ((normalised * 1.5 - 0.25) * weights).sum().backward()
    assert torch.allclose(norm.scale.grad, (normalised * weights).sum(), rtol=1e-4)
    assert torch.allclose(norm.shift.grad, weights.sum(), rtol=1e-4)
    assert torch.allclose(x.grad, twin.grad, atol=1e-5)
    assert torch.allclose(norm.running_mean, plain.running_mean)
    assert torch.allclose(norm.running_var, plain.running_var)
    assert norm.num_batches_tracked == plain.num_batches_tracked == 1 and common.count_params(norm) == 2
    norm.eval(), plain.eval()
    assert torch.allclose(norm(x), plain(x) * 1.5 - 0.25, atol=1e-6)


def test_the_bn_affine_flag_reaches_the_net_built():
    from harness.cli import build_parser, config_from_args
    parse = build_parser("model3", model3.DEFAULTS, "").parse_args
    config = config_from_args(parse(["--bn-affine", "layer"]))
    assert config.bn_affine == "layer" and config_from_args(parse([])).bn_affine == "channel"
    net = common.build_net(model3.Net, config)
    assert sum(isinstance(m, common.LayerAffineBatchNorm) for m in net.modules()) == 7


def test_a_step_s_defaults_may_set_its_batch_norm_activation_and_optimizer():
    """As every other hyper-parameter: a step whose recipe is one scale and shift a batch norm and PReLU builds that
    net from its defaults alone, and its flags still override them."""
    from harness.cli import build_parser, config_from_args
    recipe = {**model3.DEFAULTS, "bn_affine": "layer", "activation": "prelu", "optimizer": "adamw"}
    config = config_from_args(build_parser("model3", recipe, "").parse_args([]))
    assert (config.bn_affine, config.activation, config.optimizer) == ("layer", "prelu", "adamw")
    net = common.build_net(model3.Net, config)
    assert sum(isinstance(m, common.LayerAffineBatchNorm) for m in net.modules()) == 7
    assert sum(isinstance(m, nn.PReLU) for m in net.modules()) == 7
    again = config_from_args(build_parser("model3", recipe, "").parse_args(["--bn-affine", "channel"]))
    assert again.bn_affine == "channel"


@pytest.mark.parametrize("kind, layer, learned", [("relu", nn.ReLU, 0), ("leaky", nn.LeakyReLU, 0),
                                                   ("prelu", nn.PReLU, 1), ("silu", nn.SiLU, 0),
                                                   ("prelu-channel", nn.PReLU, sum(model4.DEFAULTS["widths"]) / 5)])
def test_activation_sets_the_nonlinearity_after_each_batch_norm(kind, layer, learned):
    from harness.cli import build_parser, config_from_args
    flags = ["--activation", kind, "--bn-affine", "channel"]  # batch norm as model4.Net() builds it
    config = config_from_args(build_parser("model4", model4.DEFAULTS, "").parse_args(flags))
    net = common.build_net(model4.Net, config)
    nonlinear = [m for m in net.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.SiLU))]
    assert len(nonlinear) == 5 and all(type(m) is layer for m in nonlinear)
    assert common.count_params(net) == common.count_params(model4.Net()) + 5 * learned
    assert sum(r["params"] for r in common.receptive_field(net)) == common.count_params(net)
    assert net.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    if kind == "prelu-channel":  # a slope for each channel of the layer before
        assert [m.num_parameters for m in nonlinear] == list(model4.DEFAULTS["widths"])
    x = torch.tensor([-2.0, 3.0]).repeat(1, getattr(nonlinear[0], "num_parameters", 1), 1, 1)  # 1×C×1×2
    if kind == "silu":  # x·sigmoid(x): -2 -> -0.238, 3 -> 2.858
        assert torch.allclose(nonlinear[0](x), x / (1 + torch.exp(-x)))
        return
    slope = {"relu": 0.0, "leaky": 0.1}.get(kind, 0.25)  # PReLU's slope as it starts, before it is learned
    assert torch.allclose(nonlinear[0](x), torch.where(x < 0, slope * x, x))
