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
        "soundfont": ["pretty-midi>=0.2.10"],  # TimGM6mb.sf2 for uamix_jax.data.soundfont
    },
)
