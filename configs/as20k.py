"""uaMix-MAE tuning of AudioMAE ViT-B on AudioSet-20K, labels unused.

    python main.py --config=configs/as20k.py --workdir=workdir/as20k \
      --config.init_checkpoint=checkpoints/audiomae_as2m \
      --config.data.manual_dir=/path/to/audioset

The method's numbers and their sources: docs/method.md (MAE-CT's ViT-B defaults where the paper
is silent); the epoch counts of the progressive schedule are this project's choice.
"""

import ml_collections

from uamix_jax.data import pipeline
from uamix_jax.training import nnclr


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.mode = "tune"
    config.seed = 0
    config.distributed = False  # True: jax.distributed finds the other hosts (docs/multihost.md)
    # An audiomae.save directory, e.g. written by weights_conversion from pretrained.pth.
    config.init_checkpoint = "checkpoints/audiomae_as2m"
    # Used only without init_checkpoint (random init); the checkpoint's own shape wins.
    config.model = ml_collections.ConfigDict(
        dict(
            preset="base",
            overrides=ml_collections.ConfigDict(),
            dtype="float32",
            drop_path_rate=0.0,
            kernels="auto",  # 'auto' | 'stock' | 'cpu': layer implementations (docs/kernels.md)
        )
    )

    config.data = pipeline.default_config()
    config.data.update(
        dict(
            name="audioset",
            builder_config="as20k",
            data_dir="data",
            split="train",
            target_length=1024,
            batch_size=256,
            num_workers=8,
        )
    )
    config.data.norm = "audioset"

    config.method = nnclr.default_method_config()

    config.optim = ml_collections.ConfigDict(
        dict(
            base_lr=1e-4,
            lr_batch_factor=2.0,  # lr = 1e-4 * 2 * batch / 256 (MAE-CT)
            warmup_fraction=0.2,
            min_lr=0.0,
            b1=0.9,
            b2=0.95,
            eps=1e-8,
            layer_decay=0.65,
            grad_clip=None,
            # (regex on param path, decay), first match wins; biases, norms, cls token: none.
            weight_decay=((r"encoder/.*/kernel", 0.05), (r"head/.*/kernel", 1e-5)),
        )
    )

    # (epoch, trainable top blocks): head alone, then 2, 4, 6 blocks (upper half of ViT-B).
    config.schedule = ml_collections.ConfigDict(
        dict(num_epochs=30, stages=((0, 0), (5, 2), (10, 4), (15, 6)))
    )

    config.checkpoint = ml_collections.ConfigDict(
        dict(every_steps=200, max_to_keep=3, asynchronous=True)
    )
    config.log_every = 10
    return config
