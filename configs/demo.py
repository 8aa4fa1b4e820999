"""The built-in demo: a tiny MAE pretrained, then tuned, then evaluated, on the synthetic
data set, a few minutes on a CPU.

    python main.py --config=configs/demo.py --workdir=workdir/demo

The synthetic clips are generated and built into WORKDIR/data on the first run. No
pretrained checkpoint can be downloaded, so the demo first pretrains a tiny AudioMAE
(`pretrain`, configs/pretrain_demo.py) into WORKDIR/pretrain, tunes it (`tune`) in WORKDIR,
then prints the few-shot accuracy of both encoders on held-out classes (`fewshot`), also
written to WORKDIR/results.md with a t-SNE picture in WORKDIR/tsne.png. Set
--config.tune.init_checkpoint=DIR (an audiomae.save directory) to skip pretraining.
The 16 synthetic classes are labelled in sorted-name order: pretraining and tuning see the
clips of labels 0-9 without their labels; labels 10-15 are held out for the few-shot test.
"""

import ml_collections

from configs import as20k, pretrain_demo


def tune_config() -> ml_collections.ConfigDict:
    """The demo's tuning stage: configs/as20k.py at the tiny MAE's scale."""
    config = as20k.get_config()
    config.init_checkpoint = ""  # '' = the encoder the demo's pretraining stage writes
    pretrain = pretrain_demo.get_config()
    # The encoder and the clips of the MAE that configs/pretrain_demo.py pretrains.
    config.model.preset = pretrain.model.preset
    config.model.overrides = pretrain.model.overrides.copy_and_resolve_references()
    shared_fields = ("name", "builder_config", "data_dir", "split", "classes", "target_length")
    config.data.update({field: pretrain.data[field] for field in shared_fields})
    config.data.update(dict(batch_size=32, num_workers=0))
    config.data.synthetic.update(pretrain.data.synthetic)
    config.data.augment.update(dict(time_shift=192, freq_mask=24, time_mask=24))

    config.method.update(
        dict(queue_size=128, topk=3, proj_hidden_dim=256, output_dim=64, pred_hidden_dim=256)
    )
    # MAE-CT's blr 1e-4 (lr 2.5e-5 at batch 32) is too small for a tiny head and encoder in
    # a 100-step run: tests/test_tune_learns.py shows the loss falls at blr 1e-2.
    config.optim.base_lr = 1e-2
    config.schedule.update(dict(num_epochs=10, stages=((0, 0), (2, 2), (4, 4))))
    config.checkpoint.every_steps = 50
    config.log_every = 5
    return config


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.mode = "demo"
    config.distributed = False
    config.pretrain = pretrain_demo.get_config()
    config.tune = tune_config()
    held_out = tuple(range(pretrain_demo.SEEN_CLASSES, pretrain_demo.NUM_CLASSES))
    config.fewshot = ml_collections.ConfigDict(
        dict(
            split="train",
            classes=held_out,
            n_way=5,
            k_shot=5,
            n_query=15,
            episodes=300,
            seed=0,
            # SimpleShot's CL2N (see uamix_jax.evaluation.fewshot.FEATURE_TRANSFORMS).
            feature_transform="cl2n",
        )
    )
    return config
