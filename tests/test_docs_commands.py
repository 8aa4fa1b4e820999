"""Every shell command in the README and the docs is run by a test or by CI, or says why not.

The commands are the lines of the fenced shell blocks of README.md, docs/*.md and
benchmarks/README.md (and any line of an untagged block that starts like one). Each must be
- one of the README's two newcomer commands (CI runs the test command, `.ci/run`; the
  demo's config is run at a tiny size by tests/test_jobs_resume.py), or
- in a block marked `<!-- docs-test: run -->`, which the test below runs as written, or
- in COVERED: its normalised form maps to the test file that runs its entry point, and that
  file must contain the entry point and every `--flag` the command uses, or
- in NOT_RUN, with the reason no test runs it (reported as a skip, so it shows in every
  run's summary until a test covers it).
A new command in the docs fails until it is in one of these tables; so does a command whose
module, script or config file does not exist, and a table entry that no document uses.
Relative links between the documents, and their #anchors, must resolve.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = sorted(
    ["README.md", "benchmarks/README.md"]
    + [os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md"))]
)
LINKED_DOCUMENTS = DOCUMENTS + ["benchmarks/NOTES.md"]

# The README's quick start, byte for byte. .ci/run runs the second ("kept identical").
NEWCOMER_COMMANDS = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && "
    "python main.py --config=configs/demo.py --workdir=workdir/demo",
    "python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[test]' && "
    "python -m pytest -q -n 2 tests",
)
SHELL_LANGUAGES = ("bash", "sh", "shell", "console")
# Programs that start a command line in an untagged block too.
PROGRAMS = ("python", "python3", "pip", "pip3", "bash", "sh", "gcloud", "git", "sudo", "apt")
# Parts of a && chain that manipulate files and need no test of their own.
PLUMBING = ("cd", ".", "source", "unzip", "mkdir", "cp", "mv", "rm")
RUN_MARK = "<!-- docs-test: run -->"


@dataclasses.dataclass(frozen=True)
class Run:
    """A test file that runs a command's entry point, and what it runs."""

    test: str  # path from the repository root
    needles: tuple[str, ...]  # what the test file must contain: the entry point it calls
    how: str  # what the test runs, in words


# Normalised command -> the test that runs it. Keys: `python -m MODULE --flags`,
# `python SCRIPT --flags` (flags sorted, values dropped) or `main.py CONFIG`.
COVERED = {
    "main.py configs/demo.py": Run(
        "tests/test_tune_job.py",
        ("main.py", "jobs_testing"),
        "main.py on tests/jobs_testing.py's tune config (configs/demo.py's tuning stage made "
        "tiny), SIGKILLed and resumed; the pretraining stage is tests/test_pretrain_run.py's",
    ),
    "main.py configs/pretrain_demo.py": Run(
        "tests/test_pretrain_run.py",
        ("jobs_testing", "pretrain_run.run("),
        "the pretrain job on tests/jobs_testing.py's configs/pretrain_demo.py made tiny",
    ),
    "main.py configs/as20k.py": Run(
        "tests/test_as20k_sequence.py",
        ("--config=configs/as20k.py",),
        "main.py on configs/as20k.py, made tiny by overrides, after converting a checkpoint "
        "and building an AudioSet-layout folder",
    ),
    "python -m uamix_jax.data.builders --config --data_dir --layout --manual_dir": Run(
        "tests/test_as20k_sequence.py",
        ('"uamix_jax.data.builders"',),
        "the builder command line on a tiny AudioSet-layout folder (--config as20k)",
    ),
    "python -m weights_conversion.convert_audiomae --input --output": Run(
        "tests/test_conversion.py",
        ("convert_audiomae.main(",),
        "PyTorch -> Flax from every checkpoint form, compared with the PyTorch re-statement",
    ),
    "python -m weights_conversion.convert_audiomae --input --output --to-torch": Run(
        "tests/test_conversion.py",
        ("convert_audiomae.main(",),
        "Flax -> PyTorch of converted and tuned encoders, loaded strictly into PyTorch",
    ),
    "python -m weights_conversion.convert_audiomae "
    "--decoder_num_heads --input --num_heads --output --with_decoder": Run(
        "tests/test_mae.py",
        ("convert_audiomae.main(",),
        "an MAE exported with --to-torch and read back with its decoder, bit-exact",
    ),
    "python -m uamix_jax.data.soundfont --out": Run(
        "tests/test_soundfont.py",
        ("soundfont.main(", "--out"),
        "the generator's command line on a small .sf2 the test writes",
    ),
    "python -m uamix_jax.data.builders --data_dir --layout --manual_dir": Run(
        "tests/test_as20k_sequence.py",
        ('"uamix_jax.data.builders"',),
        "the builder command line (there with --config as20k; docs/data.md's folder-layout "
        "block runs as written)",
    ),
    "python -m uamix_jax.hear_eval --out": Run(
        "tests/test_hear_eval_kit.py",
        ('"uamix_jax.hear_eval", "toy-tasks"',),
        "toy-tasks, then the chain on them (skips without hear-eval-kit; .ci/run's hear step)",
    ),
    "python -m uamix_jax.hear_eval --embeddings-dir --model --model-options --tasks-dir": Run(
        "tests/test_hear_eval_kit.py",
        ('"uamix_jax.hear_eval", "embed", "uamix_jax.hear"',),
        "the kit's embedding runner through the launcher on the toy tasks and a tiny encoder",
    ),
    "python -m uamix_jax.hear_eval --grid --grid-points": Run(
        "tests/test_hear_eval_kit.py",
        ('"uamix_jax.hear_eval", "predict"', '"faster"'),
        "the kit's prediction runner through the launcher on those embeddings, faster grid",
    ),
    "pip install -e .[hear]": Run(
        ".ci/run",
        ("pip install -q -e '.[hear,test]'",),
        "CI's hear-eval-kit step installs the extra (with the test extra) into .venv-hear",
    ),
    "pip install --no-deps heareval==2021.1.3": Run(
        ".ci/run",
        ("pip install -q --no-deps heareval==2021.1.3",),
        "CI's hear-eval-kit step, after the extra",
    ),
    "python -m uamix_jax.embed --checkpoint --input --output": Run(
        "tests/test_embed.py",
        ("embed.main(",),
        "the embed command line on synthetic clips and a random-weight checkpoint",
    ),
    "python -m uamix_jax.data.synthetic --clips_per_class --num_classes --out --seconds --seed": (
        Run(
            "tests/test_synthetic.py",
            ("synthetic.main(",),
            "the synthetic-data command line with every flag",
        )
    ),
    "python benchmarks/replay_diagnosis.py --workdir": Run(
        "tests/test_readout.py",
        ("replay_diagnosis.main(",),
        "the replay diagnosis driver on the replay's quick setting and a small .sf2",
    ),
    "python benchmarks/replay_diagnosis.py --every --pretrain --workdir": Run(
        "tests/test_readout.py",
        ("replay_diagnosis.main(", '"--pretrain"', '"--every"'),
        "the replay diagnosis driver with a config.pretrain override, quick setting",
    ),
    "python benchmarks/step_time.py --batch_size --preset --repetitions --trainable_blocks": Run(
        "tests/test_benchmarks_smoke.py",
        ("step_time.py",),
        "the step-time harness, both frameworks, on a 2-block 32-wide model, one repetition",
    ),
}

