"""A smoke of the benchmark harness: both pipelines run a few steps and the JSON holds what the README quotes.
No timing is asserted here; `make bench` is where speed is measured."""
import json
import re

import pytest
from conftest import run_script


@pytest.mark.slow
def test_bench_smoke_writes_its_json_and_speedup_line(tmp_path, data_dir):
    from lab import report
    out = tmp_path / "bench.json"
    result = run_script("lab.bench", "--steps", "5", "--warmup", "2", "--repeats", "2", "--skip-full", "--device",
                        "cpu", "--out", out, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    bench = json.loads(out.read_text())
    assert re.fullmatch(r"cpu \(.+, \d+ threads?\)", bench["device"]), bench["device"]
    assert (bench["steps"], bench["warmup"], bench["repeats"]) == (5, 2, 2)
    assert bench["command"].startswith("python -m lab.bench --steps 5 --warmup 2 --repeats 2 --skip-full")
    rows = bench["pipelines"]
    assert [row["pipeline"].split(" (")[0] for row in rows] == [
        "reference", "project", "tiny", "tiny on 1 thread, before", "tiny on 1 thread"]  # no eager row off CUDA
    # the tiny rows train the 99 % club's net, named with its parameters
    import common
    from lab import bench as bench_module
    club_params = common.count_params(bench_module.club_net())
    assert rows[2]["pipeline"] == f"tiny (the project's pipeline, the 99 % club's net of {club_params:,} parameters)"
    for row in rows:  # each row its median round, every time a positive number of seconds
        rounds = row["rounds_samples_per_s"]
        assert len(rounds) == 2 and all(isinstance(rate, float) and rate > 0 for rate in rounds)
        assert row["samples_per_s"] == sorted(rounds)[1] and row["epoch_s"] == round(60000 / row["samples_per_s"], 2)
        assert isinstance(row["peak_memory_mb"], float) and row["peak_memory_mb"] > 0
    assert (bench["reference_epoch_s"], bench["project_epoch_s"]) == (rows[0]["epoch_s"], rows[1]["epoch_s"])
    assert bench["speedup"] == round(rows[0]["epoch_s"] / rows[1]["epoch_s"], 2) > 0
    assert isinstance(bench["peak_memory_mb"], float) and bench["peak_memory_mb"] > 0
    # --skip-full: no full model3 run, so none of its numbers, rather than made-up ones
    assert [bench[key] for key in ("model3_train_seconds", "model3_final_test_acc", "model3_verdict")] == [None] * 3
    # on a CPU: the test split evaluated whole and in chunks, for model3's net and the club's
    evaluation = bench["evaluation"]
    assert [(row["net"], row["params"], row["chunk"]) for row in evaluation] == [
        ("model3", common.count_params(bench_module.model3.Net()), 256), ("tiny", club_params, 256)]
    for row in evaluation:
        assert row["whole_images_per_s"] > 0 and row["chunked_images_per_s"] > 0
        assert abs(row["ratio"] - row["chunked_images_per_s"] / row["whole_images_per_s"]) <= 0.01
    sentence = report.evaluation_sentence(evaluation)
    section = report.bench_section(tmp_path)
    assert sentence in section
    before, now = rows[3]["samples_per_s"], rows[4]["samples_per_s"]
    assert f"at {now / before:.2f}× its rate before the speed work" in section
    assert f"the club net ({club_params:,} parameters) {evaluation[1]['whole_images_per_s']:,} images/s whole" in sentence
    assert bench["table_markdown"] == report.bench_table(bench)
    for row in rows:
        assert f"| {row['pipeline']} | {bench['device']} | {row['samples_per_s']:,.0f} | {row['epoch_s']:.2f} |" in \
            bench["table_markdown"]
    assert f"speedup vs reference ({bench['device']}): {rows[0]['epoch_s'] / rows[1]['epoch_s']:.1f}x" in result.stdout


def test_a_row_is_its_median_round():
    from lab import bench
    rounds = [dict(pipeline="p", samples_per_s=rate, peak_memory_mb=memory) for rate, memory in
              ((100.0, 5.0), (300.0, 7.0), (200.0, 6.0))]
    row = bench.median_row(rounds)
    assert row["samples_per_s"] == 200.0 and row["epoch_s"] == 300.0 and row["peak_memory_mb"] == 7.0
    assert row["rounds_samples_per_s"] == [100.0, 300.0, 200.0]


def test_the_tiny_rows_time_the_club_net_as_it_trained_before():
    import torch
    from lab import bench
    nets = {}
    for layout in (None, "before"):
        torch.manual_seed(0)
        nets[layout] = bench.club_net(layout)
    norms = [type(m) for m in nets["before"].modules() if isinstance(m, bench.common.LayerBatchNorm)]
    assert norms and set(norms) == {bench.TwoPassLayerBatchNorm}
    x = torch.randn(4, 1, 28, 28)
    assert torch.allclose(nets["before"].train()(x), nets[None].train()(x), atol=1e-5)  # the same net, two ways
