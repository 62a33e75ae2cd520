"""The four networks: parameter budgets, shapes, and receptive fields computed from the layers themselves."""
import functools
import importlib
import json
import re
from contextlib import redirect_stderr
from io import StringIO

import pytest
import torch
import torch.nn as nn

import common
from lab import net_of
import designs
import model1
import model2
import model3
import model4
from conftest import ROOT
from harness import files
from harness.cli import build_parser, config_from_args

STEPS = [model1, model2, model3, model4]


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.__name__)
def test_net_builds_without_arguments_and_outputs_ten_logits(step):
    net = step.Net().eval()
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.committed
def test_parameter_budgets_match_the_exercise():
    assert common.count_params(model3.Net()) < 8000
    assert 1_400_000 <= common.count_params(model1.Net()) < 1_800_000
    assert 300_000 <= common.count_params(model2.Net()) < 500_000
    # ...and each step's own targets say the same, so `make modelN` asserts them
    assert model3.TARGETS.max_params == 8000 and model3.TARGETS.min_test_acc == 99.40
    assert model3.TARGETS.last_epochs == 3 and model3.TARGETS.max_epochs == 15
    assert (model1.TARGETS.min_params, model1.TARGETS.max_params) == (1_400_000, 1_800_000)
    assert (model2.TARGETS.min_params, model2.TARGETS.max_params) == (300_000, 500_000)


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.__name__)
@pytest.mark.committed
def test_a_step_s_net_has_the_parameters_its_docstring_s_results_state(step):
    stated = re.search(r"^Results\n\s+([\d,]+) parameters", step.__doc__, re.MULTILINE)
    assert stated, f"{step.__name__}'s docstring has no Results that state its parameters"
    assert common.count_params(step.Net()) == int(stated[1].replace(",", ""))


# The steps whose run is committed (results/STEP/model.pt and metrics.json).
COMMITTED = [model3, model4]


@pytest.mark.parametrize("step", COMMITTED, ids=lambda s: s.__name__)
@pytest.mark.committed
def test_a_committed_model_pt_loads_strictly_into_today_s_net(step):
    """The weights of the committed run fit Net() key for key and shape for shape: nothing missing, nothing left."""
    folder = ROOT / "results" / step.__name__
    net = step.Net()
    net.load_state_dict(files.load_state_dict(folder / "model.pt"), strict=True)
    assert json.loads((folder / "metrics.json").read_text())["params"] == common.count_params(net)


@pytest.mark.slow
def test_the_committed_model4_scores_what_it_scored_in_today_s_net(mnist):
    """Step 4's Net() is now written with the layers its run trained (LayerBatchNorm, PReLU) where its recipe once
    swapped them in: its committed weights, scored here on the whole test set, give the final accuracy its
    metrics.json reports, so they mean in today's layers what they meant (tests/test_smoke.py scores model3's)."""
    folder = ROOT / "results" / "model4"
    net = model4.Net()
    net.load_state_dict(files.load_state_dict(folder / "model.pt"), strict=True)
    metrics = json.loads((folder / "metrics.json").read_text())
    loader = common.DeviceLoader(*mnist["test"], 1000, "cpu", **metrics["normalisation"])
    _, accuracy, _ = common.evaluate(net, loader)
    assert accuracy == pytest.approx(metrics["final_test_acc"], abs=0.005)


@pytest.mark.committed
def test_step4_is_under_4000_parameters_and_its_targets_say_so():
    """Net() is written with the layers it trains: one scale and shift a batch norm, a PReLU after each."""
    net = model4.Net()
    assert common.count_params(net) == 3915 < 4000
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 5 and all(type(m) is common.LayerBatchNorm for m in norms)
    slopes = [m for m in net.modules() if isinstance(m, nn.PReLU)]
    assert len(slopes) == 5 and all(m.num_parameters == 1 for m in slopes)
    assert not any(isinstance(m, nn.ReLU) for m in net.modules())
    # its command line builds that net, weight for weight
    torch.manual_seed(0)
    built = net_of("model4", []).state_dict()
    torch.manual_seed(0)
    own = model4.Net().state_dict()
    assert list(built) == list(own) and all(torch.equal(built[k], own[k]) for k in own)
    # --no-batchnorm takes its layer batch norms out too: their 2 parameters each go
    bare = net_of("model4", ["--no-batchnorm"])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in bare.modules())
    assert common.count_params(bare) == 3915 - 5 * 2
    assert model4.TARGETS.max_params == 4000 and model4.TARGETS.min_test_acc == 99.40
    assert model4.TARGETS.last_epochs == 3 and model4.TARGETS.max_epochs == 15


