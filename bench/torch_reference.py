"""A plain-PyTorch SimCLR train step: the reference that bench/train_step.py times jaxcl against.

Written for the benchmark only, without torchvision, to match jaxcl's pieces:

* ResNet-18 (BasicBlock, stages 2-2-2-2, widths 64-128-256-512) with SimCLR's
  CIFAR stem (3x3 stride-1 conv, BatchNorm, ReLU, no max-pool), bias-free convs,
  1x1 conv + BatchNorm projection shortcuts, global average pooling;
  BatchNorm momentum 0.1 in PyTorch's convention (= decay 0.9), eps 1e-5.
* SimCLR v2 projection head as ``jaxcl.models.SimCLRv2Projection``: three
  bias-free Linear layers 512-512-512-128, each followed by BatchNorm (the last
  without a bias and without ReLU).
* NT-Xent as ``jaxcl.losses.nt_xent``: L2-normalised views, logits / T with the
  self-similarity masked, cross-entropy against the other view, mean over 2N.
* LARS with the SimCLR equations: ``g += wd * w``; trust ratio
  ``eta * ||w|| / ||g||`` (1 if either norm is 0); ``v = m v + lr * trust * g``;
  ``w -= v``; parameters with ndim <= 1 (biases, BatchNorm) skip both the decay
  and the trust ratio.

Run on its own for a quick throughput figure:
  nice -n 15 .venv/bin/python bench/torch_reference.py
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's own idiom)
from torch import nn

BN_MOMENTUM = 0.1  # PyTorch's convention: new = (1 - 0.1) old + 0.1 batch.
BN_EPSILON = 1e-5


def _batch_norm(channels: int, *, affine_bias: bool = True, dims: int = 2) -> nn.Module:
    norm_class = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
    norm = norm_class(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)
    if not affine_bias:
        norm.bias.requires_grad_(False)
        nn.init.zeros_(norm.bias)
    return norm


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a residual connection (projection where shapes change)."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = _batch_norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = _batch_norm(channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), _batch_norm(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class _PooledResNet(nn.Module):
    """A stem, residual blocks and global average pooling; He-initialised convolutions."""

    def _set_blocks(self, blocks, channels: int):
        self.blocks = nn.Sequential(*blocks)
        self.num_features = channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.mean(self.blocks(self.stem(images)), dim=(2, 3))


class ResNet18Small(_PooledResNet):
    """ResNet-18 with the 3x3 stride-1 CIFAR stem; returns pooled (N, 512) features."""

    def __init__(self, in_channels: int = 3, widths=(64, 128, 256, 512)):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            _batch_norm(widths[0]),
            nn.ReLU(),
        )
        blocks, channels = [], widths[0]
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            blocks += [BasicBlock(channels, width, stride), BasicBlock(width, width, 1)]
            channels = width
        self._set_blocks(blocks, channels)


class Bottleneck(nn.Module):
    """1x1, 3x3 (with the stride, as torchvision's ResNet v1.5) and 1x1 (4x) conv-BN layers."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        out = 4 * channels
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, bias=False),
            _batch_norm(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride, 1, bias=False),
            _batch_norm(channels),
            nn.ReLU(),
            nn.Conv2d(channels, out, 1, bias=False),
            _batch_norm(out),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out, 1, stride, bias=False), _batch_norm(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.layers(x) + self.shortcut(x))


class ResNet50(_PooledResNet):
    """ResNet-50 with the ImageNet stem (7x7 stride-2 conv, BN, ReLU, 3x3 max-pool); (N, 2048)."""

    def __init__(self, in_channels: int = 3, widths=(64, 128, 256, 512), depths=(3, 4, 6, 3)):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False),
            _batch_norm(widths[0]),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        blocks, channels = [], widths[0]
        for index, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            for block in range(depth):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(Bottleneck(channels, width, stride))
                channels = 4 * width
        self._set_blocks(blocks, channels)


ENCODERS = {"resnet18_small": ResNet18Small, "resnet50": ResNet50}


