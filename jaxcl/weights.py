"""Published weights in and out: PyTorch state dicts to jaxcl encoders and back.

`import_torch` reads the encoders of published self-supervised checkpoints in the
two PyTorch layouts they come in:

* torchvision's ResNet (`conv1.weight`, `bn1.running_mean`, `layer1.0.conv1.weight`,
  `layer1.0.downsample.0.weight`, ..., `fc.*`), as saved by MoCo v1/v2
  (`module.encoder_q.`), MoCo v3 (`module.base_encoder.`), SupCon
  (`module.encoder.` or `encoder.`) and solo-learn (`backbone.`), among others;
* timm's VisionTransformer (`cls_token`, `pos_embed`, `patch_embed.proj.weight`,
  `blocks.0.attn.qkv.weight`, ..., `norm.weight`, `head.*`), as saved by MoCo v3
  and DeiT.

The prefix is detected and stripped, heads (`fc`, `head`) are left out, and every
array of the jaxcl encoder must be filled from the file with the right shape, or
the import fails naming the keys. `torch_state_dict_of` writes a jaxcl encoder back
in the same layouts, so the two round-trip; `jaxcl.export_torch(workdir)` does it for
a training run.

Checkpoints are pickles, and unpickling runs code. They are read with
`torch.load(..., weights_only=True)`, which builds tensors and plain containers
only; a file that needs any other type is refused with an error that names it.

`import_simclr_tf` reads the ResNets of SimCLR v1/v2 TensorFlow 2 checkpoints
(google-research/simclr's `tf2/` code, saved with `tf.train.Checkpoint(model=...)`)
through `tf.train.load_checkpoint`, which reads arrays and never runs code.

The source models' input conventions are the user's to follow: torchvision and
MoCo models expect RGB images in [0, 1] normalised by the ImageNet mean
(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); `jaxcl.main` trains on
unnormalised [0, 1] images, as SimCLR does.
"""

from __future__ import annotations

import importlib
import io
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from etils import epath
from flax import nnx

from jaxcl import models
from jaxcl.models import functional
from jaxcl.models.vit import sincos_position_embedding

__all__ = [
    "SIMCLR_TF2_PREFIX",
    "WeightsError",
    "check_same_encoder",
    "import_encoder_file",
    "import_simclr_tf",
    "import_torch",
    "is_tf_checkpoint",
    "load_torch_state_dict",
    "sincos_pos_embed_of",
    "torch_module",
    "torch_state_dict_of",
]

#: Prefixes of the encoder inside the published checkpoints, in the order tried.
ENCODER_PREFIXES = (
    "module.base_encoder.",  # MoCo v3
    "base_encoder.",
    "module.encoder_q.",  # MoCo v1/v2
    "encoder_q.",
    "module.encoder.",  # SupCon
    "encoder.",
    "module.backbone.",
    "backbone.",  # solo-learn
    "module.",
    "",
)

# Containers a training checkpoint keeps its state dict under.
_STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "teacher", "student")

# Arrays of the source layouts that no jaxcl encoder holds.
_IGNORED = re.compile(r"(^|\.)(fc|head|fc_norm)\.|num_batches_tracked$")


class WeightsError(ValueError):
    """A weights file or state dict that cannot become a jaxcl encoder; says why and the fix."""


def torch_module():
    """The torch module; a missing install is a one-line error naming the extra."""
    try:
        return importlib.import_module("torch")
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "jaxcl.weights reads and writes PyTorch files with torch; run "
            "`pip install -e '.[weights]'` in the jaxcl checkout (or `pip install torch`)",
            name="torch",
        ) from None