@pytest.mark.committed
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
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    # the unit with a lighter norm and a learned activation: one scale and shift, one slope
    light = common.conv_bn_relu(1, 4, norm=common.LayerBatchNorm, activation=nn.PReLU)
    assert [type(m) for m in light] == [nn.Conv2d, common.LayerBatchNorm, nn.PReLU]
    assert common.count_params(light) == 1 * 4 * 9 + 2 + 1


def test_a_separable_unit_is_a_3x3_per_channel_then_a_1x1():
    # the separable 3×3: in·9 + in·out weights (and batch norm's 2·out), not in·out·9
    assert common.count_params(common.separable_bn_relu(32, 40)) == 32 * 9 + 32 * 40 + 2 * 40
    light = common.separable_bn_relu(32, 40, dilation=2, norm=common.LayerBatchNorm, activation=nn.PReLU)
    assert [type(m) for m in light] == [nn.Conv2d, nn.Conv2d, common.LayerBatchNorm, nn.PReLU]
    assert light[0].groups == 32 and light[0].dilation == (2, 2) and light[1].kernel_size == (1, 1)
    assert common.count_params(light) == 32 * 9 + 32 * 40 + 2 + 1


@pytest.mark.parametrize("step", [model2, model3], ids=lambda s: s.__name__)
@pytest.mark.committed
def test_skeleton_has_transition_at_rf5_and_reaches_rf22(step):
    rows = common.receptive_field(step.Net())
    assert common.transition_rf(rows) == 5
    assert common.feature_rf(rows) >= 22
    assert any(isinstance(m, nn.BatchNorm2d) for m in step.Net().modules())
    assert not any(isinstance(m, nn.Linear) for m in step.Net().modules()), "the head is a 1×1 conv + GAP"


# Every round of the searches, as RESULTS.md gives its command: its recipes file (under results/), the script that
# ran it, and the budget it searched under (designs.py's runs are judged by step 4's targets).
ROUNDS = {"model3/search-recipes.txt": ("model3", 8000), "model3/search-recipes-wide.txt": ("model3", 8000),
          "model3/search-recipes-m4-layout.txt": ("model4", 8000), "model4/search-recipes.txt": ("model4", 5000),
          "model4/search-recipes-wide.txt": ("model4", 5000),
          "model4/search-recipes-step3-layout.txt": ("model3", 5000),
          "model4/search-recipes-designs.txt": ("designs", 5000),
          "model4/search-recipes-under-4000.txt": ("designs", 4000),
          "club/search-recipes.txt": ("designs", model4.TARGETS.max_params)}
# The flags the lean exercise removed (ideas that measured no gain: RESULTS.md). --bn-affine stays, in designs.py only.
REMOVED_FLAGS = {"--optimizer", "--weight-decay", "--label-smoothing", "--step-size", "--gamma", "--test-batch-size",
                 "--dropout", "--activation", "--ema", "--teacher", "--precision", "--channels-last",
                 "--no-channels-last"}


def _gone(step, flags):
    """Why today's code cannot build a recorded recipe (a flag or a designs.py family since removed, or a layout its
    step no longer has: model4.py's Net had six widths in step 4's rounds 1 to 4), or None where it can."""
    removed = [flag for flag in flags if flag.split("=")[0] in REMOVED_FLAGS or
               (step != "designs" and flag.split("=")[0] == "--bn-affine")]
    if removed:
        return f"removed flags {removed}"
    if step == "designs":
        family = (flags[flags.index("--design") + 1] if "--design" in flags else designs.DEFAULTS["design"])
        if family.split("-")[0] not in designs.FAMILIES:
            return f"removed family {family}"
    elif "--widths" in flags:
        widths = flags[flags.index("--widths") + 1].split(",")
        if len(widths) != len(importlib.import_module(step).DEFAULTS["widths"]):
            return f"{step}.py's earlier layout of {len(widths)} widths"
    return None


def _recipes(buildable):
    """[(recipes file, recipe, step, budget, flags)] of every round, those today's code builds or the others."""
    from lab import search
    return [(recipes, name, step, budget, flags) for recipes, (step, budget) in ROUNDS.items()
            for name, flags in search.read_recipes(ROOT / "results" / recipes)
            if (_gone(step, flags) is None) == buildable]


def _screened():
    return [pytest.param(step, budget, flags, id=f"{recipes}:{name}")
            for recipes, name, step, budget, flags in _recipes(buildable=True)]


