"""Small CNNs whose class activation map is a second output.

The classifier is a 1x1 convolution applied to the last feature map *before* global
average pooling; because both are linear, ``mean(conv1x1(F)) == linear(mean(F))``, so
the logits are exactly those of a GAP + linear head and the per-location map is the
CAM (Zhou et al. 2016). Exported to ONNX it is an ordinary output: no gradients are
needed on the box to draw a heatmap.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class CamNet(nn.Module):
    """``widths[i]`` channels at stage i; each stage after the first halves the size.

    Stage 0 is one convolution (cheap at full resolution, which is where the CPU time
    goes); later stages have two. ``stem_stride`` > 1 downsamples large inputs early.
    """

    def __init__(self, in_channels: int, widths: Sequence[int], num_outputs: int,
                 stem_stride: int = 1, dropout: float = 0.2, peak: int = 0) -> None:
        super().__init__()
        # peak (the map's side, e.g. 8): the logit is the map's strongest 3x3
        # neighbourhood (mean of 3x3, then the maximum), not its mean: a local finding
        # decides, and evidence spread evenly over the film (a hospital's look) moves it
        # no more than one neighbourhood. A fixed side keeps the export's MaxPool static.
        self.peak = peak
        layers: list[nn.Module] = [conv_bn_relu(in_channels, widths[0], stride=stem_stride)]
        for cin, cout in zip(widths[:-1], widths[1:], strict=False):
            layers += [nn.MaxPool2d(2), conv_bn_relu(cin, cout), conv_bn_relu(cout, cout)]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(widths[-1], num_outputs, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, cam, _ = self.forward_with_features(x)
        return logits, cam

    def forward_with_features(self, x: torch.Tensor
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, CAM, last feature map): training's source head reads the features."""
        features = self.features(x)
        cam = self.classifier(self.dropout(features))
        return self.pool(cam), cam, features

    def pool(self, cam: torch.Tensor) -> torch.Tensor:
        if not self.peak:
            return cam.mean(dim=(2, 3))
        local = nn.functional.avg_pool2d(cam, 3, stride=1, padding=1, count_include_pad=False)
        return nn.functional.max_pool2d(local, self.peak).flatten(1)


class HeadsEnsemble(nn.Module):
    """The shipped model: several members trained on different folds, averaged.

    ``heads`` picks which of each member's outputs are served (a member trained on two
    tasks serves one of them). Logits and CAMs are averaged alike, so the served CAM's
    spatial mean still equals the served logits.
    """

    def __init__(self, members: Sequence[nn.Module], heads: Sequence[int] | None = None) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.heads = list(heads) if heads is not None else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, cams = [], []
        for member in self.members:
            lg, cam = member(x)
            if self.heads is not None:
                lg, cam = lg[:, self.heads], cam[:, self.heads]
            logits.append(lg)
            cams.append(cam)
        return torch.stack(logits).mean(0), torch.stack(cams).mean(0)