def load_torch_state_dict(path_or_state_dict: Any) -> dict[str, np.ndarray]:
    """Reads a PyTorch checkpoint safely into a flat dict of numpy arrays.

    Args:
      path_or_state_dict: a path (local or any `etils.epath` filesystem) of a file
        written by `torch.save`, or an in-memory state dict (a mapping of names to
        tensors or arrays). A training checkpoint's state dict under 'state_dict',
        'model' or 'model_state_dict' is taken from it.

    Returns:
      `{name: float32 array}` of every tensor in the state dict.

    Raises:
      WeightsError: if the file needs objects other than tensors and plain
        containers (it is refused, not unpickled), or holds no state dict.
      FileNotFoundError: if the path does not exist.
    """
    source = path_or_state_dict
    if isinstance(source, str | epath.PathLike):
        path = epath.Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; pass a file written by torch.save")
        torch = torch_module()
        try:
            source = torch.load(
                io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True
            )
        except Exception as error:  # torch raises pickle.UnpicklingError or RuntimeError
            raise WeightsError(_refusal(path, error)) from None
    if isinstance(source, Mapping):
        for key in _STATE_DICT_KEYS:
            if isinstance(source.get(key), Mapping):
                source = source[key]
                break
    if not isinstance(source, Mapping) or not source:
        raise WeightsError(
            f"{type(source).__name__} is not a state dict; pass model.state_dict() or a "
            "checkpoint holding one under 'state_dict' or 'model'"
        )
    arrays = {}
    for name, value in source.items():
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().float().numpy()
        if isinstance(value, np.ndarray | jax.Array):
            arrays[str(name)] = np.asarray(value, np.float32)
    return arrays


def _refusal(path, error: Exception) -> str:
    """The one-line reason torch.load(weights_only=True) refused a file."""
    message = str(error)
    offending = re.search(r"GLOBAL ([\w.]+)", message) or re.search(
        r"Unsupported (?:global|class|operand)[^\w]*([\w.]+)", message
    )
    if offending:
        return (
            f"{path} needs {offending.group(1)}, which is not a tensor or a plain container; "
            "jaxcl does not unpickle arbitrary objects (unpickling can run code). If you "
            "trust the file, re-save its state dict alone: "
            "torch.save(checkpoint['state_dict'], 'weights.pth')"
        )
    first_line = message.strip().splitlines()[0] if message.strip() else type(error).__name__
    return (
        f"{path} is not a readable PyTorch file ({first_line}); pass a file written by torch.save"
    )


def _strip_prefix(arrays: dict[str, np.ndarray], anchor: str, prefix: str | None) -> dict:
    """The encoder's arrays without their prefix, found from the `anchor` key."""
    if prefix is None:
        for candidate in ENCODER_PREFIXES:
            if candidate + anchor in arrays:
                prefix = candidate
                break
        else:
            found = sorted({key[: -len(anchor)] for key in arrays if key.endswith(anchor)})
            hint = f"; candidates: {', '.join(map(repr, found))}" if found else ""
            raise WeightsError(
                f"found no {anchor!r} under the prefixes of MoCo, MoCo v3, SupCon or "
                f"solo-learn{hint}; pass prefix='...' (the text before {anchor!r})"
            )
    elif prefix + anchor not in arrays:
        raise WeightsError(
            f"prefix={prefix!r}: the state dict has no {prefix + anchor!r}; pass the text "
            f"before {anchor!r} in its keys"
        )
    return {
        key[len(prefix) :]: value
        for key, value in arrays.items()
        if key.startswith(prefix) and not _IGNORED.search(key[len(prefix) :])
    }


# ----------------------------------------------------------------- layouts


def _resnet_keys(model: models.ResNet) -> dict[tuple[str, ...], str]:
    """jaxcl ResNet array paths -> torchvision keys."""
    mapping: dict[tuple[str, ...], str] = {}
    _add_conv_bn(mapping, (), "stem_conv", "stem_bn", "conv1", "bn1")
    for stage_index, stage in enumerate(model.stages(), start=1):
        for block_index, block in enumerate(stage.blocks()):
            where = (f"layer{stage_index}", f"block{block_index}")
            torch_block = f"layer{stage_index}.{block_index}"
            convs = 3 if isinstance(block, models.Bottleneck) else 2
            for k in range(1, convs + 1):
                _add_conv_bn(
                    mapping, where, f"conv{k}", f"bn{k}", f"{torch_block}.conv{k}",
                    f"{torch_block}.bn{k}",
                )  # fmt: skip
            if block.shortcut_conv is not None:
                _add_conv_bn(
                    mapping, where, "shortcut_conv", "shortcut_bn",
                    f"{torch_block}.downsample.0", f"{torch_block}.downsample.1",
                )  # fmt: skip
    return mapping


