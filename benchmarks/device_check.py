"""The check to run on a lent accelerator: numerics against the CPU, step speed, the demo.

    bash benchmarks/device_check.sh                 # on the GPU machine, at most 8 minutes
    python benchmarks/device_check.py --cpu-smoke   # the same code at toy sizes, CPU only

Prints one table (also written to WORKDIR/device_check.json):
- encoder forward, float32: max abs difference of the tokens and pooled output between the
  accelerator (the stock kernels, kernels='auto') and the CPU (the XLA:CPU kernels, computed
  in a JAX_PLATFORMS=cpu subprocess), at the default matmul precision (TF32 on recent
  NVIDIA GPUs) and at 'highest';
- one tuning step, float32 at 'highest': the loss difference and the max abs difference of
  the parameters after the step, next to the largest parameter update;
- the ViT-B bfloat16 tuning step (all 12 blocks trainable, configs/as20k.py's method and
  optimiser) at a batch that fills the device: clips/s and MFU (model FLOPs of
  benchmarks/step_sizes.py over the vendor peak of benchmarks/peak_flops.py), with XLA's
  and with cuDNN's fused attention;
- the demo end to end (main.py --config=configs/demo.py), its wall time and result.

Both sides initialise the same parameters on the host CPU, so the differences are those of
the computation alone. --cpu-smoke runs every row on the CPU at toy sizes (the stock
kernels stand in for the accelerator's; no cuDNN row; the demo is tests/jobs_testing.py's
tiny one), to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # configs/, when run as a script from anywhere

from uamix_jax import xla_setup  # noqa: E402  (no JAX import: flags go first)

# Model sizes of each part, full and --cpu-smoke.
TINY_SMOKE = dict(preset="tiny", overrides=dict(embed_dim=64, depth=2, num_heads=2))
SETTINGS = {
    "full": dict(
        compare=dict(preset="tiny", overrides={}, target_length=1024, batch=16),
        speed=dict(preset="base", overrides={}, target_length=1024, steps=5),
        demo_config="configs/demo.py",
    ),
    "smoke": dict(
        compare=dict(**TINY_SMOKE, target_length=128, batch=16),
        speed=dict(**TINY_SMOKE, target_length=128, steps=2, batch=4),
        demo_config="tests/jobs_testing.py:demo",
    ),
}
PROBE_BATCH = 8  # the speed step is compiled at this batch first, to size the real one
DEVICE_MEMORY_FRACTION = 0.75  # of the device's memory the speed step's batch may fill
MAX_BATCH = 1024
MIN_SPEED_S, MIN_DEMO_S = 120, 30  # budget a speed run / the demo needs to be started
STOCK_SUFFIX = ".stock.npz"  # the CPU reference's second file: the stock kernels on the CPU


def tuning_config(model: dict, batch: int, dtype: str):
    """configs/as20k.py at the given size, all blocks trainable, no warmup (so the first
    step moves every parameter)."""
    from configs import as20k
    from uamix_jax.models import audiomae

    config = as20k.get_config()
    config.init_checkpoint = ""
    config.model.preset = model["preset"]
    config.model.overrides.update(model["overrides"])
    config.model.dtype = dtype
    config.data.batch_size = batch
    config.data.target_length = model["target_length"]
    config.optim.warmup_fraction = 0.0
    depth = audiomae.preset(model["preset"], **model["overrides"]).depth
    config.schedule.stages = ((0, depth),)
    return config


class Tuning:
    """The job's tuning step (train_step + runner) for one encoder config, state built on
    the host CPU."""

    def __init__(self, config, kernels: str, attention_implementation: str = "xla"):
        import jax
        import numpy as np

        from uamix_jax.models import audiomae
        from uamix_jax.training import optim, runner, sharding, train_step

        self.config, method = config, config.method
        encoder_config = audiomae.preset(
            config.model.preset,
            target_length=config.data.target_length,
            dtype=config.model.dtype,
            kernels=kernels,
            attention_implementation=attention_implementation,
            **config.model.overrides.to_dict(),
        )
        self.encoder = audiomae.AudioMAEEncoder(encoder_config)
        head = train_step.make_head(method, encoder_config.dtype).clone(
            kernels=encoder_config.kernels
        )
        depth = encoder_config.depth
        self.trainable_blocks = depth
        tx = optim.make_optimizer(
            config.optim,
            depth=depth,
            trainable_blocks=depth,
            global_batch=config.data.batch_size,
            total_steps=100,
        )
        shape = (1, encoder_config.target_length, encoder_config.num_mel_bins)
        with jax.default_device(jax.devices("cpu")[0]):
            self.variables = jax.device_get(
                jax.jit(self.encoder.init)(jax.random.key(0), np.zeros(shape, np.float32))
            )
            state = train_step.create_state(
                method, self.variables, head, encoder_config.embed_dim, tx, jax.random.key(1)
            )
            self.state = jax.device_get(state)
        loss = train_step.make_loss(
            self.encoder, head, method, config.data.augment, self.trainable_blocks
        )
        mesh = sharding.make_mesh()
        self.step = runner.jit_step(
            runner.make_step(loss, tx, train_step.make_finish(method)), mesh
        )
        self.state_sharding = sharding.replicated(mesh)
        self.batch_sharding = sharding.batch_sharded(mesh)

    def batch(self, size: int) -> dict:
        """Normalised-fbank-like clips on the devices, each with its own level, spectral
        tilt and time pattern: on noise alone a random-init encoder pools every clip to
        nearly the same vector, and the head's BatchNorm then magnifies rounding a
        thousandfold."""
        import jax
        import numpy as np

        cfg = self.encoder.config
        rng = np.random.default_rng(2)
        time = np.linspace(0.0, 1.0, cfg.target_length)[None, :, None]
        freq = np.linspace(-1.0, 1.0, cfg.num_mel_bins)[None, None, :]
        clip = np.linspace(-1.5, 1.5, size)[:, None, None]
        shape = (size, cfg.target_length, cfg.num_mel_bins)
        pattern = np.sin(2 * np.pi * (np.arange(size)[:, None, None] % 4 + 1) * time)
        fbank = 0.5 * rng.standard_normal(shape) + 2 * pattern * freq * clip + clip
        batch = {"fbank": fbank.astype(np.float32), "id": np.arange(size, dtype=np.int32)}
        return jax.device_put(batch, self.batch_sharding)

    def device_state(self):
        """The host-built state on the devices (the step donates it)."""
        import jax

        return jax.device_put(self.state, self.state_sharding)


def _flat(tree, prefix: str) -> dict:
    import jax
    import numpy as np

    return {
        prefix + jax.tree_util.keystr(path): np.asarray(leaf, np.float32)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def numerics(setting: dict, kernels: str, precisions: tuple[str, ...]) -> dict:
    """Encoder outputs per matmul precision and one step's loss and parameters, as arrays."""
    import jax
    import numpy as np

    model = setting["compare"]
    tuning = Tuning(tuning_config(model, model["batch"], "float32"), kernels)
    batch = tuning.batch(model["batch"])
    out = {"kernels": np.asarray(tuning.encoder.config.kernels)}
    for precision in precisions:
        with jax.default_matmul_precision(precision):
            encoded = jax.jit(tuning.encoder.apply)(tuning.variables, batch["fbank"])
        out[f"encoder/{precision}/tokens"] = np.asarray(encoded.tokens)
        out[f"encoder/{precision}/pooled"] = np.asarray(encoded.pooled)
    with jax.default_matmul_precision("highest"):
        state, metrics = tuning.step(tuning.device_state(), batch)
    out["step/loss"] = np.asarray(metrics["loss"])
    out["step/grad_norm"] = np.asarray(metrics["grad_norm"])
    out.update(_flat(tuning.state.params, "before/"))
    out.update(_flat(state.params, "after/"))
    return out


