"""The audio-visual sync model: does this mouth move with this sound? SyncNet-style, one readable file.

Data flow for N windows of one face track and K candidate audio windows each:

1. video: mouth crops ``uint8 [N, T, 48, 96]`` (grayscale, preprocessor/mouth.py; T = the visual model's
   clip length, frames every 2nd video frame: about 0.5-0.7 s). Inside the graph: cast, per-window
   standardisation (lighting and skin tone say nothing about sync) and a second channel of frame
   differences (the motion is the signal), pooled to 24 x 48. A per-frame 2-D conv stack (T folded into
   the batch) turns each frame into a vector, two temporal 1-D convs mix neighbouring frames, a 1x1 conv
   gives an embedding per frame: [E, T].
2. audio: log-mel windows ``float32 [N, K, 80, 64]`` (preprocessor/audio.py: 80 mels, the same span of
   time as the T frames resampled to 64 frames), standardised per window (loudness says nothing about
   sync); 1-D convs over time (mels as channels) down to T steps, a 1x1 conv to an embedding per step.
3. ``sync_logits [N, K]`` = scale * cosine of the flattened [E, T] embeddings (scale learned, clamped):
   time step against time step, nothing mixes distant times (SyncNet.forward says why).

Trained by training/train_sync.py (InfoNCE over K candidates: the aligned audio, the same clip's audio
shifted by 0.2-1.0 s, other clips' audio); the offset curve and the decision rule live in
preprocessor/audio_visual.py. Exported by training/export_sync.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from deepfake.contracts.metadata import SyncMeta

MOUTH_H, MOUTH_W = 48, 96
N_MELS, MEL_FRAMES = 80, 64
MAX_SCALE = 50.0


@dataclass
class SyncConfig:
    name: str = "small"
    clip_len: int = 8
    frame_channels: tuple[int, ...] = (16, 32, 48)  # per-frame 2-D convs, each stride 2
    # 1-D convs over mel frames, each stride 2; kept narrow: a track's offset curve runs the audio side
    # once per candidate offset (51 per window), the video side once
    audio_channels: tuple[int, ...] = (64, 64, 64)
    embed_dim: int = 32  # per time step
    dropout: float = 0.2
    mel_pool: int = 1  # average this many neighbouring mel bands first (coarser spectra: less to memorise)
    # the standardised mouth itself as a channel beside its frame differences; False: motion only (a
    # speaker's lips, teeth and skin cannot be memorised, only how they move)
    appearance: bool = True
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SyncConfig:
        d = dict(d)
        for key in ("frame_channels", "audio_channels"):
            d[key] = tuple(d[key])
        return cls(**d)


CONFIGS = {
    "small": SyncConfig(),
    # fewer channels, 20 mel bands: less capacity to memorise a hundred training clips
    "compact": SyncConfig(
        name="compact", frame_channels=(8, 16, 32), audio_channels=(32, 32, 32), embed_dim=16, mel_pool=4
    ),
    # motion only: the frame-difference channel without the mouth's appearance
    "motion": SyncConfig(name="motion", appearance=False),
    # random-init export for tests: same graph, a few hundred parameters per layer
    "tiny": SyncConfig(name="tiny", frame_channels=(4, 8), audio_channels=(8, 8, 8), embed_dim=8),
}


def conv_bn(conv: nn.Module, channels: int, dims: int) -> nn.Sequential:
    norm = nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)
    return nn.Sequential(conv, norm, nn.ReLU(inplace=True))


def standardise(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    mean = x.mean(dim=dims, keepdim=True)
    std = (x - mean).pow(2).mean(dim=dims, keepdim=True).add(1e-5).sqrt()
    return (x - mean) / std


class VideoEncoder(nn.Module):
    """uint8 [N, T, H, W] -> [N, E, T]: one embedding per frame, neighbouring frames mixed."""

    def __init__(self, cfg: SyncConfig):
        super().__init__()
        self.appearance = cfg.appearance
        layers, c_in = [], 2 if cfg.appearance else 1
        for i, c in enumerate(cfg.frame_channels):
            k = 5 if i == 0 else 3
            layers.append(conv_bn(nn.Conv2d(c_in, c, k, stride=2, padding=k // 2, bias=False), c, 2))
            c_in = c
        self.frames = nn.Sequential(*layers)
        self.temporal = nn.Sequential(
            conv_bn(nn.Conv1d(c_in, c_in, 3, padding=1, bias=False), c_in, 1),
            conv_bn(nn.Conv1d(c_in, c_in, 3, padding=1, bias=False), c_in, 1),
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Conv1d(c_in, cfg.embed_dim, 1)

    def forward(self, mouth: torch.Tensor) -> torch.Tensor:
        n, t, h, w = mouth.shape
        x = standardise(mouth.float(), (1, 2, 3))
        diff = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)
        x = torch.stack([x, diff] if self.appearance else [diff], dim=2).reshape(n * t, -1, h, w)
        x = F.avg_pool2d(x, 2)  # 24 x 48: the lips' opening still spans pixels, at a quarter of the cost
        x = self.frames(x).mean(dim=(2, 3))  # [N*T, C]
        x = x.reshape(n, t, -1).transpose(1, 2)  # [N, C, T]
        return self.out(self.drop(self.temporal(x)))


class AudioEncoder(nn.Module):
    """float32 [M, 80, 64] -> [M, E, T]: one embedding per video frame's stretch of sound."""

    def __init__(self, cfg: SyncConfig):
        super().__init__()
        self.mel_pool = cfg.mel_pool
        layers, c_in = [], N_MELS // cfg.mel_pool
        for c in cfg.audio_channels:
            layers.append(conv_bn(nn.Conv1d(c_in, c, 3, stride=2, padding=1, bias=False), c, 1))
            c_in = c
        layers.append(conv_bn(nn.Conv1d(c_in, c_in, 3, padding=1, bias=False), c_in, 1))
        self.convs = nn.Sequential(*layers)
        steps = MEL_FRAMES // 2 ** len(cfg.audio_channels)
        self.pool = nn.AdaptiveAvgPool1d(cfg.clip_len) if steps != cfg.clip_len else nn.Identity()
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Conv1d(c_in, cfg.embed_dim, 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if self.mel_pool > 1:
            mel = F.avg_pool2d(mel[:, None], (self.mel_pool, 1))[:, 0]
        x = self.convs(standardise(mel, (1, 2)))
        return self.out(self.drop(self.pool(x)))


class SyncNet(nn.Module):
    def __init__(self, cfg: SyncConfig):
        super().__init__()
        self.cfg = cfg
        self.video = VideoEncoder(cfg)
        self.audio = AudioEncoder(cfg)
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def forward(self, mouth: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """mouth uint8 [N, T, 48, 96], mel float32 [N, K, 80, 64] -> sync logits [N, K].

        The embeddings stay per time step ([E, T], flattened and normalised), so the similarity is a sum
        over time of each frame's embedding against the sound of that frame's stretch: the model can only
        match what happens at the same moment (no layer mixes distant times), which is what sync is, and
        what keeps it from memorising whole training clips."""
        n, k = mel.shape[0], mel.shape[1]
        v = F.normalize(self.video(mouth).flatten(1), dim=-1)  # [N, E*T]
        a = self.audio(mel.reshape(n * k, N_MELS, MEL_FRAMES)).flatten(1)
        a = F.normalize(a, dim=-1).reshape(n, k, -1)
        scale = self.log_scale.exp().clamp(max=MAX_SCALE)
        return scale * (a * v[:, None, :]).sum(-1)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class TorchSyncModel:
    """A SyncNet in-process behind preprocessor/audio_visual.py's SyncModel protocol (evaluation, tests)."""

    def __init__(self, model: SyncNet, meta: SyncMeta):
        self.model = model.eval()
        self.meta = meta

    @torch.no_grad()
    def sync_logits(self, mouth: np.ndarray, mel: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(mouth), torch.from_numpy(mel)).numpy()

    def close(self) -> None:
        pass