def _add_conv_bn(mapping, where, jax_conv, jax_bn, torch_conv, torch_bn) -> None:
    """Maps one conv + BatchNorm pair at jaxcl path `where` to its torchvision keys."""
    mapping[(*where, jax_conv, "kernel")] = f"{torch_conv}.weight"
    mapping[(*where, jax_bn, "scale")] = f"{torch_bn}.weight"
    mapping[(*where, jax_bn, "bias")] = f"{torch_bn}.bias"
    mapping[(*where, jax_bn, "mean")] = f"{torch_bn}.running_mean"
    mapping[(*where, jax_bn, "var")] = f"{torch_bn}.running_var"


def _vit_keys(model: models.VisionTransformer) -> dict[tuple[str, ...], str]:
    """jaxcl ViT array paths -> timm keys (`pos_embed` is handled apart)."""
    mapping: dict[tuple[str, ...], str] = {
        ("patch_embed", "kernel"): "patch_embed.proj.weight",
        ("patch_embed", "bias"): "patch_embed.proj.bias",
        ("cls_token",): "cls_token",
        ("norm", "scale"): "norm.weight",
        ("norm", "bias"): "norm.bias",
    }
    if model.position_embedding == "learned":
        mapping[("pos_embed",)] = "pos_embed"
    for index in range(model.depth):
        for jax_name, torch_name in (
            (("norm1", "scale"), "norm1.weight"),
            (("norm1", "bias"), "norm1.bias"),
            (("attn", "qkv", "kernel"), "attn.qkv.weight"),
            (("attn", "qkv", "bias"), "attn.qkv.bias"),
            (("attn", "proj", "kernel"), "attn.proj.weight"),
            (("attn", "proj", "bias"), "attn.proj.bias"),
            (("norm2", "scale"), "norm2.weight"),
            (("norm2", "bias"), "norm2.bias"),
            (("mlp", "fc1", "kernel"), "mlp.fc1.weight"),
            (("mlp", "fc1", "bias"), "mlp.fc1.bias"),
            (("mlp", "fc2", "kernel"), "mlp.fc2.weight"),
            (("mlp", "fc2", "bias"), "mlp.fc2.bias"),
        ):
            mapping[(f"block{index}", *jax_name)] = f"blocks.{index}.{torch_name}"
    return mapping


def _to_jax(torch_array: np.ndarray, jax_path: tuple[str, ...]) -> np.ndarray:
    """A torch tensor in the jaxcl layout: conv OIHW -> HWIO, Linear (out, in) -> (in, out)."""
    if jax_path[-1] == "kernel" and torch_array.ndim == 4:
        return np.transpose(torch_array, (2, 3, 1, 0))
    if jax_path[-1] == "kernel" and torch_array.ndim == 2:
        return torch_array.T
    return torch_array


def _to_torch(jax_array: np.ndarray, jax_path: tuple[str, ...]) -> np.ndarray:
    """The inverse of `_to_jax`."""
    if jax_path[-1] == "kernel" and jax_array.ndim == 4:
        return np.transpose(jax_array, (3, 2, 0, 1))
    if jax_path[-1] == "kernel" and jax_array.ndim == 2:
        return jax_array.T
    return jax_array


def _layout(model: nnx.Module) -> dict[tuple[str, ...], str]:
    """The jaxcl -> PyTorch key mapping of an encoder."""
    if isinstance(model, models.ResNet):
        return _resnet_keys(model)
    if isinstance(model, models.VisionTransformer):
        return _vit_keys(model)
    raise WeightsError(
        f"{type(model).__name__} has no PyTorch layout; use a ResNet or a VisionTransformer"
    )


# ----------------------------------------------------------------- import


