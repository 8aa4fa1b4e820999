"""The step-time harness runs end to end on a very small model (one repetition, no timing claims)."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_step_time_harness_compares_both_frameworks(tmp_path):
    out = tmp_path / "result.json"
    command = [
        sys.executable,
        os.path.join(REPO, "benchmarks", "step_time.py"),
        "--preset=tiny",
        '--model_overrides={"embed_dim": 32, "depth": 2, "num_heads": 2}',
        "--target_length=64",
        "--batch_size=2",
        "--trainable_blocks=2",
        "--repetitions=1",
        "--peak_tflops=1",
        f"--out={out}",
    ]
    subprocess.run(command, check=True, cwd=REPO, timeout=300)
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"jax/2", "torch/2"}
    for key, run in result["runs"].items():
        assert len(run["wall_s"]) == 1 and run["median_s"] > 0, key
        assert run["peak_rss_mb"] > 0 and run["model_gflops"] > 0, key
    assert result["runs"]["jax/2"]["compile_s"] > 0
    assert result["runs"]["jax/2"]["over_full_step"] == 1.0
    assert result["runs"]["jax/2"]["jax_over_torch"] > 0
    # The analytic model FLOPs agree with XLA's own count of the compiled step (which also
    # counts element-wise work) to within a factor that catches a wrong formula.
    run = result["runs"]["jax/2"]
    assert 0.5 < run["model_gflops"] * 1e9 / run["xla_flops"] < 1.5


def test_host_sync_benchmark_prints_both_rates():
    command = [
        sys.executable,
        os.path.join(REPO, "benchmarks", "host_sync.py"),
        "--steps=2",
        "--repetitions=2",
        "--batch_size=4",
    ]
    out = subprocess.run(command, check=True, cwd=REPO, timeout=300, capture_output=True, text=True)
    assert "| after every step |" in out.stdout and "| on logging steps only |" in out.stdout
