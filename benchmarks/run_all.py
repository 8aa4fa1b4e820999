"""Regenerates the benchmark results tables of benchmarks/README.md in one command.

    python benchmarks/run_all.py            # about 15 min on 2 idle cores
    python benchmarks/run_all.py --quick    # tiny model only, 1 repetition (a check, not a result)

Runs, in this order: the peak FLOP/s of the machine; the step-time comparison and the
progressive-freezing sweep (0, 2, 4, 6 and all trainable blocks) for the tiny model and for
ViT-B at 1024 x 128, in float32, and in bfloat16 where the CPU has native bf16 (AVX-512 BF16
or AMX); then the front end's and the data pipeline's own benchmarks (owned by those areas,
called as they are). ``benchmarks/results.json`` keeps the latest run of every machine
(CPU model, cores and ISA features); a run replaces that machine's entry and leaves the
others, and the block of benchmarks/README.md between the ``benchmarks:results`` markers
shows them all, newest first. The load average before and after every measurement is
recorded with it: on a shared machine the numbers mean little above ~1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from typing import Any

import peak_flops
import step_time

from uamix_jax import xla_setup

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
README = os.path.join(HERE, "README.md")  # benchmarks/README.md
RESULTS = os.path.join(HERE, "results.json")
TABLE_START, TABLE_END = "<!-- benchmarks:results -->", "<!-- /benchmarks:results -->"
FREEZING_SWEEP = [0, 2, 4, 6, 12]
# (preset, batch, repetitions): ViT-B fwd+bwd is seconds per step on 2 cores. Medians of
# 3 and 5 moved by 10-20% between runs on a shared 2-core VM: more repetitions steady them.
FULL_RUNS = [("tiny", 4, 9), ("base", 2, 5)]
QUICK_RUNS = [("tiny", 2, 1)]
# The other areas' input-side benchmarks, called with their own flags: (script, full, quick).
INPUT_BENCHMARKS = {
    "fbank": ("fbank_speed.py", [], ["--seconds_per_case=0.5"]),
    "pipeline": ("pipeline_speed.py", [], ["--workers", "0", "--batches=2"]),
}


def machine() -> dict[str, Any]:
    """CPU model, cores, ISA features, library versions, date."""
    import jax
    import torch

    info = peak_flops.lscpu()
    return {
        "cpu": info.get("Model name"),
        "cores": os.cpu_count(),
        "features": peak_flops.cpu_features(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def input_side(quick: bool) -> dict[str, str]:
    """Output of each input-side benchmark (its last lines), or why it did not run."""
    out = {}
    for name, (script, full_args, quick_args) in INPUT_BENCHMARKS.items():
        path = os.path.join(HERE, script)
        if not os.path.exists(path):
            out[name] = f"not run: benchmarks/{script} does not exist"
            continue
        done = subprocess.run(
            [sys.executable, path, *(quick_args if quick else full_args)],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        text = done.stdout if done.returncode == 0 else f"failed ({done.returncode}): {done.stderr}"
        out[name] = "\n".join(text.strip().splitlines()[-12:])
    return out


def step_rows(result: dict[str, Any], peak_gflops: float) -> list[str]:
    """Markdown rows of one ``step_time.compare`` result, one per trainable-block count."""
    rows = []
    name = (
        f"{step_time.model_name(result['model'])}, batch {result['batch_size']}, {result['dtype']}"
    )
    blocks = sorted({int(key.split("/")[1]) for key in result["runs"]})
    for k in blocks:
        ours, theirs = result["runs"][f"jax/{k}"], result["runs"][f"torch/{k}"]
        fastest = {key: min(run["wall_s"]) for key, run in (("ours", ours), ("theirs", theirs))}
        full = {
            framework: min(result["runs"][f"{framework}/{blocks[-1]}"]["wall_s"])
            for framework in ("jax", "torch")
        }
        rows.append(
            f"| {name} | {k} | {ours['median_s']:.2f} ({fastest['ours']:.2f}) | "
            f"{theirs['median_s']:.2f} ({fastest['theirs']:.2f}) | "
            f"**{ours['median_s'] / theirs['median_s']:.2f}** ({fastest['ours'] / fastest['theirs']:.2f}) | "
            f"{result['batch_size'] / ours['median_s']:.2f} | "
            f"{ours['model_gflops'] / ours['median_s'] / peak_gflops:.0%} "
            f"({ours['model_gflops'] / fastest['ours'] / peak_gflops:.0%}) | "
            f"{ours['over_full_step']:.2f} ({fastest['ours'] / full['jax']:.2f}) | "
            f"{theirs['over_full_step']:.2f} ({fastest['theirs'] / full['torch']:.2f}) | "
            f"{ours['compile_s']:.0f} | {ours['xla_temp_mb']:.0f} | "
            f"{ours['peak_rss_mb']:.0f} / {theirs['peak_rss_mb']:.0f} | "
            f"{result['load_before'][0]:.1f}-{result['load_after'][0]:.1f} |"
        )
    return rows


def machine_name(m: dict[str, Any]) -> str:
    """'AMD EPYC, 2 cores; avx2, fma': what tells one benchmark machine from another."""
    return f"{m['cpu']}, {m['cores']} cores; {', '.join(k for k, v in m['features'].items() if v)}"


def render(machines: list[dict[str, Any]]) -> str:
    """The results block: one section per machine, newest run first."""
    ordered = sorted(machines, key=lambda run: run["machine"]["date"], reverse=True)
    return "\n".join(render_machine(run) for run in ordered)


def render_machine(results: dict[str, Any]) -> str:
    """One machine's block: machine line, peak, step table, input side."""
    m = results["machine"]
    lines = [
        f"#### {machine_name(m)}",
        "",
        f"Measured {m['date']}, Python {m['python']}, JAX {m['jax']}, PyTorch {m['torch']}, by "
        "`python benchmarks/run_all.py`.",
        "",
    ]
    for dtype, peak in results["peak"].items():
        torch_gflops = peak["measured"]["by_framework"]["torch"]
        lines.append(
            f"Peak {dtype}: measured {peak['measured']['gflops']:.0f} GFLOP/s (best of a "
            f"{peak['measured']['size']}^3 matmul: JAX {peak['measured']['by_framework']['jax']:.0f}, "
            f"PyTorch {'not run' if torch_gflops is None else f'{torch_gflops:.0f}'}); nominal "
            f"{peak['nominal']['gflops']:.0f} GFLOP/s = {peak['nominal']['cores']} cores x "
            f"{peak['nominal']['clock_ghz']:.2f} GHz x {peak['nominal']['vector_bits'] // 32} fp32 "
            f"lanes{' x 2 (bf16 pairs)' if dtype == 'bfloat16' else ''} x 2 (FMA) x "
            f"{peak['nominal']['fma_units']} FMA units. MFU uses {peak_used(peak):.0f}, the larger."
        )
    lines += [
        "",
        "The nominal clock is what the VM reports (boost is not visible); a matmul measured on a "
        "busy machine understates the peak, hence the larger of the two. Each cell gives the "
        "median over the interleaved steps and, in brackets, the fastest step (the least "
        "disturbed one when the machine is shared; ratios in brackets are of fastest steps).",
        f"Our step ran with XLA_FLAGS=`{results['xla_flags']}`; PyTorch with {m['cores']} "
        f"threads; both with {host_env_text(results['steps'][0].get('host_env', {}))}.",
        "",
        "| step | trainable blocks | ours s/step | PyTorch s/step | ours / PyTorch | ours clips/s "
        "| ours MFU | ours / full step | PyTorch / full step | compile s | XLA temp MB "
        "| peak RSS MB ours / PyTorch | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results["steps"]:
        lines += step_rows(result, peak_used(results["peak"][result["dtype"]]))
    lines += ["", "Input side (the front end's and the data pipeline's own benchmarks):", ""]
    for name, text in results["input"].items():
        lines += [f"- {name}:", "", "```", text, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def host_env_text(host_env: dict[str, str]) -> str:
    """The allocator settings both workers ran with, for the table's caption."""
    if not host_env:
        return "the system's allocator settings"
    return " ".join(f"{name}=`{value}`" for name, value in sorted(host_env.items()))


def peak_used(peak: dict[str, Any]) -> float:
    """The MFU denominator of one dtype: the larger of its measured and nominal peak."""
    return max(peak["measured"]["gflops"], peak["nominal"]["gflops"])


def recorded_machines() -> list[dict[str, Any]]:
    """The runs in benchmarks/results.json, one per machine ([] before the first)."""
    if not os.path.exists(RESULTS):
        return []
    with open(RESULTS) as f:
        return json.load(f)["machines"]


def write_readme(block: str) -> None:
    """Replaces the text between the results markers (inside the benchmarks section)."""
    with open(README) as f:
        text = f.read()
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{README} has no {TABLE_START} ... {TABLE_END} block to rewrite")
    text = pattern.sub(lambda _: f"{TABLE_START}\n{block}{TABLE_END}", text)
    with open(README, "w") as f:
        f.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Regenerate the benchmark tables of benchmarks/README.md."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny model, 1 repetition: printed only, results.json and the tables untouched",
    )
    parser.add_argument(
        "--no_readme", action="store_true", help="only write results.json, not benchmarks/README.md"
    )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        default=None,
        choices=["float32", "bfloat16"],
        help="default: float32, and bfloat16 where the CPU has native bf16",
    )
    parser.add_argument(
        "--xla_flags",
        default=xla_setup.with_cpu_xla_flags(""),
        help="XLA_FLAGS of our step (default: what main.py sets on CPU hosts)",
    )
    parser.add_argument(
        "--host_allocator",
        default="main",
        choices=["main", "default"],
        help="allocator settings of both steps (default: what main.py sets on CPU hosts)",
    )
    parser.add_argument(
        "--render_only",
        action="store_true",
        help="rewrite the tables from benchmarks/results.json, measure nothing",
    )
    args = parser.parse_args()
    if args.render_only:
        write_readme(render(recorded_machines()))
        return
    results: dict[str, Any] = {"machine": machine(), "steps": []}
    features = results["machine"]["features"]
    native_bf16 = peak_flops.has_native_bf16(features)
    results["xla_flags"] = args.xla_flags
    dtypes = args.dtypes or ["float32"] + (["bfloat16"] if native_bf16 else [])
    results["peak"] = {
        dtype: {
            "measured": peak_flops.measured_matmul_gflops(dtype=dtype),
            "nominal": peak_flops.nominal_peak_gflops(dtype),
        }
        for dtype in dtypes
    }
    for dtype in dtypes:
        for preset, batch, repetitions in QUICK_RUNS if args.quick else FULL_RUNS:
            model = {"preset": preset, "overrides": {}, "target_length": 1024}
            result = step_time.compare(
                model,
                batch,
                FREEZING_SWEEP,
                repetitions,
                dtype=dtype,
                xla_flags=args.xla_flags,
                host_allocator=args.host_allocator,
                peak_tflops=peak_used(results["peak"][dtype]) / 1e3,
            )
            step_time.print_table(result)
            results["steps"].append(result)
    results["input"] = input_side(args.quick)
    print(render_machine(results))
    if args.quick:  # a check, not a record
        return
    this_machine = machine_name(results["machine"])
    machines = [results] + [
        run for run in recorded_machines() if machine_name(run["machine"]) != this_machine
    ]
    with open(RESULTS, "w") as f:
        json.dump({"machines": machines}, f, indent=1)
    if not args.no_readme:
        write_readme(render(machines))


if __name__ == "__main__":
    main()
