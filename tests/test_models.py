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
    return [(flags[flags.index("--design") + 1], budget) for recipes, budget in ROUNDS.items()
            for _, flags in search.read_recipes(ROOT / "results/model4" / recipes)]


@pytest.mark.parametrize("design, budget", _designs_screened())
def test_every_design_screened_for_step4_is_under_its_budget_and_sees_the_digit(design, budget):
    import designs
    net = designs.Net(design)
    rows = common.receptive_field(net)
    assert common.count_params(net) < budget and common.feature_rf(rows) >= 20
    assert net.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    dropped = [m for m in designs.Net(design, dropout=0.1).modules() if isinstance(m, nn.Dropout)]
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
