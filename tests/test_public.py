"""The published nets of public.py: each as its author described it, to the parameter."""
import pytest
import torch
from conftest import run_script

import common
import public
from harness.errors import UsageError


@pytest.mark.parametrize("name", list(public.NETS))
def test_each_net_has_its_published_parameter_count_and_a_receptive_field_table(name):
    published = public.NETS[name].params
    net = public.Net(name)
    assert type(net) is public.NETS[name].net_class and common.count_params(net) == published
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    rows = common.receptive_field(net)  # follows every layer, WholeMapNorm included
    assert sum(row["params"] for row in rows) == published


def test_ruslangrimovs_last_separable_3x3_is_one_layer_used_three_times():
    net = public.Net("ruslangrimov-1936")
    depthwise = [m for m in net.features if isinstance(m, torch.nn.Conv2d) and m.groups == 26]
    pointwise = [m for m in net.features if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)
                 and m.in_channels == 26]
    assert len(depthwise) == len(pointwise) == 3
    assert len({id(m.weight) for m in depthwise}) == len({id(m.weight) for m in pointwise}) == 1
    assert len({id(m.bias) for m in pointwise}) == 1


def test_whole_map_norm_normalises_each_image_over_all_its_channels_and_positions():
    norm = public.WholeMapNorm()
    x = torch.randn(4, 3, 5, 5) * 3 + 2
    y = norm(x)
    assert torch.allclose(y.mean((1, 2, 3)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(y.var((1, 2, 3), unbiased=False), torch.ones(4), atol=1e-3)
    assert common.count_params(norm) == 2


@pytest.mark.parametrize("name, line", [("woolly-of-cv-3762", 99.40), ("ruslangrimov-1936", 99.0),
                                        ("joshwarn-697", 99.0)])
def test_each_net_is_judged_at_its_own_line_with_at_most_its_published_parameters(name, line):
    from harness.cli import build_parser, config_from_args
    config = config_from_args(build_parser("public", public.DEFAULTS, "").parse_args(["--net", name]))
    targets = public.targets(config)
    assert (targets.min_test_acc, targets.max_params, targets.min_seed_share) == (line, public.NETS[name].params + 1, 0.9)


def test_an_unknown_net_is_one_line_and_exit_2():
    result = run_script("public.py", "--net", "lenet")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "joshwarn-697" in result.stderr


# ---------------------------------------------------------------------------------------------------------------------
# The authors' own recipes: flags of public.py only, each off unless given.

def _config(*flags, defaults=public.DEFAULTS):
    from harness.cli import build_parser, config_from_args
    return config_from_args(build_parser("public", defaults, "").parse_args([str(f) for f in flags]))


@pytest.mark.parametrize("name", list(public.NETS))
def test_each_author_s_own_recipe_is_flags_public_py_takes(name):
    config = _config("--net", name, *public.OWN_RECIPES[name].split())
    assert config.clean_epochs == 0 and config.epochs <= public.targets(config).max_epochs
    assert config.init == "xavier"
    assert (config.optimizer, config.scheduler) == {"woolly-of-cv-3762": ("sgd", "piecewise"),
                                                    "ruslangrimov-1936": ("adam", "none"),
                                                    "joshwarn-697": ("adamw", "plateau")}[name]


def test_the_own_recipes_flags_are_not_the_steps():
    import model4
    from harness.cli import quiet_parser
    with pytest.raises(UsageError, match="unrecognized arguments: --optimizer adam"):
        quiet_parser(model4.DEFAULTS).parse_args(["--optimizer", "adam"])
    assert _config(defaults=model4.DEFAULTS).optimizer == "sgd"  # the Config's default: the steps' runs as they were


@pytest.mark.parametrize("flags, words", [
    (["--scheduler", "piecewise"], "--lr-knots"), (["--lr-knots", "0:1,15:0"], "--lr-knots"),
    (["--scheduler", "plateau"], "--val N"), (["--scheduler", "piecewise", "--lr-knots", "1:1,15:0"], "from epoch 0"),
    (["--scheduler", "piecewise", "--lr-knots", "0:1,8:0.1,4:0"], "rising epochs"), (["--augment-p", "0"], "(0, 1]"),
    (["--brightness", "1"], "[0, 1)"), (["--weight-decay", "-1"], "≥ 0")])
def test_an_own_recipe_flag_out_of_place_is_refused_in_words(flags, words):
    from harness.cli import config_from_args, quiet_parser
    with pytest.raises(UsageError) as refused:
        config_from_args(quiet_parser(public.DEFAULTS).parse_args(flags))
    assert words in str(refused.value) and "\n" not in str(refused.value)


def test_the_piecewise_schedule_gives_each_epoch_its_rate_on_the_line_through_the_knots():
    config = _config(*public.OWN_RECIPES["woolly-of-cv-3762"].split())
    net = public.Net()
    optimizer, scheduler, every = common.make_optimizer_and_scheduler(net, config, 100)
    rates = []
    for _ in range(15):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert every == "epoch" and rates == pytest.approx([0.05, 0.075, 0.1, 0.085, 0.07, 0.055, 0.04, 0.025, 0.01,
                                                        0.00875, 0.0075, 0.00625, 0.005, 0.005 * 2 / 3, 0.005 / 3])
    assert optimizer.param_groups[0]["momentum"] == 0.95 and not optimizer.param_groups[0]["nesterov"]


def test_the_plateau_schedule_cuts_the_rate_by_4_after_50_epochs_without_a_lower_validation_loss():
    """JoshWarn's 697 recipe (Keras' patience 50, factor 0.25, a floor of 2.5e-5), whatever PyTorch counts."""
    config = _config(*public.OWN_RECIPES["joshwarn-697"].split())
    optimizer, scheduler, every = common.make_optimizer_and_scheduler(public.Net("joshwarn-697"), config, 10)
    assert every == "validation" and isinstance(optimizer, torch.optim.AdamW)
    scheduler.step(1.0)
    for _ in range(49):
        scheduler.step(1.0)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    scheduler.step(1.0)  # the 50th epoch without a lower loss, as Keras counts them
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0025)
    for _ in range(50 * 4):
        scheduler.step(1.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2.5e-5)  # 0.01 / 4**4 would be below the floor


def test_xavier_init_draws_every_convolution_and_dense_weight_and_zeroes_their_biases():
    config = _config("--net", "joshwarn-697", "--init", "xavier")
    torch.manual_seed(0)
    default = public.Net("joshwarn-697")
    torch.manual_seed(0)
    net = common.build_net(public.Net, config)
    layers = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert all(m.bias is None or not m.bias.any() for m in layers)
    assert not torch.equal(layers[0].weight, default.features[0].weight)  # drawn again, after PyTorch's


def test_brightness_and_contrast_reach_about_augment_p_of_the_images_and_leave_the_others_as_they_are():
    images = torch.randint(0, 256, (2000, 28, 28), dtype=torch.uint8)
    labels = torch.zeros(2000, dtype=torch.long)
    plain = common.DeviceLoader(images, labels, 2000, "cpu", 0.0, 1.0)
    lit = common.DeviceLoader(images, labels, 2000, "cpu", 0.0, 1.0, augment_p=0.5, brightness=0.2, contrast=0.2,
                              seed=3)
    (x, _), (y, _) = next(iter(plain)), next(iter(lit))
    same = (x == y).flatten(1).all(1)
    assert 0.45 < same.float().mean() < 0.55 and y.min() >= 0 and y.max() <= 1


def test_moves_with_augment_p_reach_about_that_share_of_the_images():
    images = torch.zeros(2000, 28, 28, dtype=torch.uint8)
    images[:, 10:18, 12:16] = 255
    labels = torch.zeros(2000, dtype=torch.long)
    plain = common.DeviceLoader(images, labels, 2000, "cpu", 0.0, 1.0)
    moved = common.DeviceLoader(images, labels, 2000, "cpu", 0.0, 1.0, rotate_degrees=7, shift_pixels=2.52,
                                scale=0.09, augment_p=0.5, seed=3)
    (x, _), (y, _) = next(iter(plain)), next(iter(moved))
    assert 0.45 < (x == y).flatten(1).all(1).float().mean() < 0.55
