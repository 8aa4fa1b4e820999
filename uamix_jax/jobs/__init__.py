"""The jobs `main.py` launches, one module per mode, each a ``run(config, workdir)``.

They wire the library layers (models, data, training, pretraining, evaluation) to the
shared loop in `uamix_jax.training.runner`; the demo composes the others.
"""