class Projection(nn.Module):
    """SimCLR v2 head: (Linear, BN, ReLU) x 2, then Linear and BN without bias."""

    def __init__(self, in_features: int = 512, out_features: int = 128, num_layers: int = 3):
        super().__init__()
        layers, width = [], in_features
        for index in range(num_layers):
            last = index == num_layers - 1
            out = out_features if last else in_features
            layers += [
                nn.Linear(width, out, bias=False),
                _batch_norm(out, affine_bias=not last, dims=1),
            ]
            if not last:
                layers.append(nn.ReLU())
            width = out
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean NT-Xent over the 2N views (jaxcl.losses.nt_xent's convention)."""
    views = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = views @ views.T / temperature
    count = views.shape[0]
    eye = torch.eye(count, dtype=torch.bool, device=views.device)
    logits = logits.masked_fill(eye, float("-inf"))
    half = count // 2
    positives = torch.cat([torch.arange(half, count), torch.arange(0, half)]).to(views.device)
    return F.cross_entropy(logits, positives)


class LARS(torch.optim.Optimizer):
    """SimCLR's LARS; parameters with ndim <= 1 get neither decay nor trust ratio."""

    def __init__(self, params, lr, momentum=0.9, weight_decay=1e-6, trust_coefficient=1e-3):
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if param.ndim > 1:
                    grad = grad.add(param, alpha=group["weight_decay"])
                    param_norm = torch.linalg.vector_norm(param)
                    grad_norm = torch.linalg.vector_norm(grad)
                    trust = torch.where(
                        (param_norm > 0) & (grad_norm > 0),
                        group["trust_coefficient"] * param_norm / grad_norm,
                        torch.ones_like(param_norm),
                    )
                    grad = grad * trust
                state = self.state[param]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(param)
                velocity = state["velocity"]
                velocity.mul_(group["momentum"]).add_(grad, alpha=group["lr"])
                param.sub_(velocity)


class SimCLRStep:
    """Encoder + projection + NT-Xent + LARS; ``step(views)`` runs one training step.

    Args:
      temperature: NT-Xent temperature.
      learning_rate: LARS rate (constant here: a schedule costs nothing measurable).
      channels_last: use PyTorch's NHWC memory format (faster convs on some CPUs).
      seed: the initialisation seed.
      encoder: a name in ``ENCODERS``.
      device: the torch device ('cpu', 'cuda').
      autocast_dtype: run the forward pass under ``torch.autocast`` in this
        dtype (e.g. ``torch.bfloat16``); None for float32.
    """

    def __init__(
        self,
        temperature=0.1,
        learning_rate=0.075,
        channels_last=False,
        seed=0,
        *,
        encoder="resnet18_small",
        device="cpu",
        autocast_dtype=None,
    ):
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.encoder = ENCODERS[encoder]().to(self.device)
        self.projection = Projection(self.encoder.num_features).to(self.device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.encoder = self.encoder.to(memory_format=self.memory_format)
        self.temperature = temperature
        self.autocast_dtype = autocast_dtype
        params = list(self.encoder.parameters()) + list(self.projection.parameters())
        self.optimizer = LARS([p for p in params if p.requires_grad], lr=learning_rate)

    def step(self, views: torch.Tensor) -> float:
        """One step on ``views`` of shape (N, 2, C, H, W); returns the loss."""
        batch = views.shape[0]
        images = views.transpose(0, 1).reshape(2 * batch, *views.shape[2:])
        images = images.contiguous(memory_format=self.memory_format)
        autocast = torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.float32,
            enabled=self.autocast_dtype is not None,
        )
        with autocast:
            # Both views in one pass: BatchNorm statistics over all 2N images, as jaxcl.
            projections = self.projection(self.encoder(images))
        loss = nt_xent(projections[:batch].float(), projections[batch:].float(), self.temperature)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def time_steps(trainer: SimCLRStep, views: torch.Tensor, runs: int, warmup: int = 2) -> list:
    """Seconds of each of ``runs`` steps after ``warmup`` steps."""
    for _ in range(warmup):
        trainer.step(views)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        trainer.step(views)
        times.append(time.perf_counter() - start)
    return times


def main():
    views = torch.rand(64, 2, 3, 32, 32)
    for channels_last in (False, True):
        times = time_steps(SimCLRStep(channels_last=channels_last), views, runs=5)
        median = statistics.median(times)
        print(
            f"torch {torch.__version__} SimCLR step, ResNet-18 small stem, 64x2 32x32x3, "
            f"channels_last={channels_last}: median {median * 1e3:.0f} ms, "
            f"{views.shape[0] / median:.1f} images/s ({torch.get_num_threads()} threads)"
        )


if __name__ == "__main__":
    main()
