"""A smoke of the benchmark harness: both pipelines run a few steps and the JSON holds what the README quotes.
No timing is asserted here; `make bench` is where speed is measured."""
import json

from conftest import run_script


def test_bench_smoke_writes_its_json_and_speedup_line(tmp_path, data_dir):
    out = tmp_path / "bench.json"
    result = run_script("lab.bench", "--steps", "5", "--warmup", "2", "--repeats", "2", "--skip-full", "--device",
                        "cpu", "--out", out, data_dir=data_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "speedup vs reference (cpu" in result.stdout
    bench = json.loads(out.read_text())
    for key in ("device", "reference_epoch_s", "project_epoch_s", "speedup", "model3_train_seconds",
                "model3_final_test_acc", "peak_memory_mb"):
        assert key in bench
    assert bench["reference_epoch_s"] > 0 and bench["project_epoch_s"] > 0
    assert abs(bench["speedup"] - bench["reference_epoch_s"] / bench["project_epoch_s"]) < 0.01 * bench["speedup"]
    assert "| pipeline | device |" in bench["table_markdown"]
    assert [row["pipeline"].split(" (")[0] for row in bench["pipelines"]] == [
        "reference", "project", "project, --precision bf16"]  # no eager row off CUDA
    assert all(len(row["rounds_samples_per_s"]) == 2 for row in bench["pipelines"]) and bench["repeats"] == 2


def test_a_row_is_its_median_round():
    from lab import bench
    rounds = [dict(pipeline="p", samples_per_s=rate, peak_memory_mb=memory) for rate, memory in
              ((100.0, 5.0), (300.0, 7.0), (200.0, 6.0))]
    row = bench.median_row(rounds)
    assert row["samples_per_s"] == 200.0 and row["epoch_s"] == 300.0 and row["peak_memory_mb"] == 7.0
    assert row["rounds_samples_per_s"] == [100.0, 300.0, 200.0]
