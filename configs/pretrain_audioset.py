"""AudioMAE ViT-B/16 pretraining on AudioSet-2M, AudioMAE's published recipe.

    python main.py --config=configs/pretrain_audioset.py --workdir=workdir/pretrain_as2m \
      --config.data.manual_dir=/path/to/audioset

Numbers from facebookresearch/AudioMAE submit_pretrain_audioset2M.sh and main_pretrain.py
(Huang et al., "Masked Autoencoders that Listen", NeurIPS 2022): mask ratio 0.8,
norm_pix_loss, 33 epochs with 3 of warmup, effective batch 512 (64 GPUs x 8), base lr 2e-4
scaled by batch / 256, AdamW (0.9, 0.95), weight decay 1e-4 on every tensor but biases and
norms (timm's add_weight_decay), no layer decay, roll + magnitude waveform augmentation,
and the local decoder (--decoder_mode 1: 16 shifted-window blocks of width 512, 16 heads).
--config.model.decoder_mode=global gives models_mae.py's global decoder (8 blocks there).
"""

import ml_collections

from uamix_jax.data import pipeline


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.mode = "pretrain"
    config.seed = 0
    config.distributed = False  # True: jax.distributed finds the other hosts (docs/multihost.md)
    # A mae.save directory to continue pretraining (its shape wins over config.model), e.g.
    # AudioMAE's pretrained.pth converted with --with_decoder; '' = a fresh MAE.
    config.init_checkpoint = ""
    config.model = ml_collections.ConfigDict(
        dict(
            preset="base",
            overrides=ml_collections.ConfigDict(),
            dtype="float32",
            drop_path_rate=0.0,
            kernels="auto",  # 'auto' | 'stock' | 'cpu': layer implementations (docs/kernels.md)
            decoder_embed_dim=512,
            decoder_depth=16,
            decoder_num_heads=16,
            decoder_mode="local",
        )
    )

    config.data = pipeline.default_config()
    config.data.update(
        dict(
            name="audioset",
            builder_config="as2m",
            data_dir="data",
            split="train",
            target_length=1024,
            batch_size=512,
            num_workers=8,
            roll=True,
            gain=True,
        )
    )
    config.data.norm = "audioset"

    # kind 'random': mask_ratio of the tokens; 'time_freq': whole time rows (mask_t_prob)
    # and frequency columns (mask_f_prob), AudioMAE's --mask_2d defaults 0.7 / 0.3.
    config.masking = ml_collections.ConfigDict(
        dict(kind="random", mask_ratio=0.8, mask_t_prob=0.7, mask_f_prob=0.3)
    )
    config.norm_pix_loss = True

    config.optim = ml_collections.ConfigDict(
        dict(
            base_lr=2e-4,
            lr_batch_factor=1.0,  # lr = blr * batch / 256, as AudioMAE
            warmup_fraction=3 / 33,
            min_lr=0.0,
            b1=0.9,
            b2=0.95,
            eps=1e-8,
            layer_decay=1.0,
            grad_clip=None,
            # (regex on param path, decay), first match wins; biases and norms: none.
            weight_decay=((r".*/(kernel|cls_token|mask_token)", 1e-4),),
        )
    )
    config.schedule = ml_collections.ConfigDict(dict(num_epochs=33))

    config.checkpoint = ml_collections.ConfigDict(
        dict(every_steps=1000, max_to_keep=3, asynchronous=True)
    )
    config.log_every = 50
    config.num_reconstructions = 4  # clips drawn in workdir/reconstructions.png
    return config
