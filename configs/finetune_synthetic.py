"""A fine-tuning run that needs no download: the ESC-50 recipe, shortened, on the built-in
synthetic set (halves as train / test). Without --config.init_checkpoint it starts a tiny
random encoder, so it is a smoke test of the mode and its outputs, minutes on a CPU.

    python main.py --config=configs/finetune_synthetic.py --workdir=workdir/ft_synthetic
"""

import ml_collections

from configs.eval_common import finetune_recipe


def get_config():
    config = finetune_recipe(
        "synthetic",
        epochs=20,
        warmup_epochs=1,
        batch_size=16,
        weight_decay=0.05,
        loss="softmax_ce",
        metric="accuracy",
        specaugment="esc50",
        label_smoothing=0.1,
    )
    config.data.target_length = 192  # the 2-s synthetic clips are 198 frames
    config.model.preset = "tiny"
    config.model.overrides = ml_collections.ConfigDict(dict(embed_dim=64, depth=2, num_heads=2))
    config.optim.base_lr = 5e-2  # a random-init encoder needs a larger step than ViT-B
    config.log_every = 5
    return config