def _infer_vit_options(arrays: dict[str, np.ndarray], options: dict) -> dict:
    """Patch size, channels, depth, width and position embedding from a timm state dict."""
    kernel = arrays["patch_embed.proj.weight"]
    depth = 1 + max(int(k.split(".")[1]) for k in arrays if k.startswith("blocks."))
    inferred = {
        "width": kernel.shape[0],
        "in_channels": kernel.shape[1],
        "patch_size": kernel.shape[2],
        "depth": depth,
        "mlp_ratio": arrays["blocks.0.mlp.fc1.weight"].shape[0] / kernel.shape[0],
    }
    position = arrays.get("pos_embed")
    if position is not None and "position_embedding" not in options:
        grid = round(np.sqrt(position.shape[1] - 1))
        fixed = np.asarray(sincos_position_embedding(grid, grid, kernel.shape[0]))
        is_sincos = (
            grid * grid == position.shape[1] - 1
            and np.allclose(position[0, 1:], fixed, atol=1e-5)
            and not np.any(position[0, 0])
        )
        if is_sincos:
            inferred["position_embedding"] = "sincos"
        else:
            inferred["position_embedding"] = "learned"
            inferred["image_size"] = grid * inferred["patch_size"]
    return {**inferred, **options}


def _infer_resnet_options(arrays: dict[str, np.ndarray], options: dict) -> dict:
    """Stem, channels and widths from a torchvision state dict."""
    stem_kernel = arrays["conv1.weight"]
    inferred = {
        "in_channels": stem_kernel.shape[1],
        "stem": "imagenet" if stem_kernel.shape[-1] == 7 else "small",
    }
    if "width_multiplier" not in options and "base_widths" not in options:
        # A block's first conv has the stage's inner width (a bottleneck's too).
        stages = sorted({int(k[5]) for k in arrays if re.match(r"layer\d\.0\.conv1\.weight$", k)})
        inferred["base_widths"] = tuple(
            arrays[f"layer{stage}.0.conv1.weight"].shape[0] for stage in stages
        )
        inferred["stem_width"] = stem_kernel.shape[0]
    return {**inferred, **options}


def import_torch(
    state_dict_or_path: Any,
    model: str = "resnet50",
    *,
    prefix: str | None = None,
    **model_options,
) -> nnx.Module:
    """Builds a jaxcl encoder holding the weights of a PyTorch ResNet or ViT.

    The result's `jaxcl.models.functional.split` / `apply(..., train=False)` on NHWC
    images gives the source model's pooled features in eval mode (ResNet: the
    input of `fc`; ViT: the normalised class token, the input of `head`).

    Args:
      state_dict_or_path: a file written by `torch.save` (a state dict or a
        training checkpoint holding one, e.g. MoCo's `.pth.tar`) or an in-memory
        state dict.
      model: the jaxcl encoder, e.g. 'resnet50', 'resnet18', 'vit_small',
        'vit_base'.
      prefix: the text before the encoder's keys; None detects MoCo's
        'module.encoder_q.', MoCo v3's 'module.base_encoder.', SupCon's
        'module.encoder.', solo-learn's 'backbone.' and bare state dicts.
      **model_options: options of `jaxcl.models.create` (e.g. `num_heads=6` for
        DeiT-S, `dtype`). A ViT's width, depth,
        patch size, channels and position embedding (MoCo v3's fixed sin-cos, or
        learned with its image size), a ResNet's stem, stage widths and channels
        are read from the weights unless given.

    Returns:
      The encoder, an `nnx.Module` (BatchNorm in training mode, as
      `jaxcl.models.create` returns it; evaluate with `train=False`).

    Raises:
      WeightsError: if the file is refused, or its arrays do not fill the encoder
        exactly (names the missing, unexpected or misshaped keys).
    """
    arrays = load_torch_state_dict(state_dict_or_path)
    if model not in models.ENCODER_NAMES:
        raise WeightsError(
            f"model={model!r} is not a jaxcl encoder; use one of {', '.join(models.ENCODER_NAMES)}"
        )
    is_vit = model.startswith("vit")
    anchor = "patch_embed.proj.weight" if is_vit else "conv1.weight"
    arrays = _strip_prefix(arrays, anchor, prefix)
    infer = _infer_vit_options if is_vit else _infer_resnet_options
    options = infer(arrays, model_options)
    try:
        encoder = models.create(model, rngs=nnx.Rngs(0), **options)
    except ValueError as error:
        raise WeightsError(f"the weights do not fit {model}: {error}") from None
    graphdef, params, batch_stats = functional.split(encoder)
    layout = _layout(encoder)
    tree = {"params": params, "batch_stats": batch_stats}
    used, problems = set(), []

    def fill(path, leaf):
        jax_path = tuple(str(getattr(k, "key", k)) for k in path)[1:]
        torch_key = layout.get(jax_path)
        if torch_key is None or torch_key not in arrays:
            problems.append(f"missing {torch_key or '/'.join(jax_path)}")
            return leaf
        used.add(torch_key)
        value = _to_jax(arrays[torch_key], jax_path)
        if value.shape != leaf.shape:
            problems.append(
                f"{torch_key} has shape {arrays[torch_key].shape} where {model} needs "
                f"{_to_torch(np.zeros(leaf.shape), jax_path).shape}"
            )
            return leaf
        return value

    filled = jax.tree_util.tree_map_with_path(fill, tree)
    unexpected = sorted(set(arrays) - used - ({"pos_embed"} if is_vit else set()))
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:4])}")
    if problems:
        raise WeightsError(
            f"the state dict does not match {model} with {options}: "
            f"{'; '.join(problems[:4])}; pass the model and options it was trained with"
        )
    return functional.merge(graphdef, filled["params"], filled["batch_stats"])


