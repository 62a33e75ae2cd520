"""The published nets of public.py: each as its author described it, to the parameter."""
import pytest
import torch
from conftest import run_script

import common
import public


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
