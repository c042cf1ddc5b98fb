"""PyTorch source models for the weight-import tests, written without torchvision or timm.

`TorchResNet` has torchvision's ResNet module names (`conv1`, `bn1`, `layer1.0.conv1`,
`layer1.0.downsample.0`, `fc`), `TorchViT` timm's VisionTransformer names
(`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.0.attn.qkv`, `norm`, `head`),
so their state dicts have the keys of the published checkpoints. Both compute what
their references compute in eval mode; `features` is the input of the classifier.
"""

from __future__ import annotations

import torch
from torch import nn


class TorchBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, channels, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.downsample = _downsample(in_channels, channels, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + identity)


class TorchBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels, channels, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        # torchvision's v1.5: the stride on the 3x3 conv.
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels * 4)
        self.relu = nn.ReLU()
        self.downsample = _downsample(in_channels, channels * 4, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


def _downsample(in_channels, out_channels, stride):
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
    )


class TorchResNet(nn.Module):
    """torchvision's ResNet with the ImageNet stem, or SimCLR's 3x3 stride-1 stem."""

    def __init__(self, block, stage_sizes, *, widths=(64, 128, 256, 512), small_stem=False,
                 in_channels=3, num_classes=1000):  # fmt: skip
        super().__init__()
        block = {"basic": TorchBasicBlock, "bottleneck": TorchBottleneck}[block]
        if small_stem:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        channels = widths[0]
        for index, (num_blocks, width) in enumerate(zip(stage_sizes, widths, strict=True)):
            blocks = []
            for b in range(num_blocks):
                stride = 2 if (index > 0 and b == 0) else 1
                blocks.append(block(channels, width, stride))
                channels = width * block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        self.num_stages = len(stage_sizes)
        self.fc = nn.Linear(channels, num_classes)

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for index in range(self.num_stages):
            x = getattr(self, f"layer{index + 1}")(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x):
        return self.fc(self.features(x))


def randomize_batch_norm_statistics(model: nn.Module, generator: torch.Generator) -> None:
    """Gives every BatchNorm non-trivial affine parameters and running statistics."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            n = module.num_features
            with torch.no_grad():
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))


class TorchAttention(nn.Module):
    def __init__(self, width, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width, bias=True)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        batch, tokens, width = x.shape
        head = width // self.num_heads
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, head).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attention = (q @ k.transpose(-2, -1)) * head**-0.5
        out = attention.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


class TorchMlp(nn.Module):
    def __init__(self, width, hidden):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TorchBlock(nn.Module):
    def __init__(self, width, num_heads, mlp_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = TorchAttention(width, num_heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = TorchMlp(width, int(width * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TorchPatchEmbed(nn.Module):
    def __init__(self, in_channels, width, patch_size):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, width, patch_size, patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


def mocov3_sincos_pos_embed(grid: int, width: int) -> torch.Tensor:
    """MoCo v3's `build_2d_sincos_position_embedding`, re-derived: (1, 1 + grid^2, width)."""
    grid_w, grid_h = torch.meshgrid(
        torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32),
        indexing="ij",
    )  # fmt: skip
    quarter = width // 4
    omega = 1.0 / (10000.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    out_w = grid_w.flatten()[:, None] * omega[None]
    out_h = grid_h.flatten()[:, None] * omega[None]
    embedding = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)
    return torch.cat([torch.zeros(1, width), embedding])[None]


class TorchViT(nn.Module):
    """timm's VisionTransformer (class token, pre-norm, final norm, head), eval mode."""

    def __init__(self, *, image_size=224, patch_size=16, in_channels=3, width=384, depth=12,
                 num_heads=12, mlp_ratio=4.0, sincos=True, num_classes=1000):  # fmt: skip
        super().__init__()
        grid = image_size // patch_size
        self.patch_embed = TorchPatchEmbed(in_channels, width, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        if sincos:
            self.pos_embed = nn.Parameter(mocov3_sincos_pos_embed(grid, width), requires_grad=False)
        else:
            self.pos_embed = nn.Parameter(0.02 * torch.randn(1, grid * grid + 1, width))
        self.blocks = nn.Sequential(
            *[TorchBlock(width, num_heads, mlp_ratio) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, num_classes)

    def features(self, x):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))[:, 0]

    def forward(self, x):
        return self.head(self.features(x))


def randomize_vit(model: TorchViT, generator: torch.Generator) -> None:
    """Non-trivial random values for every trained array (LayerNorms and biases too)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name == "pos_embed" and not parameter.requires_grad:
                continue
            if name.endswith(("norm1.weight", "norm2.weight")) or name == "norm.weight":
                parameter.copy_(0.5 + torch.rand(parameter.shape, generator=generator))
            else:
                scale = 0.02 if parameter.ndim == 1 or name == "cls_token" else 1.0
                fan_in = parameter[0].numel() if parameter.ndim > 1 else 1
                parameter.copy_(
                    scale * torch.randn(parameter.shape, generator=generator) / fan_in**0.5
                )