def reference_numerics(path: str, smoke: bool) -> subprocess.Popen:
    """Starts the CPU side of `numerics` in a JAX_PLATFORMS=cpu process: the CPU kernels
    into `path`, and (not with --cpu-smoke) the stock kernels into STOCK_SUFFIX beside it."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    command = [sys.executable, os.path.abspath(__file__), f"--reference={path}"]
    return subprocess.Popen(command + (["--cpu-smoke"] if smoke else []), env=env, cwd=REPO)


def compare(device: dict, reference: dict, title: str = "") -> list[tuple[str, str]]:
    """Table rows: `device`'s arrays against `reference`'s."""
    import numpy as np

    def max_diff(prefix: str) -> float:
        keys = [k for k in reference if k.startswith(prefix)]
        return max(float(np.abs(device[k] - reference[k]).max()) for k in keys)

    rows = []
    label = f"{device['kernels']} kernels vs {reference['kernels']} kernels on the CPU"
    for key in sorted(k for k in device if k.startswith("encoder/")):
        _, precision, output = key.split("/")
        want = reference[f"encoder/highest/{output}"]  # XLA:CPU computes float32 in full
        diff, scale = float(np.abs(device[key] - want).max()), float(np.abs(want).max())
        rows.append(
            (
                f"encoder fwd f32 ({precision} precision): {output}",
                f"max abs diff {diff:.2e} (values up to {scale:.2g}); {label}",
            )
        )
    update = max(
        float(np.abs(reference["after/" + k[len("before/"):]] - reference[k]).max())
        for k in reference
        if k.startswith("before/")
    )
    after = [k for k in reference if k.startswith("after/")]
    flipped = sum(int((np.abs(device[k] - reference[k]) > 0.1 * update).sum()) for k in after)
    total = sum(reference[k].size for k in after)
    values = {
        name: (float(device[f"step/{name}"]), float(reference[f"step/{name}"]))
        for name in ("loss", "grad_norm")
    }
    rows.append(
        (
            f"tuning step f32 (highest){title}: loss, grad norm",
            ", ".join(
                f"{name} {a:.6g} vs {b:.6g} (rel diff {abs(a - b) / abs(b):.1e})"
                for name, (a, b) in values.items()
            ),
        )
    )
    # The first AdamW step moves each parameter by about lr * sign(gradient): a gradient
    # near zero may come out with either sign, a difference of up to twice the update.
    rows.append(
        (
            f"tuning step f32 (highest){title}: params after",
            f"max abs diff {max_diff('after/'):.2e}, largest update {update:.2e}; "
            f"{flipped} of {total} differ by more than 10% of it",
        )
    )
    return rows


def speed(setting: dict, attention_implementation: str, batch: int | None, smoke: bool):
    """(batch, clips/s, MFU or None) of the bfloat16 step; batch None fills the device."""
    import jax

    from peak_flops import device_peak_tflops
    from step_sizes import StepSizes, step_model_flops

    model = setting["speed"]
    config = tuning_config(model, batch or PROBE_BATCH, "bfloat16")
    tuning = Tuning(config, "stock" if smoke else "auto", attention_implementation)
    if batch is None:
        batch = fill_batch(tuning)
    state, batch_on_device = tuning.device_state(), tuning.batch(batch)
    state, metrics = tuning.step(state, batch_on_device)  # compiles
    jax.block_until_ready(metrics["loss"])
    start = time.perf_counter()
    for _ in range(model["steps"]):
        state, metrics = tuning.step(state, batch_on_device)
    jax.block_until_ready(metrics["loss"])
    seconds = (time.perf_counter() - start) / model["steps"]
    cfg, method = tuning.encoder.config, config.method
    sizes = StepSizes(
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        mlp_ratio=cfg.mlp_ratio,
        patch_size=cfg.patch_size,
        target_length=cfg.target_length,
        num_mel_bins=cfg.num_mel_bins,
        batch_size=batch,
        trainable_blocks=tuning.trainable_blocks,
        proj_hidden=method.proj_hidden_dim,
        proj_dim=method.output_dim,
        pred_hidden=method.pred_hidden_dim,
        queue_size=method.queue_size,
        topk=method.topk,
        ema_decay=method.ema_decay,
        mixed_view=method.mix != "none",
        dtype="bfloat16",
    )
    peak = device_peak_tflops("bfloat16")
    mfu = step_model_flops(sizes) / seconds / (peak * 1e12) if peak else None
    return batch, batch / seconds, mfu, float(metrics["loss"])


def fill_batch(tuning: Tuning) -> int:
    """The batch whose step uses about DEVICE_MEMORY_FRACTION of the device's memory,
    from the buffers of the step compiled at PROBE_BATCH (activations grow with the batch,
    the state does not)."""
    import jax

    compiled = tuning.step.lower(tuning.device_state(), tuning.batch(PROBE_BATCH)).compile()
    memory = compiled.memory_analysis()
    stats = jax.devices()[0].memory_stats() or {}
    if memory is None or "bytes_limit" not in stats:
        return PROBE_BATCH
    per_clip = memory.temp_size_in_bytes / PROBE_BATCH
    aliased = getattr(memory, "alias_size_in_bytes", 0)  # the donated state, counted once
    fixed = memory.argument_size_in_bytes + memory.output_size_in_bytes - aliased
    budget = DEVICE_MEMORY_FRACTION * stats["bytes_limit"] - fixed
    batch = int(budget / max(per_clip, 1.0)) // PROBE_BATCH * PROBE_BATCH
    return max(PROBE_BATCH, min(MAX_BATCH, batch))


def demo(config: str, workdir: str, timeout_s: float) -> tuple[str, str]:
    """Runs main.py on the demo config; (wall time and exit code, its results or log tail)."""
    os.makedirs(workdir, exist_ok=True)
    log_path = os.path.join(workdir, "main.log")
    command = [sys.executable, "main.py", f"--config={config}", f"--workdir={workdir}"]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        try:
            code = subprocess.run(
                command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s
            ).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    wall = f"{time.perf_counter() - start:.0f} s, exit {code}"
    results = os.path.join(workdir, "results.md")
    source = results if os.path.exists(results) else log_path
    with open(source) as f:
        lines = [line.strip() for line in f if line.strip()]
    accuracy = [line for line in lines if "accuracy" in line.lower() or line.startswith("|")]
    return wall, " / ".join((accuracy or lines)[-4:])[:300]


class Rows(list):
    """The table's rows, each also printed when added, so a run cut short still reports."""

    def append(self, row: tuple[str, str]) -> None:
        print(f"[device_check] {row[0]}: {row[1]}", flush=True)
        super().append(row)

    def __iadd__(self, rows):
        for row in rows:
            self.append(row)
        return self


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print("\n| " + "check".ljust(width) + " | result |")
    print("|" + "-" * (width + 2) + "|--------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="toy sizes, CPU only")
    parser.add_argument("--workdir", default="", help="default: a temporary directory")
    parser.add_argument("--budget_s", type=float, default=450.0, help="the demo gets the rest")
    parser.add_argument("--batch", type=int, default=0, help="speed batch; 0: fill the device")
    parser.add_argument("--reference", default="", help=argparse.SUPPRESS)  # the CPU side
    args = parser.parse_args(argv)
    smoke = args.cpu_smoke
    setting = SETTINGS["smoke" if smoke else "full"]
    xla_setup.set_cpu_xla_flags()
    if args.reference:
        import numpy as np

        np.savez(args.reference, **numerics(setting, "auto", ("highest",)))
        if not smoke:
            stock = numerics(setting, "stock", ("highest",))
            np.savez(args.reference + STOCK_SUFFIX, **stock)
        return 0

    import jax
    import numpy as np

    start = time.perf_counter()
    workdir = args.workdir or tempfile.mkdtemp(prefix="device_check.")
    device = jax.devices()[0]
    rows = Rows()
    rows.append(("device", f"{device.device_kind} ({jax.device_count()} x {device.platform})"))
    reference_path = os.path.join(workdir, "cpu_reference.npz")
    os.makedirs(workdir, exist_ok=True)
    reference = reference_numerics(reference_path, smoke)
    here = numerics(setting, "stock" if smoke else "auto", ("default", "highest"))
    if reference.wait() == 0:
        cpu = dict(np.load(reference_path))
        rows += compare(here, cpu)
        if not smoke:  # how much the step's rounding alone moves these numbers
            stock_on_cpu = dict(np.load(reference_path + STOCK_SUFFIX))
            rows += compare(stock_on_cpu, cpu, ", yardstick: both on the CPU")[-2:]
    else:
        rows.append(("CPU reference", f"failed (exit {reference.returncode})"))

    implementations = ("xla",) if smoke or device.platform != "gpu" else ("xla", "cudnn")
    batch = setting["speed"].get("batch") or args.batch or None  # None: fill the device
    for implementation in implementations:
        name = f"{setting['speed']['preset']} bf16 step, {implementation} attention"
        remaining = args.budget_s - (time.perf_counter() - start)
        if remaining < MIN_SPEED_S and not smoke:
            rows.append((name, f"not run: {remaining:.0f} s of the budget left"))
            continue
        try:
            batch, clips, mfu, loss = speed(setting, implementation, batch, smoke)
            mfu_text = f"MFU {100 * mfu:.1f}%" if mfu is not None else "MFU n/a (no peak)"
            rows.append((name, f"batch {batch}: {clips:.1f} clips/s, {mfu_text}, loss {loss:.4f}"))
        except Exception as error:  # report and go on: the table is the product
            rows.append((name, f"failed: {type(error).__name__}: {str(error)[:200]}"))
    if len(implementations) == 1:
        rows.append(("bf16 step, cudnn attention", f"not run ({device.platform})"))

    remaining = args.budget_s - (time.perf_counter() - start)
    demo_dir = os.path.join(workdir, "demo")
    if remaining < MIN_DEMO_S:
        rows.append(("demo end to end", f"not run: {remaining:.0f} s of the budget left"))
    else:
        wall, result = demo(setting["demo_config"], demo_dir, remaining)
        rows.append((f"demo end to end ({setting['demo_config']})", f"{wall}; {result}"))
    rows.append(("total", f"{time.perf_counter() - start:.0f} s; outputs in {workdir}"))
    print_table(rows)
    with open(os.path.join(workdir, "device_check.json"), "w") as f:
        json.dump(dict(rows), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
