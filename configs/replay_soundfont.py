"""The paper's few-shot claim replayed on recorded instrument notes, on a CPU.

    python main.py --config=configs/replay_soundfont.py --workdir=workdir/replay
    python main.py --config=configs/replay_soundfont.py:quick --workdir=/tmp/replay_quick

Notes of the 128 General MIDI programs of a SoundFont (pretty-midi's TimGM6mb.sf2 unless
`soundfont` names another .sf2) are rendered NSynth-style (uamix_jax.data.soundfont), one
class per program. The classes are split once, here, by family (each GM family of 8
programs gives 5 seen, 1 validation and 2 test programs):
- SEEN: the MAE is pretrained, and every encoder tuned, on their clips (labels unused);
- VALIDATION: every choice of settings is made by evaluating on these
  (`evaluate_on='validation'`, the default);
- TEST: no stage sees them; only the final table reads them (`evaluate_on='test'`).
Stages and outputs: uamix_jax/experiments/replay.py and docs/replay.md.

The ':quick' argument runs the same stages at toy size (15 programs, half-second notes, a
few steps each) to check the whole path in about a minute; its numbers mean nothing.
"""

import ml_collections

from configs import as20k, pretrain_audioset

# Class indices of the generated data set; with all 128 programs of bank 0 they are the GM
# program numbers (0 = acoustic grand piano ... 127 = gunshot). Drawn once per family.
SEEN = (
    2, 3, 4, 5, 7, 9, 12, 13, 14, 15, 16, 17, 18, 19, 23, 24, 25, 26, 29, 30,
    34, 35, 36, 37, 39, 43, 44, 45, 46, 47, 48, 49, 51, 54, 55, 59, 60, 61, 62, 63,
    64, 65, 66, 67, 71, 72, 74, 75, 76, 77, 80, 81, 82, 83, 86, 88, 89, 90, 91, 94,
    97, 98, 99, 100, 101, 106, 107, 108, 110, 111, 112, 113, 114, 116, 119, 121, 123, 124,
    126, 127,
)  # fmt: skip
VALIDATION = (1, 8, 21, 31, 32, 41, 53, 57, 70, 73, 85, 93, 103, 109, 118, 125)
TEST = (
    0, 6, 10, 11, 20, 22, 27, 28, 33, 38, 40, 42, 50, 52, 56, 58,
    68, 69, 78, 79, 84, 87, 92, 95, 96, 102, 104, 105, 115, 117, 120, 122,
)  # fmt: skip

# The quick setting: one program of each of 15 families; class i is QUICK_PROGRAMS[i].
QUICK_PROGRAMS = (0, 8, 16, 24, 32, 40, 48, 56, 64, 73, 80, 88, 104, 112, 118)


def _data_fields(target_length: int, batch_size: int) -> dict:
    """Data fields every stage shares; name, folders and classes are set by the driver."""
    return dict(
        name="soundfont",
        builder_config="default_fbank",  # fbanks computed once, at build time
        split="train",
        target_length=target_length,
        batch_size=batch_size,
        num_workers=0,
    )


def pretrain_config(model: dict, target_length: int, batch_size: int, epochs: int):
    """AudioMAE's objective (configs/pretrain_audioset.py) at the replay's scale."""
    config = pretrain_audioset.get_config()
    config.model.update(model)
    config.data.update(_data_fields(target_length, batch_size))
    config.data.update(dict(roll=True, gain=True))  # AudioMAE's waveform-free aug on fbanks
    # blr 1.5e-3 (lr 3.75e-4 at batch 64): chosen on the validation programs over 1.5e-2,
    # whose MAE fell below an untrained encoder at every block (docs/replay.md#diagnosis).
    config.optim.update(dict(base_lr=1.5e-3, warmup_fraction=0.05))
    config.schedule.num_epochs = epochs
    config.checkpoint.every_steps = 200
    config.num_reconstructions = 4
    return config


