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


def test_step4_is_under_5000_parameters_and_its_targets_say_so():
    assert common.count_params(model4.Net()) < 5000
    assert model4.TARGETS.max_params == 5000 and model4.TARGETS.min_test_acc == 99.40
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


def test_the_design_chosen_in_round_5_is_model4s_own_net():
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


def test_layer_affine_batch_norm_is_plain_batch_norm_then_one_scale_and_one_shift():
    norm, plain = common.LayerAffineBatchNorm(4), nn.BatchNorm2d(4, affine=False)
    with torch.no_grad():
        norm.scale.fill_(1.5)
        norm.shift.fill_(-0.25)
    x = torch.randn(8, 4, 5, 5)
    assert torch.allclose(norm(x), plain(x) * 1.5 - 0.25)
    assert torch.equal(norm.running_mean, plain.running_mean) and common.count_params(norm) == 2


def test_the_bn_affine_flag_reaches_the_net_built():
    from harness.cli import build_parser, config_from_args
    config = config_from_args(build_parser("model4", model4.DEFAULTS, "").parse_args(["--bn-affine", "layer"]))
    assert config.bn_affine == "layer"
    net = common.build_net(model4.Net, config)
    assert sum(isinstance(m, common.LayerAffineBatchNorm) for m in net.modules()) == 5


@pytest.mark.parametrize("kind, layer, learned", [("relu", nn.ReLU, 0), ("leaky", nn.LeakyReLU, 0),
                                                   ("prelu", nn.PReLU, 1)])
def test_activation_sets_the_nonlinearity_after_each_batch_norm(kind, layer, learned):
    from harness.cli import build_parser, config_from_args
    config = config_from_args(build_parser("model4", model4.DEFAULTS, "").parse_args(["--activation", kind]))
    net = common.build_net(model4.Net, config)
    nonlinear = [m for m in net.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU, nn.PReLU))]
    assert len(nonlinear) == 5 and all(type(m) is layer for m in nonlinear)
    assert common.count_params(net) == common.count_params(model4.Net()) + 5 * learned
    assert sum(r["params"] for r in common.receptive_field(net)) == common.count_params(net)
    assert net.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    slope = {"relu": 0.0, "leaky": 0.1, "prelu": 0.25}[kind]  # PReLU's slope as it starts, before it is learned
    assert torch.allclose(nonlinear[0](torch.tensor([-2.0, 3.0])), torch.tensor([-2.0 * slope, 3.0]))
