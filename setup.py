"""uamix-jax: uaMix-MAE contrastive tuning of AudioMAE encoders in JAX/Flax."""

from setuptools import find_packages, setup

# The JAX ecosystem moves fast and breaks APIs between minor versions, so the
# core stack is pinned to the versions the test suite runs against.
CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "ml-collections==1.1.0",
    "tensorflow-datasets==4.9.10",
    "array-record==0.8.6",
    "grain==0.2.18",
    "numpy>=1.26",
    "scipy>=1.10",  # float32 FFT and sparse mel matrix for the host fbank
    "absl-py>=2.0",
    "librosa>=0.10",
    "soundfile>=0.12",
    "tqdm>=4.60",
    "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
    "matplotlib>=3.7",  # training curves, t-SNE pictures
    "scikit-learn>=1.3",  # logistic-regression probes, t-SNE
    "safetensors>=0.4",  # reading timm-format checkpoints without torch
]
# Only this exact version: on the project's machines it is a local CPU build;
# any other spec pulls the CUDA build (gigabytes).
TORCH = ["torch==2.13.0"]
# hear-eval-kit's runtime imports (docs/hear.md, "hear-eval-kit"). The kit itself
# pins numpy==1.19.2 (no wheel past Python 3.8), so it goes in afterwards with
# `pip install --no-deps heareval==2021.1.3`.
HEAR = TORCH + [
    "click>=8",
    "dcase-util>=0.2.16",
    "intervaltree>=3",
    "more-itertools>=8",
    "pandas>=1.5",
    "pynvml>=11",
    "python-slugify>=5",
    "sed-eval>=0.2.1",
    "soundfile>=0.12",
    "tensorflow-cpu>=2.16",  # the kit's runners import it; CPU build (docs/hear.md, GPU)
    "torchinfo>=1.5",
    "tqdm>=4.60",
    "scikit-learn>=1.3",
    "pytorch-lightning>=1.9,<2",  # 2.x drops Trainer(gpus=...), which the kit passes
    "setuptools<81",  # dcase_util imports pkg_resources
]

setup(
    name="uamix-jax",
    version="0.1.0",
    description="uaMix-MAE: contrastive tuning of pretrained audio MAEs with unsupervised audio mixtures, in JAX/Flax",
    packages=find_packages(include=["uamix_jax*", "weights_conversion*", "configs*"]),
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={
        "torch": TORCH,
        "test": TORCH + ["pytest>=7", "pytest-xdist>=3"],
        "bench": TORCH,
        "hear": HEAR,
        # TimGM6mb.sf2 for uamix_jax.data.soundfont; its synthesiser, tinysoundfont==0.3.7, is
        # installed with `pip install --no-deps` (its PyAudio requirement has no Linux wheel).
        "soundfont": ["pretty-midi>=0.2.10"],
    },
)
