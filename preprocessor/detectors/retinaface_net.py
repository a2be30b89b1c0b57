"""RetinaFace with a MobileNet-0.25 backbone, in torch, for converting the public checkpoint to ONNX.

Only `make weights` (preprocessor/detectors/retinaface_export.py) imports this module: the runtime
detector (retinaface.py) runs the exported ONNX file with onnxruntime, so services need no torch.

The module and parameter names follow the layout of the widely used MobileNet-0.25 checkpoints
(`mobilenet0.25_Final.pth`: body.stage1..3, fpn.output1..3/merge1..2, ssh1..3, ClassHead, BboxHead,
LandmarkHead), so a state dict loads with strict=True. Two public checkpoints share that layout but
not their activations (see retinaface.VARIANTS): biubug6/Pytorch_Retinaface uses LeakyReLU(0.1),
biubug6/Face-Detector-1MB-with-landmark plain ReLU; `leaky` selects it. Structure, from the RetinaFace
paper (Deng et al., 2019) and the checkpoints' shapes:
- backbone: MobileNetV1 at width 0.25 (depthwise-separable convs, BN, activation); feature maps
  at strides 8, 16 and 32 with 64, 128 and 256 channels;
- FPN: 1x1 lateral convs to 64 channels, top-down nearest upsampling + add, 3x3 merge convs;
- SSH context module per level: parallel 3x3 / two 3x3 (5x5) / three 3x3 (7x7) branches, concatenated;
- heads per level, two anchors per cell: face/background logits, box offsets, 5 landmarks.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ANCHORS_PER_CELL = 2


def conv_bn(inp: int, out: int, leaky: float | None, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    """Conv (no bias) + BN (+ LeakyReLU unless leaky is None; slope 0 is ReLU); indices as in the file."""
    layers: list[nn.Module] = [
        nn.Conv2d(inp, out, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out),
    ]
    if leaky is not None:
        layers.append(nn.LeakyReLU(negative_slope=leaky, inplace=True))
    return nn.Sequential(*layers)


def conv_dw(inp: int, out: int, stride: int, leaky: float) -> nn.Sequential:
    """Depthwise 3x3 + BN + act, then pointwise 1x1 + BN + act (indices 0,1,3,4 carry weights)."""
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
        nn.Conv2d(inp, out, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out),
        nn.LeakyReLU(negative_slope=leaky, inplace=True),
    )


class MobileNetV1(nn.Module):
    """MobileNetV1 x0.25 returning the stride-8, 16 and 32 feature maps."""

    def __init__(self, leaky: float) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, leaky, stride=2),
            conv_dw(8, 16, 1, leaky),
            conv_dw(16, 32, 2, leaky),
            conv_dw(32, 32, 1, leaky),
            conv_dw(32, 64, 2, leaky),
            conv_dw(64, 64, 1, leaky),
        )
        self.stage2 = nn.Sequential(
            conv_dw(64, 128, 2, leaky), *[conv_dw(128, 128, 1, leaky) for _ in range(5)]
        )
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2, leaky), conv_dw(256, 256, 1, leaky))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return [c3, c4, c5]


class FPN(nn.Module):
    def __init__(
        self, leaky: float, in_channels: tuple[int, int, int] = (64, 128, 256), out: int = 64
    ) -> None:
        super().__init__()
        self.output1 = conv_bn(in_channels[0], out, leaky, kernel=1)
        self.output2 = conv_bn(in_channels[1], out, leaky, kernel=1)
        self.output3 = conv_bn(in_channels[2], out, leaky, kernel=1)
        self.merge1 = conv_bn(out, out, leaky)
        self.merge2 = conv_bn(out, out, leaky)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        p4 = self.merge2(p4 + F.interpolate(p5, size=p4.shape[2:], mode="nearest"))
        p3 = self.merge1(p3 + F.interpolate(p4, size=p3.shape[2:], mode="nearest"))
        return [p3, p4, p5]


class SSH(nn.Module):
    """Single-stage headless context module: 3x3, 5x5 and 7x7 receptive fields side by side."""

    def __init__(self, leaky: float, inp: int = 64, out: int = 64) -> None:
        super().__init__()
        self.conv3X3 = conv_bn(inp, out // 2, None)
        self.conv5X5_1 = conv_bn(inp, out // 4, leaky)
        self.conv5X5_2 = conv_bn(out // 4, out // 4, None)
        self.conv7X7_2 = conv_bn(out // 4, out // 4, leaky)
        self.conv7x7_3 = conv_bn(out // 4, out // 4, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3 = self.conv3X3(x)
        mid = self.conv5X5_1(x)
        branch5 = self.conv5X5_2(mid)
        branch7 = self.conv7x7_3(self.conv7X7_2(mid))
        return F.relu(torch.cat([branch3, branch5, branch7], dim=1))


class Head(nn.Module):
    """A 1x1 conv predicting `values` numbers per anchor, flattened to [N, cells * anchors, values]."""

    def __init__(self, values: int, channels: int = 64) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(channels, ANCHORS_PER_CELL * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)  # anchors ordered row, column, anchor-in-cell
        return out.reshape(out.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    """Input: BGR float [N, 3, H, W] minus the mean (104, 117, 123), unscaled.

    Output: box offsets [N, A, 4], face probabilities [N, A, 2] (softmax: background, face) and
    landmark offsets [N, A, 10], for the A anchors of the three levels (strides 8, 16, 32).
    """

    def __init__(self, leaky: float) -> None:
        super().__init__()
        self.body = MobileNetV1(leaky)
        self.fpn = FPN(leaky)
        self.ssh1, self.ssh2, self.ssh3 = SSH(leaky), SSH(leaky), SSH(leaky)
        self.ClassHead = nn.ModuleList([Head(2) for _ in range(3)])
        self.BboxHead = nn.ModuleList([Head(4) for _ in range(3)])
        self.LandmarkHead = nn.ModuleList([Head(10) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p3, p4, p5 = self.fpn(self.body(x))
        feats = [self.ssh1(p3), self.ssh2(p4), self.ssh3(p5)]
        boxes = torch.cat([h(f) for h, f in zip(self.BboxHead, feats, strict=True)], dim=1)
        logits = torch.cat([h(f) for h, f in zip(self.ClassHead, feats, strict=True)], dim=1)
        landmarks = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats, strict=True)], dim=1)
        return boxes, F.softmax(logits, dim=-1), landmarks


def load_checkpoint(path: Path, leaky: float) -> RetinaFace:
    """Build the network and load a MobileNet-0.25 checkpoint strictly (a 'module.' prefix is stripped).

    Strict loading turns any mismatch between this definition and the file into an error that names
    the offending keys, instead of a detector that silently finds nothing.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a RetinaFace state dict (got {type(state).__name__})")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = RetinaFace(leaky)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"{path} does not match RetinaFace MobileNet-0.25 "
            f"(expected the mobilenet0.25_Final.pth layout): {exc}"
        ) from exc
    return model.eval()
