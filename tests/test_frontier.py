"""frontier.py: the designs scaled to a parameter count, a smoke run on a tiny subset, and its bad input."""
import json

import pytest

import common
from lab import net_of
import designs
from lab import frontier
import model3
import model4
from conftest import assert_clean_failure, run_script

pytestmark = pytest.mark.slow  # make check: not part of the smoke run


def test_a_step_s_points_are_sized_as_its_command_line_builds_its_net():
    """Step 4's own point: its default widths, counted as model4.py builds the net (LayerBatchNorm, PReLU)."""
    (design, flags, params, macs, seeds), = frontier.frontier_points(("model4",), [], [], 0, [1], [])
    assert design == "model4" and flags == ("--widths", ",".join(map(str, model4.DEFAULTS["widths"]))) and seeds == [1]
    assert params == common.count_params(model4.Net()) == 3915
    assert macs == sum(row["macs"] for row in common.receptive_field(model4.Net()))


@pytest.mark.parametrize("step", [model3, model4], ids=lambda s: s.__name__)
def test_widths_are_scaled_to_the_nearest_parameter_count(step):
    for size in (2000, 5000, 20000):
        widths, params = frontier.widths_for(step.Net, step.DEFAULTS["widths"], size)
        assert params == common.count_params(step.Net(widths=widths))
        assert abs(params - size) / size < 0.1
    widths, params = frontier.widths_for(step.Net, step.DEFAULTS["widths"], common.count_params(step.Net()))
    assert widths == step.DEFAULTS["widths"]  # the step's own size is its own net


def test_a_frontier_on_a_tiny_subset_writes_its_three_files_and_reuses_runs(tmp_path, data_dir):
    args = ("lab.frontier", "--sizes", "1000,3000", "--club-sizes", "700", "--seeds", "1", "--club-seeds", "2",
            "--jobs", "2", "--epochs", "5", "--subset", "300", "--out", tmp_path / "f")
    result = run_script(*args, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "f" / "frontier.json").read_text())
    club = [r for r in summary["rows"] if r["flags"] == list(frontier.CLUB[1])]
    layout = [r for r in summary["rows"] if r["line"] == "club" and r not in club]
    others = [r for r in summary["rows"] if r not in club + layout]
    # two sizes and each step's own net, for both designs, the club's layout at 700, and the club's net over its
    # own seeds
    assert sorted({r["design"] for r in others}) == ["model3", "model4"] and len(others) == 6
    assert len(layout) == 1 and abs(layout[0]["params"] - 700) < 70 and layout[0]["seeds"] == 1
    assert layout[0]["params"] == common.count_params(frontier.net_of("designs", layout[0]["flags"]))
    assert summary["club_share"] == 0.9 and summary["club_sizes"] == [700]
    assert len(club) == 1 and club[0]["seeds"] == club[0]["completed"] == 2 and club[0]["seed_list"] == [1, 2]
    assert all(r["completed"] == r["seeds"] and r["epochs"] == 5 and r["subset"] == 300 for r in summary["rows"])
    own = [r for r in summary["rows"] if tuple(r["widths"] or ()) == model4.DEFAULTS["widths"]]
    step4 = net_of("model4", [])  # as its recipe builds it
    assert own and own[0]["params"] == common.count_params(step4)
    assert own[0]["macs"] == sum(row["macs"] for row in common.receptive_field(step4))
    table = (tmp_path / "f" / "frontier.md").read_text()
    assert "| model4 |" in table and "(99 % club)" in table and "JoshWarn/Parameter-Efficient-MNIST" in table
    assert (tmp_path / "f" / "frontier.png").stat().st_size > 10_000
    run = next((tmp_path / "f" / "runs").glob("model4-*/seed-1/metrics.json"))
    before = run.stat().st_mtime_ns
    assert run_script(*args, data_dir=data_dir).returncode == 0
    assert run.stat().st_mtime_ns == before


