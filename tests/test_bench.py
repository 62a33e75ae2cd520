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
    import common
    from lab import bench as bench_module
    params = {net: common.count_params(make_net()) for net, make_net in bench_module.MAKE_NET.items()}
    assert [(row["kind"], row["net"]) for row in rows] == [  # no eager row off CUDA
        ("reference", "model3"), ("project", "model3"), ("reference", "model4"), ("project", "model4"),
        ("reference", "club"), ("project", "club"), ("project-1-thread", "club")]
    assert rows[6]["pipeline"] == (f"project on 1 thread (as a sweep runs it), the 99 % club's net "
                                   f"({params['club']:,} parameters)")
    assert rows[2]["pipeline"].startswith("reference (DataLoader + PIL transforms, 2 workers), step 4's net")
    for row in rows:  # each row its median round, every time a positive number of seconds
        rounds = row["rounds_samples_per_s"]
        assert len(rounds) == 2 and all(isinstance(rate, float) and rate > 0 for rate in rounds)
        assert row["samples_per_s"] == sorted(rounds)[1] and row["epoch_s"] == round(60000 / row["samples_per_s"], 2)
        assert isinstance(row["peak_memory_mb"], float) and row["peak_memory_mb"] > 0
        assert f"({params[row['net']]:,} parameters)" in row["pipeline"]
    assert (bench["reference_epoch_s"], bench["project_epoch_s"]) == (rows[0]["epoch_s"], rows[1]["epoch_s"])
    for net, at in (("model3", 0), ("model4", 2), ("club", 4)):  # each net: its reference row over its project row
        assert bench["speedups"][net] == round(rows[at]["epoch_s"] / rows[at + 1]["epoch_s"], 2) > 0
    assert bench["speedup"] == bench["speedups"]["model3"]
    assert isinstance(bench["peak_memory_mb"], float) and bench["peak_memory_mb"] > 0
    # --skip-full: no full runs, so none of their numbers, rather than made-up ones
    assert bench["full_runs"] == []
    # on a CPU: the test split evaluated whole and in chunks, for model3's net and the club's
    evaluation = bench["evaluation"]
    assert [(row["net"], row["params"], row["chunk"]) for row in evaluation] == [
        ("model3", params["model3"], 256), ("club", params["club"], 256)]
    for row in evaluation:
        assert row["whole_images_per_s"] > 0 and row["chunked_images_per_s"] > 0
        assert abs(row["ratio"] - row["chunked_images_per_s"] / row["whole_images_per_s"]) <= 0.01
    sentence = report.evaluation_sentence(evaluation)
    section = report.bench_section(tmp_path)
    assert sentence in section
    assert f"the club's net trained at {rows[6]['samples_per_s'] / rows[5]['samples_per_s']:.2f}× its rate" in section
    assert f"the club net ({params['club']:,} parameters) {evaluation[1]['whole_images_per_s']:,} images/s whole" in sentence
    assert bench["table_markdown"] == report.bench_table(bench)
    for row in rows:
        assert f"| {row['pipeline']} | {bench['device']} | {row['samples_per_s']:,.0f} | {row['epoch_s']:.2f} |" in \
            bench["table_markdown"]
    assert (f"speedup vs reference ({bench['device']}): step 3's net {bench['speedups']['model3']:.1f}x, step 4's net "
            f"{bench['speedups']['model4']:.1f}x, the 99 % club's net {bench['speedups']['club']:.1f}x") in result.stdout
    assert f"step 4's net **{bench['speedups']['model4']:.1f}×**" in section


def test_a_row_is_its_median_round():
    from lab import bench
    rounds = [dict(pipeline="p", samples_per_s=rate, peak_memory_mb=memory) for rate, memory in
              ((100.0, 5.0), (300.0, 7.0), (200.0, 6.0))]
    row = bench.median_row(rounds)
    assert row["samples_per_s"] == 200.0 and row["epoch_s"] == 300.0 and row["peak_memory_mb"] == 7.0
    assert row["rounds_samples_per_s"] == [100.0, 300.0, 200.0]
