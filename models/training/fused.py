"""An ensemble of CamNets run as one network: every member's layer in one grouped conv.

A ``HeadsEnsemble`` of five members is five graphs run one after another. The members
share their architecture and their input, so layer l of all five is one convolution:

- the first conv reads the same image for every member: its output channels are the
  members' output channels side by side (``groups=1``);
- every later conv sees the members' channels side by side and must not mix them:
  ``groups = members`` (the weight tensor is the members' weights concatenated);
- the classifier (1x1) is grouped the same way, keeping only the served heads;
- MaxPool and ReLU act channel by channel, so they need no change (a ReLU before a
  MaxPool moves after it: the same values, a quarter of the work in INT8).

BatchNorm is folded into each conv (as the ONNX export folds it). The output is what
the ensemble outputs: each member's pooled logit and CAM, averaged over members — a
mean then a peak is not a peak then a mean, so pooling is done member by member.
Exact up to float summation order (max |diff| ~1e-6 on real images).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from models.training.nets import CamNet, HeadsEnsemble

ConvParams = tuple[np.ndarray, np.ndarray]  # (weight O x I x k x k, bias O), BN folded


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> ConvParams:
    """The conv's (weight, bias) with an eval-mode BatchNorm after it folded in."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros(w.shape[0],
                                                                              dtype=w.dtype)
    if bn is not None:
        scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        w = w * scale[:, None, None, None]
        b = (b - bn.running_mean.double()) * scale + bn.bias.detach().double()
    return w.float().numpy(), b.float().numpy()


def member_convs(member: CamNet) -> list[ConvParams]:
    """Every conv of a member in forward order (features, then classifier), BN folded."""
    params = []
    for block in member.features:
        if isinstance(block, nn.Sequential):
            params.append(fold_batchnorm(block[0], block[1]))
    params.append(fold_batchnorm(member.classifier, None))
    return params


class FusedCamEnsemble(nn.Module):
    """``members`` CamNets of ``template``'s architecture run as one grouped network.

    ``convs[m]`` is member m's conv parameters in forward order (``member_convs``);
    ``heads`` picks the served outputs, as ``HeadsEnsemble`` does.
    """

    def __init__(self, template: CamNet, convs: Sequence[Sequence[ConvParams]],
                 heads: Sequence[int] | None, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.members = len(convs)
        self.peak = template.peak
        layers: list[nn.Module] = []
        index = 0
        for block in template.features:
            if isinstance(block, nn.MaxPool2d):
                layers.append(nn.MaxPool2d(block.kernel_size, block.stride))
                continue
            like = block[0]
            layers += [self._grouped(like, [c[index] for c in convs], first=index == 0),
                       nn.ReLU(inplace=True)]
            index += 1
        # why: max commutes with ReLU, so pool first: in INT8 the ReLU runs in float
        # between a DequantizeLinear and a QuantizeLinear (symmetric activations cannot
        # fold it), and after the pool that round trip touches a quarter of the values
        for i in range(len(layers) - 1):
            if isinstance(layers[i], nn.ReLU) and isinstance(layers[i + 1], nn.MaxPool2d):
                layers[i], layers[i + 1] = layers[i + 1], layers[i]
        self.features = nn.Sequential(*layers)
        picked = [((w[heads], b[heads]) if heads is not None else (w, b))
                  for w, b in (c[index] for c in convs)]
        self.classifier = self._grouped(template.classifier, picked, first=False)
        self.outputs = picked[0][0].shape[0]
        with torch.no_grad():
            side = self.features(torch.zeros(1, *input_shape)).shape[2:]
        self.cam_side = (int(side[0]), int(side[1]))

    def _grouped(self, like: nn.Conv2d, params: Sequence[ConvParams], *, first: bool
                 ) -> nn.Conv2d:
        n = len(params)
        out_ch, in_ch = params[0][0].shape[:2]
        conv = nn.Conv2d(in_ch * (1 if first else n), out_ch * n, like.kernel_size,
                         stride=like.stride, padding=like.padding,
                         groups=1 if first else n, bias=True)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(np.concatenate([w for w, _ in params])))
            conv.bias.copy_(torch.from_numpy(np.concatenate([b for _, b in params])))
        return conv

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cams = self.classifier(self.features(x))          # B x (members*K) x h x w
        if self.peak:
            local = nn.functional.avg_pool2d(cams, 3, stride=1, padding=1,
                                             count_include_pad=False)
            logits = nn.functional.max_pool2d(local, self.peak).flatten(1)
        else:
            logits = cams.mean(dim=(2, 3))
        n, k, (h, w) = self.members, self.outputs, self.cam_side
        # why: constant shapes (batch as -1) keep the ONNX graph free of Shape ops
        return logits.reshape(-1, n, k).mean(1), cams.reshape(-1, n, k, h, w).mean(1)

    @classmethod
    def from_ensemble(cls, ensemble: HeadsEnsemble, input_shape: Sequence[int]
                      ) -> FusedCamEnsemble:
        """The same function as a (trained, eval-mode) ``HeadsEnsemble`` of CamNets."""
        members = list(ensemble.members)
        return cls(members[0], [member_convs(m) for m in members], ensemble.heads,
                   input_shape).eval()