# ----------------------------------------------------------------- export


def torch_state_dict_of(encoder: nnx.Module) -> dict[str, np.ndarray]:
    """An encoder's arrays in the torchvision (ResNet) or timm (ViT) layout.

    Args:
      encoder: a jaxcl ResNet or VisionTransformer.

    Returns:
      `{key: float32 numpy array}` with PyTorch shapes (conv OIHW, Linear
      (out, in)). A sin-cos ViT's fixed `pos_embed` depends on the image size,
      so it is not included: add `sincos_pos_embed_of(encoder, image_size)`.
    """
    _, params, batch_stats = functional.split(encoder)
    layout = _layout(encoder)
    state_dict: dict[str, np.ndarray] = {}
    for tree in (params, batch_stats):
        for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]:
            jax_path = tuple(str(getattr(k, "key", k)) for k in path)
            state_dict[layout[jax_path]] = np.asarray(_to_torch(np.asarray(leaf), jax_path))
    if isinstance(encoder, models.ResNet):
        # torchvision keeps a counter beside every BatchNorm's statistics.
        for key in [k for k in state_dict if k.endswith(".running_mean")]:
            state_dict[key.replace("running_mean", "num_batches_tracked")] = np.zeros((), np.int64)
    return state_dict


def sincos_pos_embed_of(encoder: models.VisionTransformer, image_size: int) -> np.ndarray:
    """MoCo v3's stored `pos_embed` of a sin-cos ViT for square images of `image_size`.

    Args:
      encoder: a VisionTransformer with `position_embedding='sincos'`.
      image_size: side of the images in pixels.

    Returns:
      float32 (1, 1 + tokens, width): a zero row for the class token, then the
      patch grid's embeddings, as MoCo v3's checkpoints hold it.
    """
    grid = image_size // encoder.patch_size
    fixed = np.asarray(sincos_position_embedding(grid, grid, encoder.num_features))
    zero = np.zeros((1, encoder.num_features), np.float32)
    return np.concatenate([zero, fixed], axis=0)[None]


# ----------------------------------------------------------------- SimCLR (TensorFlow)

#: Where SimCLR's tf2 code keeps its ResNet in a `tf.train.Checkpoint(model=...)`.
SIMCLR_TF2_PREFIX = "model/resnet_model/"
_TF_VALUE = "/.ATTRIBUTES/VARIABLE_VALUE"
_TF_BATCH_NORM = {"scale": "gamma", "bias": "beta", "mean": "moving_mean", "var": "moving_variance"}


