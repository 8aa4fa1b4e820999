"""Our jitted uaMix-MAE tuning step against the PyTorch eager re-statement, same machine.

Each framework runs in its own worker process (so its peak memory, VmHWM, is its own and
neither sees the other's thread pools); the driver asks them in turn for a few steps,
alternating which goes first, and reports per framework the median step time, clips/s,
model FLOPs utilisation, compile time (JAX) or first-step time (PyTorch), peak RSS and, for
XLA, the compiled step's buffer sizes; plus the JAX / PyTorch time ratio.

With several ``--trainable_blocks`` each worker holds one step per value and all of them
are interleaved the same way; ratios to the largest value give the cost of progressive
freezing (``--trainable_blocks 0 2 4 6 12``).

    python benchmarks/step_time.py --preset tiny --batch_size 4 --repetitions 5
    python benchmarks/step_time.py --preset base --batch_size 2 --trainable_blocks 0 2 4 6 12

Our step is the job's own (``train_step.make_step`` with the ``configs/as20k.py``
method, optimiser and augmentations; random weights). ``--xla_flags`` sets the JAX worker's
XLA_FLAGS, by default the CPU flags that main.py adds (``uamix_jax.xla_setup``);
``--host_allocator main`` (default) gives both workers main.py's allocator settings. An
inherited ``--xla_force_host_platform_device_count`` is not passed on: one device, all
cores in its thread pool. On a GPU/TPU the JAX worker runs there and MFU uses
``--peak_tflops`` or ``peak_flops.KNOWN_PEAK_TFLOPS``; on a CPU, the measured matmul peak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from step_sizes import StepSizes, step_model_flops

from uamix_jax import xla_setup

PROTOCOL_PREFIX = "@@step_time "  # marks the workers' answers among library log lines


def bench_config(model: dict[str, Any], batch_size: int, dtype: str, trainable_blocks: int):
    """The AS-20K tuning config at benchmark size: random init, one stage.

    ``model``: {'preset': name, 'overrides': {AudioMAEConfig field: value},
    'target_length': frames}.
    """
    import ml_collections

    from configs import as20k

    config = as20k.get_config()
    config.init_checkpoint = ""
    config.model.preset = model["preset"]
    config.model.overrides = ml_collections.ConfigDict(model["overrides"])
    config.model.dtype = dtype
    config.data.batch_size = batch_size
    config.data.target_length = model["target_length"]
    config.schedule.stages = ((0, trainable_blocks),)
    return config


def tuning_step(config, trainable_blocks: int):
    """(jitted step, replicated state, mesh, encoder config) of the tuning job's step for
    ``config``, random weights, the top ``trainable_blocks`` trainable."""
    import jax

    from uamix_jax.jobs import tune
    from uamix_jax.training import optim, runner, sharding, train_step

    encoder, variables = tune.build_encoder(config, jax.random.key(0))
    head = train_step.make_head(config.method, encoder.config.dtype, encoder.config.kernels)
    tx = optim.make_optimizer(
        config.optim,
        depth=encoder.config.depth,
        trainable_blocks=trainable_blocks,
        global_batch=config.data.batch_size,
        total_steps=1000,
    )
    mesh = sharding.make_mesh()
    state = sharding.replicate(
        train_step.create_state(
            config.method, variables, head, encoder.config.embed_dim, tx, jax.random.key(1)
        ),
        mesh,
    )
    step = train_step.make_step(
        encoder, head, tx, config.method, config.data.augment, trainable_blocks
    )
    return runner.jit_step(step, mesh), state, mesh, encoder.config


def step_sizes(model: dict[str, Any], batch_size: int, dtype: str) -> StepSizes:
    """The sizes of our step for this model, for the PyTorch worker and the FLOP count."""
    from uamix_jax.models import audiomae

    config = bench_config(model, batch_size, dtype, 0)
    encoder = audiomae.preset(model["preset"], **model["overrides"])
    method = config.method
    return StepSizes(
        embed_dim=encoder.embed_dim,
        depth=encoder.depth,
        num_heads=encoder.num_heads,
        mlp_ratio=encoder.mlp_ratio,
        patch_size=encoder.patch_size,
        target_length=config.data.target_length,
        num_mel_bins=encoder.num_mel_bins,
        batch_size=batch_size,
        proj_hidden=method.proj_hidden_dim,
        proj_dim=method.output_dim,
        pred_hidden=method.pred_hidden_dim,
        queue_size=method.queue_size,
        topk=method.topk,
        temperature=method.temperature,
        mix_alpha=method.mix_alpha,
        mix_weight=method.mix_weight,
        ema_decay=method.ema_decay,
        mixed_view=method.mix != "none",
        dtype=dtype,
    )


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark (VmHWM): malloc'd XLA buffers included."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class JaxWorker:
    """Our step, one compiled executable (and train state) per trainable-block count."""

    def __init__(self, model: dict[str, Any], sizes: StepSizes):
        import jax
        import numpy as np

        self.jax = jax
        self.model, self.batch_size, self.dtype = model, sizes.batch_size, sizes.dtype
        rng = np.random.default_rng(0)
        self.host_batch = {
            "fbank": rng.standard_normal(
                (sizes.batch_size, sizes.target_length, sizes.num_mel_bins), np.float32
            ),
            "id": np.arange(sizes.batch_size, dtype=np.int32),
        }
        self.steps: dict[int, list] = {}

    def setup(self, trainable_blocks: int) -> dict[str, Any]:
        from uamix_jax.training import sharding

        jax = self.jax
        config = bench_config(self.model, self.batch_size, self.dtype, trainable_blocks)
        step, state, mesh, _ = tuning_step(config, trainable_blocks)
        batch = sharding.global_batch(self.host_batch, mesh)
        start = time.perf_counter()
        compiled = step.lower(state, batch).compile()
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        first_step_s = time.perf_counter() - start
        self.steps[trainable_blocks] = [compiled, state, batch]
        memory = compiled.memory_analysis()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        device = jax.devices()[0]
        return {
            "compile_s": compile_s,
            "first_step_s": first_step_s,
            "xla_flops": float(cost.get("flops", 0.0)) if cost else None,
            "xla_temp_mb": memory.temp_size_in_bytes / 2**20 if memory else None,
            "xla_argument_mb": memory.argument_size_in_bytes / 2**20 if memory else None,
            "device": f"{device.platform}:{device.device_kind}",
            "num_devices": jax.device_count(),
            "version": f"jax {jax.__version__}",
        }

    def run(self, trainable_blocks: int) -> None:
        compiled, state, batch = self.steps[trainable_blocks]
        state, metrics = compiled(state, batch)
        self.jax.block_until_ready((state, metrics))
        self.steps[trainable_blocks][1] = state

    def profile(self, trainable_blocks: int, directory: str) -> None:
        """One step under ``jax.profiler`` (a Perfetto trace) plus the compiled HLO text."""
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, f"step_{trainable_blocks}.hlo.txt"), "w") as f:
            f.write(self.steps[trainable_blocks][0].as_text())
        with self.jax.profiler.trace(
            os.path.join(directory, f"trace_{trainable_blocks}"), create_perfetto_trace=True
        ):
            self.run(trainable_blocks)

    def device_peak_mb(self) -> float | None:
        stats = self.jax.devices()[0].memory_stats()
        return (
            stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else None
        )


class TorchWorker:
    """The PyTorch eager re-statement, one ``TuningStep`` per trainable-block count."""

    def __init__(self, sizes: StepSizes):
        import torch

        torch.set_num_threads(os.cpu_count())  # same threads as XLA's pool: every core
        self.torch, self.sizes = torch, sizes
        self.fbank = torch.randn(sizes.batch_size, sizes.target_length, sizes.num_mel_bins)
        self.ids = torch.arange(sizes.batch_size)
        self.steps: dict[int, Any] = {}

    def setup(self, trainable_blocks: int) -> dict[str, Any]:
        from torch_reference_step import TuningStep

        step = TuningStep(self.sizes.replace(trainable_blocks=trainable_blocks))
        start = time.perf_counter()
        step(self.fbank, self.ids)
        self.steps[trainable_blocks] = step
        return {
            "first_step_s": time.perf_counter() - start,
            "device": "cpu",
            "version": f"torch {self.torch.__version__}",
            "num_threads": self.torch.get_num_threads(),
        }

    def run(self, trainable_blocks: int) -> None:
        self.steps[trainable_blocks](self.fbank, self.ids)

    def device_peak_mb(self) -> None:
        return None


def serve(framework: str, spec: dict[str, Any]) -> None:
    """Worker loop: JSON commands on stdin, answers on stdout behind ``PROTOCOL_PREFIX``."""
    sizes = StepSizes(**spec["sizes"])
    worker = JaxWorker(spec["model"], sizes) if framework == "jax" else TorchWorker(sizes)

    def answer(message: dict[str, Any]) -> None:
        print(PROTOCOL_PREFIX + json.dumps(message), flush=True)

    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "setup":
            answer(worker.setup(command["trainable_blocks"]))
        elif command["op"] == "run":
            wall, cpu = [], []
            for _ in range(command["steps"]):
                start_wall, start_cpu = time.perf_counter(), cpu_seconds()
                worker.run(command["trainable_blocks"])
                wall.append(time.perf_counter() - start_wall)
                cpu.append(cpu_seconds() - start_cpu)
            answer({"wall_s": wall, "cpu_s": cpu})
        elif command["op"] == "profile":
            worker.profile(command["trainable_blocks"], command["directory"])
            answer({})
        elif command["op"] == "quit":
            answer({"peak_rss_mb": peak_rss_mb(), "device_peak_mb": worker.device_peak_mb()})
            return


class WorkerProcess:
    """Driver-side handle of one worker process."""

    def __init__(
        self, framework: str, spec: dict[str, Any], xla_flags: str, host_env: dict[str, str]
    ):
        env = {**os.environ, **host_env}
        env["XLA_FLAGS"] = xla_flags
        self.framework = framework
        self.process = subprocess.Popen(
            [
                sys.executable,
                os.path.abspath(__file__),
                f"--worker={framework}",
                f"--spec={json.dumps(spec)}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def ask(self, **command: Any) -> dict[str, Any]:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(PROTOCOL_PREFIX):
                return json.loads(line[len(PROTOCOL_PREFIX) :])
        raise RuntimeError(
            f"{self.framework} worker exited (code {self.process.wait()}) during "
            f"{command}; its stderr is above"
        )

    def close(self) -> dict[str, Any]:
        answer = self.ask(op="quit")
        self.process.wait()
        return answer


def peak_gflops(override_tflops: float | None, dtype: str) -> tuple[float, str]:
    """FLOP/s peak for MFU and how it was obtained."""
    import peak_flops

    peak = peak_flops.device_peak_tflops(dtype, override_tflops)
    if peak:
        return peak * 1e3, "given" if override_tflops else "vendor data sheet"
    # A matmul measured on a busy machine understates the peak, a VM's clock hides boost:
    # the larger of the two.
    measured = peak_flops.measured_matmul_gflops(dtype=dtype)["gflops"]
    nominal = peak_flops.nominal_peak_gflops(dtype)["gflops"]
    return max(measured, nominal), "measured matmul" if measured > nominal else "nominal (lscpu)"


def compare(
    model: dict[str, Any],
    batch_size: int,
    trainable_blocks: list[int],
    repetitions: int,
    steps_per_repetition: int = 1,
    dtype: str = "float32",
    frameworks: tuple[str, ...] = ("jax", "torch"),
    xla_flags: str = "",
    peak_tflops: float | None = None,
    profile_dir: str | None = None,
    host_allocator: str = "main",
) -> dict[str, Any]:
    """Interleaved A/B timing of every (framework, trainable_blocks) pair; see the module doc."""
    sizes = step_sizes(model, batch_size, dtype)
    peak, peak_source = peak_gflops(peak_tflops, dtype)
    spec = {"model": model, "sizes": sizes.__dict__}
    host_env = (
        xla_setup.host_allocator_environment(dict(os.environ)) if host_allocator == "main" else {}
    )
    workers = [WorkerProcess(name, spec, xla_flags, host_env) for name in frameworks]
    result: dict[str, Any] = {
        "model": model,
        "batch_size": batch_size,
        "dtype": dtype,
        "views": sizes.num_views,
        "repetitions": repetitions,
        "steps_per_repetition": steps_per_repetition,
        "peak_gflops": peak,
        "peak_source": peak_source,
        "xla_flags": xla_flags,
        "host_env": host_env,
        "load_before": os.getloadavg(),
        "runs": {},
    }
    try:
        for worker in workers:  # one setup at a time: compilation is not slowed by the other
            for blocks in trainable_blocks:
                result["runs"][f"{worker.framework}/{blocks}"] = {
                    **worker.ask(op="setup", trainable_blocks=blocks),
                    "wall_s": [],
                    "cpu_s": [],
                }
        pairs = [(worker, blocks) for worker in workers for blocks in trainable_blocks]
        for repetition in range(repetitions):
            for worker, blocks in pairs if repetition % 2 == 0 else pairs[::-1]:
                answer = worker.ask(op="run", trainable_blocks=blocks, steps=steps_per_repetition)
                run = result["runs"][f"{worker.framework}/{blocks}"]
                run["wall_s"] += answer["wall_s"]
                run["cpu_s"] += answer["cpu_s"]
        for worker in workers:
            if profile_dir and worker.framework == "jax":
                for blocks in trainable_blocks:
                    worker.ask(op="profile", trainable_blocks=blocks, directory=profile_dir)
            memory = worker.close()
            for blocks in trainable_blocks:
                result["runs"][f"{worker.framework}/{blocks}"].update(memory)
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.kill()
    result["load_after"] = os.getloadavg()
    summarise(result, sizes, trainable_blocks, frameworks)
    return result


def summarise(
    result: dict[str, Any],
    sizes: StepSizes,
    trainable_blocks: list[int],
    frameworks: tuple[str, ...],
) -> None:
    """Adds medians, clips/s, MFU and the JAX/PyTorch and freezing ratios to ``result``."""
    full = max(trainable_blocks)
    for key, run in result["runs"].items():
        blocks = int(key.split("/")[1])
        run["median_s"] = statistics.median(run["wall_s"])
        run["min_s"] = min(run["wall_s"])  # the least disturbed step, on a shared machine
        run["median_cpu_s"] = statistics.median(run["cpu_s"])
        run["clips_per_s"] = sizes.batch_size / run["median_s"]
        run["model_gflops"] = step_model_flops(sizes.replace(trainable_blocks=blocks)) / 1e9
        run["mfu"] = run["model_gflops"] / run["median_s"] / result["peak_gflops"]
    for blocks in trainable_blocks:
        if {"jax", "torch"} <= set(frameworks):
            ours, theirs = result["runs"][f"jax/{blocks}"], result["runs"][f"torch/{blocks}"]
            ours["jax_over_torch"] = ours["median_s"] / theirs["median_s"]
            ours["jax_over_torch_min"] = ours["min_s"] / theirs["min_s"]
        for framework in frameworks:
            run = result["runs"][f"{framework}/{blocks}"]
            run["over_full_step"] = (
                run["median_s"] / result["runs"][f"{framework}/{full}"]["median_s"]
            )
            run["over_full_step_min"] = (
                run["min_s"] / result["runs"][f"{framework}/{full}"]["min_s"]
            )


def model_name(model: dict[str, Any]) -> str:
    """'base', or 'tiny{depth=2}' for an overridden preset, with the input length."""
    overrides = ",".join(f"{k}={v}" for k, v in model["overrides"].items())
    return f"{model['preset']}{'{' + overrides + '}' if overrides else ''} @{model['target_length']}x128"


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{model_name(result['model'])} batch {result['batch_size']} {result['dtype']}, "
        f"{result['views']} views, peak {result['peak_gflops']:.0f} GFLOP/s "
        f"({result['peak_source']}), load {result['load_before'][0]:.1f} -> "
        f"{result['load_after'][0]:.1f}"
    )
    print(
        f"{'run':10} {'median s':>9} {'clips/s':>8} {'MFU':>6} {'vs full':>8} {'jax/torch':>9} "
        f"{'compile s':>9} {'1st step s':>10} {'RSS MB':>7}"
    )
    for key, run in result["runs"].items():
        ratio = run.get("jax_over_torch")
        compile_s = run.get("compile_s")
        print(
            f"{key:10} {run['median_s']:9.3f} {run['clips_per_s']:8.2f} {run['mfu']:6.1%} "
            f"{run['over_full_step']:8.2f} {'' if ratio is None else f'{ratio:.2f}':>9} "
            f"{'' if compile_s is None else f'{compile_s:.1f}':>9} {run['first_step_s']:10.2f} "
            f"{run['peak_rss_mb']:7.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="uaMix-MAE step time: JAX vs PyTorch.")
    parser.add_argument("--preset", default="tiny", help="encoder size (audiomae.preset name)")
    parser.add_argument(
        "--model_overrides",
        default="{}",
        help="JSON of AudioMAEConfig fields over the preset, e.g. '{\"depth\": 2}'",
    )
    parser.add_argument("--target_length", type=int, default=1024, help="frames per clip")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--trainable_blocks", type=int, nargs="+", default=[6])
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--steps_per_repetition", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--frameworks", nargs="+", default=["jax", "torch"], choices=["jax", "torch"]
    )
    parser.add_argument(
        "--xla_flags",
        default=xla_setup.with_cpu_xla_flags(""),
        help="XLA_FLAGS of the JAX worker (default: what main.py sets on CPU hosts; "
        "'' for XLA's defaults)",
    )
    parser.add_argument(
        "--host_allocator",
        default="main",
        choices=["main", "default"],
        help="'main': both workers get the allocator settings main.py gives itself on CPU "
        "hosts (tcmalloc when installed, glibc huge pages); 'default': the system's",
    )
    parser.add_argument(
        "--peak_tflops",
        type=float,
        default=None,
        help="device peak for MFU (default: data sheet, or measured on CPU)",
    )
    parser.add_argument("--out", default=None, help="write the full result as JSON here")
    parser.add_argument(
        "--profile_dir",
        default=None,
        help="after timing, trace one JAX step per block count here (Perfetto) "
        "and write its compiled HLO; summarise with profile_summary.py",
    )
    parser.add_argument("--worker", choices=["jax", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        serve(args.worker, json.loads(args.spec))
        return
    if args.dtype == "bfloat16" and "torch" in args.frameworks:
        import peak_flops

        if not peak_flops.has_native_bf16():
            parser.error(
                "--dtype bfloat16 with the PyTorch reference needs a CPU with native bf16 "
                "(AVX-512 BF16 or AMX): this one has none, and PyTorch's fallback multiplies "
                "bf16 at about 1 GFLOP/s. Use --frameworks jax, or --dtype float32."
            )
    model = {
        "preset": args.preset,
        "overrides": json.loads(args.model_overrides),
        "target_length": args.target_length,
    }
    result = compare(
        model,
        args.batch_size,
        args.trainable_blocks,
        args.repetitions,
        args.steps_per_repetition,
        args.dtype,
        tuple(args.frameworks),
        args.xla_flags,
        args.peak_tflops,
        args.profile_dir,
        args.host_allocator,
    )
    print_table(result)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