def tune_config(encoder: dict, target_length: int, batch_size: int, epochs: int, stages):
    """uaMix-MAE (configs/as20k.py: T-CutMix, NNCLR, progressive unfreezing) at this scale."""
    config = as20k.get_config()
    config.init_checkpoint = ""  # the driver sets the pretrained encoder
    config.model.update(encoder)
    config.data.update(_data_fields(target_length, batch_size))
    # Time shift and SpecAugment-style masks for the views, in frames / bins of this length.
    config.data.augment.update(
        dict(time_shift=target_length, freq_mask=24, time_mask=max(target_length // 8, 4))
    )
    config.method.update(
        dict(
            queue_size=8 * batch_size,
            topk=5,
            proj_hidden_dim=512,
            output_dim=128,
            pred_hidden_dim=512,
        )
    )
    config.optim.base_lr = 1e-2  # tiny head and encoder: see configs/demo.py
    config.schedule.update(dict(num_epochs=epochs, stages=stages))
    config.checkpoint.every_steps = 200
    return config


def get_config(setting: str = "") -> ml_collections.ConfigDict:
    if setting not in ("", "full", "quick"):
        raise ValueError(f"configs/replay_soundfont.py:{setting}: expected 'quick' or nothing")
    quick = setting == "quick"
    config = ml_collections.ConfigDict()
    config.mode = "replay"
    config.quick = quick
    config.soundfont = ""  # '' = pretty-midi's TimGM6mb.sf2 (pip install -e '.[soundfont]')
    # How the notes are rendered (uamix_jax.data.soundfont.Settings); 1 s notes keep the
    # encoder's input at 96 frames (NSynth's 4 s would be 400). The driver passes
    # config.classes.seen as the Settings' seen_classes: those programs, the only ones any
    # training stage reads, get every key they play at seen_velocities; the validation and
    # test programs get clips_per_class notes each, for the evaluation only.
    config.notes = ml_collections.ConfigDict(
        dict(
            clips_per_class=40,
            seconds=1.0,
            held=0.75,
            velocities=(25, 50, 75, 100, 127),
            min_key=21,
            max_key=108,
            programs=(),  # () = all 128
            seed=0,
            seen_clips_per_class=0,  # 0 = every playable (key, velocity) pair
            seen_velocities=(32, 80, 127),
            # More .sf2/.sf3 files for the seen programs only, e.g. Debian's
            # /usr/share/sounds/sf3/MuseScore_General.sf3 (apt musescore-general-soundfont-small).
            extra_soundfonts=(),
        )
    )
    config.classes = ml_collections.ConfigDict(dict(seen=SEEN, validation=VALIDATION, test=TEST))
    config.evaluate_on = "validation"  # 'test' only for the final table

    target_length, batch = 96, 64
    encoder = dict(preset="tiny", overrides=dict(embed_dim=128, depth=4, num_heads=4))
    mae_model = dict(encoder, decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=4,
                     decoder_mode="global")  # fmt: skip
    # The seen programs' 20,912 notes make an epoch about 327 steps. 3 epochs of pretraining
    # keep the 1,000 steps of the 5,120-note setting (its 20 epochs were chosen on the
    # validation programs over a wider, longer MAE: benchmarks/NOTES.md#replay-larger-mae);
    # 3 epochs of tuning are about 3x its 300 steps, the length that helped on the validation
    # programs (benchmarks/NOTES.md#replay-tuning-length). Not yet run at this data size.
    config.pretrain = pretrain_config(mae_model, target_length, batch, epochs=3)
    # 3 epochs: head alone, then the top 1 and top 2 of the 4 blocks (the paper's upper half).
    config.tune = tune_config(
        encoder, target_length, batch, epochs=3, stages=((0, 0), (1, 1), (2, 2))
    )
    # The compared tunings: name -> (dotted field of config.tune, value) overrides.
    last_stage = config.tune.schedule.stages[-1]
    config.ablations = (
        ("no mixing", (("method.mix", "none"),)),
        ("TF-CutMix", (("method.mix", "tf_cutmix"),)),
        ("mixup", (("method.mix", "mixup"),)),
        ("no progressive", (("schedule.stages", ((0, last_stage[1]),)),)),
    )
    config.seeds = (0, 1, 2)  # uaMix-MAE's tuning seeds (the ablations use the first)
    # The MAE pretrained further for as many model FLOPs as uaMix-MAE's tuning took.
    config.compute_matched = True

    config.eval = ml_collections.ConfigDict(
        dict(
            n_way=5,
            k_shots=(1, 5),
            n_query=15,
            episodes=1000,
            seed=0,
            feature_transform="cl2n",
            probe_shots=(1, 5),  # labelled clips per class (from one half of each class)
            probe_seeds=(0, 1, 2, 3, 4),
            knn_k=10,
            knn_temperature=0.07,
            batch_size=64,
            # Which tokens of which block make a clip's feature, the same for every encoder
            # row (uamix_jax.evaluation.embeddings.parse_readout; docs/replay.md#diagnosis).
            readout="mean_patch",
        )
    )
    config.tsne = ml_collections.ConfigDict(dict(max_points=800, seed=0))

    if quick:
        config.notes.update(
            dict(
                clips_per_class=8,
                seen_clips_per_class=12,
                seen_velocities=(64, 127),
                seconds=0.5,
                held=0.35,
                velocities=(64, 127),
                programs=QUICK_PROGRAMS,
            )  # fmt: skip
        )
        config.classes.update(
            dict(seen=(0, 1, 2, 3, 4), validation=(5, 6, 7, 8, 9), test=(10, 11, 12, 13, 14))
        )
        target_length, batch = 48, 8
        encoder = dict(preset="tiny", overrides=dict(embed_dim=32, depth=2, num_heads=2))
        mae_model = dict(encoder, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2,
                         decoder_mode="global")  # fmt: skip
        config.pretrain = pretrain_config(mae_model, target_length, batch, epochs=2)
        # One stage (one compiled step per run); the full setting's stages are the jobs'.
        config.tune = tune_config(encoder, target_length, batch, epochs=2, stages=((0, 1),))
        config.tune.method.update(
            dict(
                queue_size=2 * batch, topk=2, proj_hidden_dim=32, output_dim=16, pred_hidden_dim=32
            )  # fmt: skip
        )
        # Two seeds exercise the across-seed summary; the ablations' loop is the seeds' loop
        # with field overrides (tests/test_replay.py checks those), so none runs here.
        config.ablations = ()
        config.seeds = (0, 1)
        config.eval.update(
            dict(
                n_query=3, episodes=20, probe_shots=(1,), probe_seeds=(0, 1), knn_k=3, batch_size=16
            )  # fmt: skip
        )
        config.tsne.max_points = 40
    return config