def _simclr_tf2_keys(model: models.ResNet) -> dict[tuple[str, ...], str]:
    """jaxcl ResNet array paths -> SimCLR tf2 checkpoint keys (without the prefix).

    SimCLR's `Resnet` keeps its stem in `initial_conv_relu_max_pool` (a fixed-padding
    conv at 0, its BatchNorm at 2) and its stages in `block_groups/<g>/layers/<b>`;
    a bottleneck block's convs are `conv_relu_dropblock_layers/0, 3, 6` with their
    BatchNorms at 1, 4, 7, and the first block's projection shortcut is
    `projection_layers/0` (conv) and `projection_layers/1` (BatchNorm).
    """
    mapping: dict[tuple[str, ...], str] = {}

    def conv_bn(where, jax_conv, jax_bn, tf_conv, tf_bn):
        mapping[(*where, jax_conv, "kernel")] = f"{tf_conv}/conv2d/kernel"
        for jax_name, tf_name in _TF_BATCH_NORM.items():
            mapping[(*where, jax_bn, jax_name)] = f"{tf_bn}/bn/{tf_name}"

    conv_bn((), "stem_conv", "stem_bn", "initial_conv_relu_max_pool/0",
            "initial_conv_relu_max_pool/2")  # fmt: skip
    for group, stage in enumerate(model.stages()):
        for index, block in enumerate(stage.blocks()):
            where = (f"layer{group + 1}", f"block{index}")
            tf_block = f"block_groups/{group}/layers/{index}"
            for k in range(3):
                conv_bn(where, f"conv{k + 1}", f"bn{k + 1}",
                        f"{tf_block}/conv_relu_dropblock_layers/{3 * k}",
                        f"{tf_block}/conv_relu_dropblock_layers/{3 * k + 1}")  # fmt: skip
            if block.shortcut_conv is not None:
                conv_bn(where, "shortcut_conv", "shortcut_bn",
                        f"{tf_block}/projection_layers/0",
                        f"{tf_block}/projection_layers/1")  # fmt: skip
    return mapping


def is_tf_checkpoint(path: str) -> bool:
    """Whether `path` is a TensorFlow checkpoint prefix or a directory of checkpoints."""
    candidate = epath.Path(str(path))
    return epath.Path(f"{path}.index").exists() or (
        candidate.is_dir() and candidate.joinpath("checkpoint").exists()
    )