# Normalised command -> why no test runs it. Each is reported as a skip.
NOT_RUN = {
    "pip install -e .[soundfont]": "an install line of an optional extra (pretty-midi, for its "
    "SoundFont); the tests write their own small .sf2 files",
    "main.py configs/replay_soundfont.py": "the full replay runs for hours; tests/test_replay.py "
    "runs its quick setting (configs/replay_soundfont.py:quick) through the same driver",
    "main.py configs/finetune_synthetic.py": "tests/test_finetune.py runs the finetune job "
    "on finetune_recipe('synthetic'), which this file calls, and tests/test_eval_configs.py "
    "builds this file, but no test runs the file itself",
    "main.py configs/compare_synthetic.py": "tests/test_eval_compare.py runs the compare job "
    "on compare_config('synthetic'), which this file extends, and tests/test_eval_configs.py "
    "builds this file, but no test runs the file itself",
    "main.py configs/pretrain_audioset.py": "needs AudioSet; no test builds this config",
    "main.py configs/compare_esc50.py": "needs ESC-50; tests/test_eval_configs.py only builds "
    "the config",
    "main.py configs/finetune_esc50.py": "needs ESC-50; tests/test_finetune.py runs this "
    "config's fold loop with the training faked out",
    "pip install --no-deps tinysoundfont==0.3.7": "an install line; .ci/run runs it before the "
    "test command",
    "pip install -e .[torch]": "an install line; CI installs the `test` extra, which pins the "
    "same torch",
    "pip install -e . jax[cuda12]==0.10.2": "needs a GPU host",
    "pip install -e . jax[tpu]==0.10.2": "needs a TPU VM",
    "gcloud compute tpus tpu-vm ssh NAME": "needs a TPU pod slice",
    "pip download torchaudio==2.11.0 --no-deps -d /tmp/torchaudio_wheel": "needs the network",
    "python -m pytest tests/test_fbank.py": "the torchaudio comparison: needs the downloaded "
    "kaldi.py (UAMIX_TORCHAUDIO_KALDI), so CI skips it",
    "python benchmarks/run_all.py": "a benchmark run (15-20 minutes); by hand",
    "python benchmarks/run_all.py --dtypes": "a benchmark run (18 minutes); by hand",
    "python benchmarks/run_all.py --no_readme --quick": "a benchmark check (minutes); by hand",
    "python benchmarks/peak_flops.py --dtype": "a benchmark; by hand",
    "python benchmarks/fbank_speed.py": "a benchmark; by hand",
    "python benchmarks/pipeline_speed.py": "a benchmark; by hand",
    "python benchmarks/replay_speed.py --base --rounds": "an A/B benchmark against another tree (10-20 minutes); by hand",
}