def test_the_club_layout_scales_its_widths_and_keeps_the_rest_of_its_recipe(monkeypatch):
    widths, flags_for = frontier.club_layout()
    design, flags = frontier.CLUB
    assert widths == (10, 15, 15, 15) and flags_for(widths) == tuple(flags)  # its own widths: its own command line
    monkeypatch.setattr(frontier, "CLUB", ("designs", ("--design", "pool1_ds-8.12.12.12", "--bn-affine", "layer",
                                                       "--lr", "0.2")))
    widths, flags_for = frontier.club_layout()
    assert widths == (8, 12, 12, 12)
    assert flags_for((4, 6, 6, 6)) == ("--design", "pool1_ds-4.6.6.6", "--bn-affine", "layer", "--lr", "0.2")
    small, params = frontier.widths_for(lambda widths: frontier.net_of("designs", list(flags_for(widths))), widths, 500)
    assert abs(params - 500) < 50 and params == common.count_params(
        designs.Net("pool1_ds-" + ".".join(map(str, small)), bn_affine="layer"))


def test_the_club_net_is_built_from_its_own_command_line():
    design, flags = frontier.CLUB
    net = frontier.net_of(design, list(flags))
    assert common.count_params(net) == common.count_params(designs.Net("pool1_ds-10.15.15.15", bn_affine="layer"))
    assert common.count_params(net) == 1218 < common.count_params(frontier.net_of("model4", []))  # below step 4
    wide = frontier.net_of("designs", ["--design", "pool1_ds-10.16.16.16"])
    assert common.count_params(wide) == common.count_params(designs.Net("pool1_ds-10.16.16.16"))
    narrow = frontier.net_of("model4", ["--widths", "3,4,8,8,10", "--epochs", "2"])
    assert common.count_params(narrow) == common.count_params(model4.Net(widths=(3, 4, 8, 8, 10)))
    assert common.count_params(frontier.net_of("model3", [])) == common.count_params(model3.Net())


@pytest.mark.parametrize("args, words", [
    (("--sizes", "0,5000"), "expected parameter counts"), (("--sizes", "big"), "expected parameter counts"),
    (("--sizes", "5000,9999999"), "expected parameter counts"), (("--designs", "model9"), "expected some of"),
    (("--seeds", "0"), "--seeds"),
    (("--epochs", "2"), "--clean-epochs: 5 is more than the 2 epochs"),  # the club's net trains its last 5 clean
])
def test_nonsense_sizes_are_one_line_and_exit_2_and_nothing_is_written(tmp_path, args, words):
    result = run_script("lab.frontier", *args, "--out", tmp_path / "f")
    assert_clean_failure(result, 2, words)
    assert not (tmp_path / "f").exists()


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_run(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_script("lab.frontier", "--sizes", "2000", "--out", blocker / "f")
    assert_clean_failure(result, 2, "cannot write to")


def test_a_point_whose_seeds_did_not_all_complete_is_marked_and_counted_over_all_its_seeds():
    row = dict(design="model3", widths=[1] * 6, flags=["--widths", "1,1,1,1,1,1"], params=449, macs=15484, seeds=3,
               completed=1, mean_final_test_acc=99.5, min_final_test_acc=99.5, max_final_test_acc=99.5,
               min_last3_test_acc=99.45, met=1, met_club=1, device="cpu")
    summary = dict(seeds=3, club_seeds=0, club=None, epochs=15, device="cpu", command="python frontier.py",
                   public=[], rows=[row, dict(row, completed=3, met=3, met_club=3, params=679)])
    lines = frontier.frontier_markdown(summary).splitlines()
    assert "| model3 (1 of 3 seeds completed) | 1,1,1,1,1,1 | 449 |" in lines[4] and "| 1/3 | 1/3 |" in lines[4]
    assert lines[5].startswith("| model3 | 1,1,1,1,1,1 | 679 |") and "| 3/3 | 3/3 |" in lines[5]