def import_simclr_tf(
    checkpoint: str, model: str = "resnet50", *, prefix: str = SIMCLR_TF2_PREFIX, **model_options
) -> nnx.Module:
    """Builds a jaxcl ResNet holding the encoder of a SimCLR v1/v2 TF2 checkpoint.

    The result's `apply(..., train=False)` gives the checkpoint's pooled ResNet
    features (SimCLR's `final_avg_pool`) on NHWC RGB images in [0, 1]. The stem's
    max-pool pads as TensorFlow's SAME does (`stem_pool_padding='same'`), so the
    features match the TensorFlow model exactly, not a torchvision conversion.

    Args:
      checkpoint: a checkpoint prefix (`.../ckpt-100000`) or its directory, as
        written by SimCLR's tf2 `run.py`.
      model: a bottleneck ResNet: 'resnet50', 'resnet101' or 'resnet152'.
      prefix: the ResNet's place in the checkpoint (SimCLR's tf2 code:
        'model/resnet_model/').
      **model_options: options of `jaxcl.models.create` (e.g. `dtype`); the
        width multiplier (SimCLR's 1x, 2x, 4x) is read from the weights.

    Returns:
      The encoder, an `nnx.Module`.

    Raises:
      WeightsError: if the checkpoint cannot be read or does not fill the model.
    """
    tf = importlib.import_module("tensorflow")
    path = str(checkpoint)
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise WeightsError(f"{path} holds no TensorFlow checkpoint; pass a ckpt-N prefix")
        path = latest
    try:
        reader = tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise WeightsError(
            f"{path} is not a readable TensorFlow checkpoint ({first_line}); pass the prefix "
            "of its .index file"
        ) from None
    arrays = {}
    for key in reader.get_variable_to_shape_map():
        if key.startswith(prefix) and key.endswith(_TF_VALUE) and ".OPTIMIZER_SLOT" not in key:
            arrays[key[len(prefix) : -len(_TF_VALUE)]] = np.asarray(reader.get_tensor(key))
    stem_key = "initial_conv_relu_max_pool/0/conv2d/kernel"
    if stem_key not in arrays:
        raise WeightsError(
            f"{path} has no {prefix}{stem_key}; is it a SimCLR tf2 checkpoint? Pass prefix='...'"
        )
    if model not in ("resnet50", "resnet101", "resnet152"):
        raise WeightsError(
            f"model={model!r}: SimCLR's checkpoints are bottleneck ResNets; use resnet50, "
            "resnet101 or resnet152"
        )
    stem_width = arrays[stem_key].shape[-1]
    options = {
        "width_multiplier": stem_width / 64,
        "in_channels": arrays[stem_key].shape[2],
        "stem": "imagenet",
        "stem_pool_padding": "same",
        **model_options,
    }
    encoder = models.create(model, rngs=nnx.Rngs(0), **options)
    graphdef, params, batch_stats = functional.split(encoder)
    layout = _simclr_tf2_keys(encoder)
    used, problems = set(), []

    def fill(path, leaf):
        jax_path = tuple(str(getattr(k, "key", k)) for k in path)[1:]
        key = layout[jax_path]
        if key not in arrays:
            problems.append(f"missing {prefix}{key}")
            return leaf
        used.add(key)
        # TensorFlow's conv kernels are HWIO, like jaxcl's: no transpose.
        if arrays[key].shape != leaf.shape:
            problems.append(f"{prefix}{key} has shape {arrays[key].shape}, not {leaf.shape}")
            return leaf
        return arrays[key].astype(np.float32)

    filled = jax.tree_util.tree_map_with_path(fill, {"params": params, "batch_stats": batch_stats})
    unexpected = sorted(key for key in set(arrays) - used if "/dense/" not in key)
    if unexpected:
        problems.append(f"unexpected {', '.join(prefix + k for k in unexpected[:3])}")
    if problems:
        raise WeightsError(
            f"the checkpoint does not match {model} at width {options['width_multiplier']}x: "
            f"{'; '.join(problems[:4])}; pass the model it was trained with"
        )
    return functional.merge(graphdef, filled["params"], filled["batch_stats"])


def import_encoder_file(source: str, model: str, **model_options) -> nnx.Module:
    """The encoder in a published weights file: a SimCLR TF checkpoint or a PyTorch file.

    Args:
      source: a TensorFlow checkpoint prefix or directory (`import_simclr_tf`),
        else a PyTorch file (`import_torch`).
      model: the jaxcl encoder name (`jaxcl.models.create`).
      **model_options: its options.

    Returns:
      The encoder, an `nnx.Module`.
    """
    if is_tf_checkpoint(source):
        return import_simclr_tf(source, model, **model_options)
    return import_torch(source, model, **model_options)


def check_same_encoder(source: str, arrays, expected, model: str, model_options) -> None:
    """Refuses encoder arrays whose shapes are not those of the config's encoder.

    Args:
      source: where `arrays` came from (named in the error).
      arrays: `(params, batch_stats)` read from `source`.
      expected: `(params, batch_stats)` of the encoder the config builds.
      model: the config's `model`; model_options: its `model_options`.

    Raises:
      WeightsError: the two trees differ in structure or in a shape.
    """
    shapes = jax.tree.map(lambda x: tuple(x.shape), arrays)
    if shapes != jax.tree.map(lambda x: tuple(x.shape), expected):
        raise WeightsError(
            f"{source} holds another encoder than model={model!r} with "
            f"model_options={dict(model_options)}; pass the model and options it was trained with"
        )
