"""TFDS builders (array_record, readable without TensorFlow) for the project's audio layouts."""

from uamix_jax.data.builders.registry import (
    BUILDERS,
    SKIPPED_FILE,
    BuildReport,
    build,
    built_report,
    dataset_dir,
    is_built,
    make_builder,
)

__all__ = [
    "BUILDERS",
    "SKIPPED_FILE",
    "BuildReport",
    "build",
    "built_report",
    "dataset_dir",
    "is_built",
    "make_builder",
]