@functools.cache
def _recorded_params():
    """{(script, flags as the tables show them): the parameter counts the search tables recorded for that recipe}."""
    recorded = {}
    for path in ROOT.glob("results/*/search*/*.json"):
        table = json.loads(path.read_text())
        for row in table.get("recipes", ()):
            if "params" in row:  # a recipe none of whose runs completed recorded no count
                recorded.setdefault((table["step"], row["flags"]), set()).add(row["params"])
    return recorded


@pytest.mark.committed
def test_enough_recorded_recipes_are_still_built_today_to_check_them():
    """The recipes the test below builds: step 3's rounds, step 3's layout under 5,000 and the club's pool1_ds nets,
    the club's own among them; a rule of _gone that grew too wide would leave it nothing to check."""
    kept = _recipes(buildable=True)
    steps = [step for _, _, step, _, _ in kept]
    assert len(kept) >= 35 and steps.count("model3") >= 20 and steps.count("designs") >= 12
    from lab import frontier
    assert (frontier.CLUB[0], list(frontier.CLUB[1])) in [(step, flags) for _, _, step, _, flags in kept]


@pytest.mark.committed
def test_every_recorded_recipe_left_out_is_one_today_s_code_refuses():
    """What _gone leaves out, the script's own parser refuses (exit status 2): nothing it could build is skipped."""
    built = []
    for recipes, name, step, _, flags in _recipes(buildable=False):
        with redirect_stderr(StringIO()), pytest.raises(SystemExit) as refused:
            net_of(step, flags)
        if refused.value.code != 2:
            built.append(f"{recipes}:{name}")
    assert not built and len(_recipes(buildable=False)) > 0


@pytest.mark.parametrize("step, budget, flags", _screened())
@pytest.mark.committed
def test_every_recipe_screened_is_built_today_as_it_was_measured_under_its_budget_and_sees_the_digit(step, budget,
                                                                                                      flags):
    """Each net as its recipe's command line builds it today: the parameters its search table recorded, under the
    round's budget, the digit's 20×20 box seen before the head, ten logits."""
    net = net_of(step, flags)
    params = common.count_params(net)
    assert _recorded_params().get((step, " ".join(flags))) == {params}
    assert params < budget and common.feature_rf(common.receptive_field(net)) >= 20
    assert net.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("kind, norm, learned", [("channel", nn.BatchNorm2d, lambda c: 2 * c),
                                                 ("layer", common.LayerBatchNorm, lambda c: 2)])
def test_designs_bn_affine_sets_what_each_batch_norm_learns(kind, norm, learned):
    net = designs.Net("pool1_ds-10.15.15.15", bn_affine=kind)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 4 and all(type(m) is norm for m in norms)
    # a 3×3 of 10; separable 10 -> 15, 15 -> 15, 15 -> 15 (a 3×3 per channel, a 1×1); the head's 1×1 and its bias
    convolutions = 9 * 10 + (9 * 10 + 10 * 15) + 2 * (9 * 15 + 15 * 15) + 15 * 10 + 10
    assert common.count_params(net) == convolutions + sum(learned(n.num_features) for n in norms)
    rows = common.receptive_field(net)
    assert sum(r["params"] for r in rows) == common.count_params(net) and common.feature_rf(rows) == 20
    assert net.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_the_designs_bn_affine_flag_reaches_the_net_built():
    parse = build_parser("designs", designs.DEFAULTS, "").parse_args
    config = config_from_args(parse(["--bn-affine", "layer"]))
    assert config.net_kwargs == {"design": "pool1_ds-10.15.15.15", "bn_affine": "layer"}
    assert config_from_args(parse([])).net_kwargs["bn_affine"] == "channel"
    net = common.build_net(designs.Net, config)
    assert sum(type(m) is common.LayerBatchNorm for m in net.modules()) == 4
    assert common.count_params(net) == 1218  # the 99 % club's net (RESULTS.md)
    default = net_of("designs", [])
    assert not any(isinstance(m, common.LayerBatchNorm) for m in default.modules())
    assert sum(type(m) is nn.BatchNorm2d for m in default.modules()) == 4
    bare = net_of("designs", ["--bn-affine", "layer", "--no-batchnorm"])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in bare.modules()) and common.count_params(bare) == 1218 - 8


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_layer_batch_norm_is_plain_batch_norm_then_one_scale_and_one_shift(memory_format):
    norm, plain = common.LayerBatchNorm(15), nn.BatchNorm2d(15, affine=False)
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