@dataclasses.dataclass(frozen=True)
class Block:
    document: str
    line: int  # 1-based line of the opening fence
    language: str
    lines: tuple[str, ...]
    marked_run: bool


def fenced_blocks(document: str) -> list[Block]:
    with open(os.path.join(REPO, document)) as f:
        text = f.read().splitlines()
    blocks, i = [], 0
    while i < len(text):
        fence = re.match(r"\s*(```+)\s*([\w+-]*)", text[i])
        if not fence:
            i += 1
            continue
        start, ticks, language = i, fence.group(1), fence.group(2).lower()
        i += 1
        body = []
        while i < len(text) and not text[i].strip().startswith(ticks):
            body.append(text[i])
            i += 1
        previous = next((t.strip() for t in reversed(text[:start]) if t.strip()), "")
        blocks.append(Block(document, start + 1, language, tuple(body), previous == RUN_MARK))
        i += 1
    return blocks


def block_commands(block: Block) -> list[str]:
    """The command lines of a block, `\\` continuations joined."""
    if block.language not in SHELL_LANGUAGES + ("",):
        return []
    commands, current = [], ""
    for raw in block.lines:
        line = raw.strip()
        if block.language == "console" and line.startswith("$ "):
            line = line[2:]
        if not current and (not line or line.startswith("#")):
            continue
        current = f"{current} {line[:-1].strip()}" if line.endswith("\\") else f"{current} {line}"
        if not line.endswith("\\"):
            commands.append(current.strip())
            current = ""
    if current:
        commands.append(current.strip())
    if block.language == "":
        commands = [c for c in commands if c.split()[0] in PROGRAMS]
    return commands


def parts(command: str) -> list[list[str]]:
    """The simple commands of a && chain, as tokens (environment assignments dropped)."""
    tokens = shlex.split(command, comments=True)
    chain, current = [], []
    for token in tokens + ["&&"]:
        if token in ("&&", ";", "||"):
            while current and (
                re.match(r"[A-Za-z_][A-Za-z0-9_]*=", current[0]) or current[0] in ("time", "sudo")
            ):
                current = current[1:]
            if current and current[0] not in PLUMBING:
                chain.append(current)
            current = []
        else:
            current.append(token)
    return chain


def flags(tokens: list[str]) -> list[str]:
    return sorted({t.split("=")[0] for t in tokens if t.startswith("--")})


def normalise(tokens: list[str]) -> str:
    """`main.py CONFIG`, `python -m MODULE --flags`, `python SCRIPT --flags`, or the words."""
    program, rest = tokens[0], tokens[1:]
    if program in ("python", "python3") and rest:
        if rest[0] == "main.py":
            config = next(t.split("=", 1)[1] for t in rest if t.startswith("--config="))
            return f"main.py {config.split(':')[0]}"
        if rest[0] == "-m" and rest[1] == "pytest":
            return " ".join(["python -m pytest"] + [t for t in rest[2:] if t.startswith("tests/")])
        if rest[0] == "-m":
            return " ".join([f"python -m {rest[1]}"] + flags(rest[2:]))
        if rest[0] == "-c":
            return "python -c " + rest[1]
        return " ".join([f"python {rest[0]}"] + flags(rest[1:]))
    if program in ("pip", "pip3"):
        return " ".join(["pip"] + rest)
    words = []
    for token in tokens:
        if token.startswith("-"):
            break
        words.append(token)
    return " ".join(words)


def collect() -> tuple[dict[str, list[str]], list[Block]]:
    """Normalised command -> where the documents use it; and the blocks marked to run."""
    found: dict[str, list[str]] = {}
    marked = []
    for document in DOCUMENTS:
        for block in fenced_blocks(document):
            commands = block_commands(block)
            if block.marked_run:
                marked.append(block)
            for command in commands:
                where = f"{document}:{block.line}"
                if command in NEWCOMER_COMMANDS:
                    found.setdefault(command, []).append(where)
                    continue
                for tokens in parts(command):
                    key = normalise(tokens)
                    run_here = " (run here)" if block.marked_run else ""
                    found.setdefault(key, []).append(where + run_here)
    return found, marked


FOUND, MARKED = collect()


