"""What the evaluation configs share: the data sets as AudioMAE uses them, and its fine-tuning
recipe. Numbers are AudioMAE's (facebookresearch/AudioMAE: ft_as.sh / main_finetune_as.py for
AS-20K, main_finetune_esc.py for ESC-50 and Speech Commands; see the project's AudioMAE notes).
"""

from __future__ import annotations

import ml_collections

from uamix_jax.data import augment, pipeline

# name -> data-config fields and the splits used for training / testing.
DATASETS = {
    "as20k": dict(
        name="audioset",
        builder_config="as20k",
        target_length=1024,
        norm="audioset",
        train_split="train",
        test_split="eval",
    ),
    # ESC-50 is evaluated by 5-fold cross-validation; fold 1 held out where one split is needed.
    "esc50": dict(
        name="esc50",
        builder_config="",
        target_length=512,
        norm="esc50",
        train_split="fold2+fold3+fold4+fold5",
        test_split="fold1",
    ),
    "spc2": dict(
        name="speech_commands",
        builder_config="spc2",
        target_length=128,
        norm="speechcommands",
        train_split="train",
        test_split="test",
    ),
    "spc1": dict(
        name="speech_commands",
        builder_config="spc1",
        target_length=128,
        norm="speechcommands",
        train_split="train",
        test_split="test",
    ),
    # The built-in synthetic set has one split: its halves serve as train and test.
    "synthetic": dict(
        name="synthetic",
        builder_config="",
        target_length=1024,
        norm="audioset",
        train_split="train[:50%]",
        test_split="train[50%:]",
    ),
}


def dataset(key: str) -> tuple[ml_collections.ConfigDict, str, str]:
    """(data config, train split, test split) of a DATASETS entry."""
    if key not in DATASETS:
        raise ValueError(f"unknown evaluation data set {key!r}; expected one of {sorted(DATASETS)}")
    spec = dict(DATASETS[key])
    train_split, test_split = spec.pop("train_split"), spec.pop("test_split")
    data = pipeline.default_config()
    for field, value in spec.items():
        data[field] = value
    return data, train_split, test_split


def finetune_recipe(
    key: str,
    *,
    epochs: int,
    warmup_epochs: int,
    batch_size: int,
    weight_decay: float,
    loss: str,
    metric: str,
    specaugment: str,
    label_smoothing: float = 0.0,
    mask_t_prob: float = 0.0,
    mask_f_prob: float = 0.0,
    cross_validation_folds: int = 0,
) -> ml_collections.ConfigDict:
    """A `main.py` config of mode 'finetune' with the fields every recipe shares.

    Shared by all of AudioMAE's recipes: AdamW (PyTorch's default betas), blr 1e-3 scaled
    by batch / 256, layer decay 0.75, min lr 1e-6, drop path 0.1, no weight decay on biases,
    norms and the cls token (MAE's param_groups_lrd).
    """
    config = ml_collections.ConfigDict()
    config.mode = "finetune"
    config.init_checkpoint = ""  # an audiomae.save directory (pretrained or uaMix-tuned encoder)
    # Used only without init_checkpoint (tests, smoke runs): a preset and field overrides.
    config.model = ml_collections.ConfigDict(
        # kernels: 'auto' | 'stock' | 'cpu', the layer implementations (docs/kernels.md).
        dict(preset="base", overrides={}, drop_path_rate=0.1, kernels="auto")
    )
    config.data, config.train_split, config.test_split = dataset(key)
    config.data.batch_size = batch_size
    config.num_classes = 0  # 0 = the data set's class count
    config.cross_validation_folds = cross_validation_folds
    config.loss, config.metric, config.label_smoothing = loss, metric, label_smoothing
    freq_mask, time_mask = augment.SPECAUGMENT_SIZES[specaugment]
    config.specaug = ml_collections.ConfigDict(dict(freq_mask=freq_mask, time_mask=time_mask))
    config.mask_t_prob, config.mask_f_prob = mask_t_prob, mask_f_prob
    # steps_per_epoch 0 = train-split clips // batch_size
    config.schedule = ml_collections.ConfigDict(dict(num_epochs=epochs, steps_per_epoch=0))
    config.eval_every_epochs = 1
    config.log_every = 50
    # Resumable: a rerun continues from workdir/checkpoints.
    config.checkpoint = ml_collections.ConfigDict(
        dict(every_steps=1000, max_to_keep=1, asynchronous=True)
    )
    config.seed = 0
    config.optim = ml_collections.ConfigDict(
        dict(
            base_lr=1e-3,
            lr_batch_factor=1.0,
            warmup_fraction=warmup_epochs / epochs,
            min_lr=1e-6,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            layer_decay=0.75,
            grad_clip=None,
            weight_decay=[(r".*/(bias|scale)", 0.0), (r".*/cls_token", 0.0), (r".*", weight_decay)],
        )
    )
    return config


def compare_config(key: str) -> ml_collections.ConfigDict:
    """A `main.py` config of mode 'compare' on a DATASETS entry (checkpoints: command line)."""
    from uamix_jax.evaluation import compare  # the library holds the mode's defaults

    config = compare.default_config()
    config.data, config.train_split, config.test_split = dataset(key)
    return config
