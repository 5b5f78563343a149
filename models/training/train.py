"""One small, seeded training loop shared by every recipe (CPU, a few minutes)."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# A recipe supplies batches: (indices, rng) -> (inputs NxCxHxW float32, targets N), or
# (inputs, targets, heads N) for a network trained on several binary tasks at once: each
# image's loss is taken on its own task's output only; or (inputs, targets, heads,
# masks N x h x w at the CAM's size) where a mask says where the finding is (radiologists'
# boxes): the CAM of that image's task is then also taught to put its mass there, or,
# with ``cell_weight``, the masks are per-cell targets (1 lesion, 0 none, -1 not judged)
# that the CAM learns cell by cell.
BatchFn = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    samples_per_epoch: int | None = None  # None: one pass over the training set
    attention_weight: float = 0.0         # weight of the "map inside the boxes" loss
    # weight of the loss that takes the hospital out of the features (gradient reversal
    # against a small classifier of each film's source, Ganin et al. 2016); the batch
    # then carries a 5th element, the source of every film, 0..domains-1
    adversarial_weight: float = 0.0
    domains: int = 0
    # weight of a per-cell loss on the CAM: inside a radiologist's box vs lung outside
    # any box, on the same film (the lesion is the only answer a cell can learn there)
    cell_weight: float = 0.0
    cell_pos_weight: float = 4.0          # lesion cells are few: each counts this much


def seed_everything(seed: int, threads: int) -> None:
    """Same seed + same thread count => the same weights on the same machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)


def fit(model: nn.Module, n_train: int, make_batch: BatchFn, cfg: TrainConfig, *,
        seed: int, num_outputs: int, sample_weights: np.ndarray | None = None,
        log: Callable[[str], None] = print) -> nn.Module:
    """Train with AdamW and a one-cycle schedule; the final weights are kept (no
    checkpoint picked on validation, so validation stays an honest estimate)."""
    rng = np.random.default_rng(seed)
    per_epoch = cfg.samples_per_epoch or n_train
    steps = cfg.epochs * math.ceil(per_epoch / cfg.batch_size)
    params = list(model.parameters())
    source_head = None
    if cfg.adversarial_weight:
        width = model.classifier.in_channels
        source_head = nn.Sequential(nn.Linear(width, 64), nn.ReLU(), nn.Linear(64, cfg.domains))
        params += list(source_head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps,
                                                pct_start=0.2)
    probs = None if sample_weights is None else sample_weights / sample_weights.sum()
    step = 0
    for epoch in range(cfg.epochs):
        model.train()
        t0, total, seen = time.perf_counter(), 0.0, 0
        order = rng.choice(n_train, size=per_epoch, replace=probs is not None
                           or per_epoch > n_train, p=probs)
        for start in range(0, per_epoch, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            if len(idx) < 2:  # why: BatchNorm cannot train on a batch of one
                continue
            x, y, *heads = make_batch(idx, rng)
            if source_head is None:
                logits, cam = model(torch.from_numpy(x))
            else:  # CamNet: the source head reads its features
                logits, cam, features = model.forward_with_features(torch.from_numpy(x))
            if heads:  # one binary task per image, chosen by its head
                head = torch.from_numpy(heads[0]).long()
                logits = logits.gather(1, head[:, None])
            loss = _loss(logits, torch.from_numpy(y), 1 if heads else num_outputs,
                         cfg.label_smoothing)
            if len(heads) > 1 and cfg.attention_weight:
                cam = cam[torch.arange(len(head)), head]
                loss = loss + cfg.attention_weight * attention_loss(
                    cam, torch.from_numpy(heads[1]))
            elif len(heads) > 1 and cfg.cell_weight:
                cam = cam[torch.arange(len(head)), head]
                loss = loss + cfg.cell_weight * cell_loss(
                    cam, torch.from_numpy(heads[1]), cfg.cell_pos_weight)
            if source_head is not None:
                ramp = 2 / (1 + math.exp(-10 * step / steps)) - 1  # 0 -> 1, as in DANN
                guess = source_head(_Reverse.apply(features.mean(dim=(2, 3)), ramp))
                loss = loss + cfg.adversarial_weight * nn.functional.cross_entropy(
                    guess, torch.from_numpy(heads[2]).long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step < steps:
                sched.step()
            step += 1
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        log(f"  epoch {epoch + 1}/{cfg.epochs} loss {total / max(seen, 1):.4f} "
            f"({time.perf_counter() - t0:.0f}s)")
    model.eval()
    return model


class _Reverse(torch.autograd.Function):
    """Identity forward; the gradient reversed and scaled backward: the body learns to
    make the source head's job impossible while the head tries its best."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def attention_loss(cam: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """How much of the map lies outside the boxes: -log of the share of softmax(CAM)
    inside, averaged over the images that have a box (masks: N x h x w in [0, 1])."""
    has = masks.flatten(1).sum(1) > 0
    if not bool(has.any()):
        return cam.sum() * 0.0
    share = torch.softmax(cam[has].flatten(1), dim=1) * masks[has].flatten(1)
    return -torch.log(share.sum(1) + 1e-4).mean()


def cell_loss(cam: torch.Tensor, targets: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """Binary cross-entropy of each CAM cell against ``targets`` (N x h x w: 1 a lesion
    cell, 0 a cell with none, -1 not judged: a box's edge, another task's image)."""
    weight = torch.where(targets > 0.5, pos_weight, (targets > -0.5).float())
    if not bool((weight > 0).any()):
        return cam.sum() * 0.0
    each = nn.functional.binary_cross_entropy_with_logits(cam, targets.clamp(min=0),
                                                          reduction="none")
    return (each * weight).sum() / weight.sum()


def _loss(logits: torch.Tensor, y: torch.Tensor, num_outputs: int,
          smoothing: float) -> torch.Tensor:
    if num_outputs == 1:
        target = y.float() * (1 - smoothing) + 0.5 * smoothing
        return nn.functional.binary_cross_entropy_with_logits(logits[:, 0], target)
    return nn.functional.cross_entropy(logits, y.long(), label_smoothing=smoothing)


def fit_members(build_model: Callable[[], nn.Module], folds: np.ndarray, make_batch: BatchFn,
                cfg: TrainConfig, *, seed: int, num_outputs: int,
                sample_weights: np.ndarray | None = None,
                log: Callable[[str], None] = print) -> list[nn.Module]:
    """Cross-fitting: member k trains on every pool image whose fold is not k, so each
    pool image has one member that never saw it (its out-of-fold score)."""
    members = []
    for k in range(int(folds.max()) + 1):
        keep = np.flatnonzero(folds != k)
        log(f"  member {k + 1}/{int(folds.max()) + 1}: {len(keep)} training images")
        weights = None if sample_weights is None else sample_weights[keep]
        torch.manual_seed(seed + k)
        members.append(fit(build_model(), len(keep),
                           lambda idx, rng, keep=keep: make_batch(keep[idx], rng), cfg,
                           seed=seed + k, num_outputs=num_outputs, sample_weights=weights,
                           log=log))
    return members


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Logits ``N x K`` in eval mode."""
    model.eval()
    out = [model(torch.from_numpy(x[i:i + batch_size]))[0].numpy()
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float32)