def entry_point_exists(key: str) -> bool:
    """The module, script or config file a normalised command names exists."""
    words = key.split()
    if words[0] == "main.py":
        return os.path.isfile(os.path.join(REPO, words[1]))
    if words[:2] == ["python", "-m"]:
        if words[2] == "pytest":
            return all(os.path.exists(os.path.join(REPO, w)) for w in words[3:])
        path = os.path.join(REPO, *words[2].split("."))
        return os.path.isfile(path + ".py") or os.path.isfile(os.path.join(path, "__main__.py"))
    if words[0] == "python" and words[1].endswith(".py"):
        return os.path.isfile(os.path.join(REPO, words[1]))
    return True


def test_newcomer_commands_are_in_the_readme_and_ci():
    readme = open(os.path.join(REPO, "README.md")).read()
    for command in NEWCOMER_COMMANDS:
        assert f"```bash\n{command}\n```" in readme, f"README lost the quick start's {command}"
    assert NEWCOMER_COMMANDS[1].split(" && ", 3)[3] in open(os.path.join(REPO, ".ci", "run")).read()


def test_documents_have_commands():
    # A parser that finds nothing would pass everything below.
    assert len(FOUND) > 15 and MARKED, sorted(FOUND)


@pytest.mark.parametrize("key", sorted(FOUND))
def test_command_is_run_by_a_test(key):
    where = ", ".join(FOUND[key])
    assert entry_point_exists(key), f"{key} (in {where}): its module, script or config is missing"
    if key in NEWCOMER_COMMANDS or all(w.endswith("(run here)") for w in FOUND[key]):
        return
    if key in COVERED:
        run = COVERED[key]
        assert os.path.isfile(os.path.join(REPO, run.test)), f"{run.test} (runs `{key}`) is gone"
        text = open(os.path.join(REPO, run.test)).read()
        words = key.split()
        wanted = list(run.needles) + [w for w in words if w.startswith("--")]
        if words[0] == "main.py":
            wanted.append(os.path.splitext(os.path.basename(words[1]))[0])
        missing = [needle for needle in wanted if needle not in text]
        assert not missing, f"{run.test} is said to run `{key}` but does not contain {missing}"
        return
    if key in NOT_RUN:
        pytest.skip(f"not run by any test: {key} ({NOT_RUN[key]})")
    pytest.fail(
        f"`{key}` (in {where}) is run by no test this file knows of: add it to COVERED with "
        "the test that runs it, or to NOT_RUN with the reason"
    )


def test_the_check_fails_on_a_new_flag_or_a_missing_module():
    block = Block(
        "example.md",
        1,
        "bash",
        (
            "python -m uamix_jax.no_such_module --out x",
            "python main.py --config=configs/no_such.py --workdir=w \\",
            "    --config.seed=1",
            "python -m uamix_jax.embed --input a --checkpoint c --output b --new_flag 2",
            "FOO=1 time python benchmarks/run_all.py --quick  # a comment",
        ),
        False,
    )
    keys = [normalise(tokens) for command in block_commands(block) for tokens in parts(command)]
    assert keys == [
        "python -m uamix_jax.no_such_module --out",
        "main.py configs/no_such.py",
        "python -m uamix_jax.embed --checkpoint --input --new_flag --output",
        "python benchmarks/run_all.py --quick",
    ]
    assert not entry_point_exists(keys[0]) and not entry_point_exists(keys[1])
    assert all(key not in COVERED and key not in NOT_RUN for key in keys)


def test_tables_name_only_documented_commands():
    stale = sorted((set(COVERED) | set(NOT_RUN)) - set(FOUND))
    assert not stale, f"no document uses these any more: {stale}"
    assert not set(COVERED) & set(NOT_RUN)


@pytest.mark.parametrize(
    "block", MARKED, ids=[f"{block.document}:{block.line}" for block in MARKED]
)
def test_marked_block_runs_as_written(block, tmp_path):
    """Runs the block line by line in a scratch folder that sees the repository's tests/."""
    os.symlink(os.path.join(REPO, "tests"), tmp_path / "tests")
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]),
        PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
    )
    for command in block_commands(block):
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"


def anchors(document: str) -> set[str]:
    """Explicit <a id> anchors and GitHub's heading slugs."""
    text = open(os.path.join(REPO, document)).read()
    found = set(re.findall(r'<a id="([^"]+)"', text))
    in_code = False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
        heading = re.match(r"#{1,6} (.*)", line)
        if heading and not in_code:
            title = re.sub(r"<[^>]+>", "", heading.group(1)).strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("document", LINKED_DOCUMENTS)
def test_links_between_documents_resolve(document):
    text = open(os.path.join(REPO, document)).read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (
            os.path.normpath(os.path.join(os.path.dirname(document), path)) if path else document
        )
        if not os.path.exists(os.path.join(REPO, resolved)):
            broken.append(f"{target} (no {resolved})")
        elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
            broken.append(f"{target} (no #{anchor} in {resolved})")
    assert not broken, f"{document}: {broken}"
