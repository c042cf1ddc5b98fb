"""A run's configuration: the defaults, their validation, and the copy kept in a workdir.

Config files in ``configs/`` start from ``default_config()`` and override what
their recipe changes. The returned ConfigDict is locked, so a misspelt key in a
config file or on the command line (``--config.simclr.temprature=0.5``) fails
at once instead of being silently ignored. Each method's own keys live in a
section named after it (``config.mocov2.queue_size``), with the defaults the
method declares (``jaxcl.methods.base.Method.defaults``).

``validate_config`` checks a config before anything expensive starts;
``save_config`` / ``load_config`` write and read ``workdir/config.json``.
"""

from __future__ import annotations

import difflib
import math
import os

import ml_collections

from jaxcl import data, models, optim, workdir_io
from jaxcl.methods import METHOD_NAMES, get_method

LINEAR_PROTOCOLS = ("features", "augmented")
#: The projection heads whose number of Linear layers config.projection_layers sets.
PROJECTORS_WITH_LAYERS = ("mocov3_projector", "simclr_v2_projection")


def default_config() -> ml_collections.ConfigDict:
    """Returns the defaults shared by all configs (SimCLR on Fashion-MNIST, CPU-sized).

    Returns:
      A locked ``ml_collections.ConfigDict``.
    """
    config = ml_collections.ConfigDict()

    # What to train.
    config.method = "simclr"
    config.model = "resnet18"
    config.model_options = ml_collections.ConfigDict(
        {"stem": "small", "width_multiplier": 0.25, "zero_init_residual": False}
    )
    config.projector = "simclr_v2_projection"
    config.projection_dim = 128
    config.projection_hidden_dim = 0  # 0: the head's default (the encoder width)
    # Linear layers of the projector; 0: the head's default. MoCo v3 puts 3 after
    # a ViT (2 after a ResNet); SimCLR v2's head has 3.
    config.projection_layers = 0
    # "auto": float32 on CPU, bfloat16 on GPU/TPU. Params, optimizer state,
    # BatchNorm statistics and loss logits stay float32 whatever this says.
    config.compute_dtype = "auto"

    # Data.
    config.dataset = "fashion_mnist"
    config.train_split = ""  # "": the dataset's pretraining split
    # "": the dataset's own evaluation splits (ImageNet: train / validation;
    # Fashion-MNIST, CIFAR, STL-10: train / test).
    config.eval_train_split = ""
    config.eval_test_split = ""
    config.data_dir = ""  # "": TFDS's default
    config.dataset_options = ml_collections.ConfigDict()
    config.image_size = 28
    config.augmentation = "fashion_mnist"
    config.augment_options = ml_collections.ConfigDict()
    config.num_views = 2
    # Where colour jitter, grayscale, blur and solarization run: 'true' in the
    # jitted step on the accelerator (the host only crops, resizes and flips, in
    # uint8), 'false' in tf.data on the host, 'auto' as jaxcl.data.spec decides
    # per platform (the device on GPU and TPU).
    config.augment_on_device = "auto"

    # Schedule and optimizer (SimCLR: LARS, linear scaling, warmup then cosine).
    config.global_batch_size = 256
    config.num_epochs = 10.0
    config.num_steps = 0  # > 0 overrides num_epochs
    config.optimizer = "lars"
    config.learning_rate = 0.3
    config.learning_rate_scaling = "linear"
    config.warmup_epochs = 1.0
    config.weight_decay = 1e-6
    # 'matrices': no decay on biases and normalisation parameters; 'all': MoCo v3.
    config.weight_decay_on = "matrices"
    config.momentum = 0.9
    config.trust_coefficient = 1e-3

    # Each method's own hyper-parameters, one section per method.
    for name in METHOD_NAMES:
        config[name] = ml_collections.ConfigDict(get_method(name).defaults())
    # The online linear probe (on stop-gradient features) takes plain momentum
    # steps of the shared schedule; this weight is its learning-rate factor:
    # 0.1 of a LARS-scale rate of ~1, like solo-learn's classifier rate of 0.1.
    config.probe_weight = 0.1

    # Book-keeping.
    config.seed = 0
    # Start the encoder from other weights: a jaxcl run's workdir, a PyTorch file
    # (torchvision ResNet or timm ViT layout) or a SimCLR TF checkpoint (see
    # jaxcl.weights). "": random.
    config.init_from = ""
    config.log_every_steps = 50
    config.checkpoint_every_steps = 500
    config.max_checkpoints_to_keep = 2
    config.nonfinite_loss = "raise"  # or "skip": drop the update of a non-finite step
    # With "skip": stop once this many updates in a row were dropped. A few
    # bad batches are skipped; a run that diverged for good is not reported.
    config.max_consecutive_skips = 10
    config.progress_bar = True

    # Monitoring kNN during training (0 = off) and evaluation at the end.
    config.knn_every_steps = 0
    config.knn_k = 200
    config.knn_temperature = 0.1
    config.knn_train_examples = 10000
    config.eval = ml_collections.ConfigDict()
    config.eval.run_at_end = True
    # 'features': the probe on cached features of un-augmented images (fast);
    # 'augmented': SimCLR's / MoCo's main_lincls protocol, a head trained over
    # the frozen encoder on cropped and flipped images (jaxcl.augmented_probe).
    config.eval.linear_protocol = "features"
    config.eval.linear_epochs = 100
    config.eval.linear_batch_size = 512
    config.eval.linear_learning_rate = 0.1
    config.eval.linear_weight_decay = 0.0
    config.eval.feature_batch_size = 1024
    # The side of the un-augmented evaluation images; 0: config.image_size.
    # Training on random crops resized below the images' side and evaluating
    # whole images at their side matches the apparent object sizes of the two
    # (Touvron et al. 2019, "Fixing the train-test resolution discrepancy").
    config.eval.image_size = 0
    config.eval.max_train_examples = 0  # 0: the whole split
    config.eval.max_test_examples = 0
    config.eval.baselines = False  # also evaluate raw pixels and the random encoder

    config.lock()
    return config


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks any config to a few steps of a tiny encoder on synthetic data.

    Keeps the method, optimizer and loss of the recipe, so ``<config>:smoke``
    exercises the same code path in seconds on a CPU. The image shape follows
    the recipe's channels (1 for Fashion-MNIST, 3 otherwise) at 16x16. A ResNet
    recipe gets ``resnet_tiny``; a ViT recipe keeps its ViT and its options
    (frozen patch projection, position embedding) at width 32, depth 2, 2 heads
    and patch 4.

    Args:
      config: a full config; modified in place.

    Returns:
      The same config.
    """
    channels = 1 if config.dataset == "fashion_mnist" else 3
    if config.model.startswith("vit"):
        vit_options = {k: v for k, v in config.model_options.items() if k != "image_size"}
        vit_options |= {"width": 32, "depth": 2, "num_heads": 2, "patch_size": 4}
        if vit_options.get("position_embedding") == "learned":
            vit_options["image_size"] = 16
        config.model_options = vit_options
    else:
        config.model = "resnet_tiny"
        config.model_options = {"zero_init_residual": False}
    config.dataset = "synthetic"
    config.dataset_options = {
        "image_shape": (16, 16, channels),
        "num_classes": 10,
        "num_examples": {"train": 256, "test": 128},
    }
    config.image_size = 16
    config.eval.image_size = 0  # the synthetic images' side
    config.train_split = ""
    config.compute_dtype = "float32"
    config.global_batch_size = 16
    config.num_steps = 4
    config.warmup_epochs = 0.0
    config.log_every_steps = 2
    config.checkpoint_every_steps = 2
    config.projection_dim = 16
    config.projection_hidden_dim = 32
    config.mocov3.predictor_hidden_dim = 32
    config.mocov2.queue_size = 64
    config.knn_every_steps = 0
    config.knn_train_examples = 256
    config.eval.linear_epochs = 2
    config.eval.max_train_examples = 256
    config.eval.max_test_examples = 128
    config.progress_bar = False
    return config


def finalize(config: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
    """Applies a config file's variant argument: ``''`` (the recipe) or ``'smoke'``."""
    if arg == "smoke":
        return smoke(config)
    if arg:
        raise ValueError(f"unknown config variant {arg!r}; use no variant or ':smoke'.")
    return config


# ---------------------------------------------------------------- validation

# Sub-configs whose keys belong to the dataset, augmentation or model chosen;
# dataset_info, get_preset and the model registry check them.
FREE_FORM_KEYS = ("dataset_options", "augment_options", "model_options")


class ConfigError(ValueError):
    """A config value jaxcl cannot train with.

    Attributes:
      key: the dotted config key, e.g. ``'global_batch_size'``.
      value: the value given.
    """

    def __init__(self, key: str, value, problem: str, fix: str):
        super().__init__(f"config.{key}={_plain(value)!r} {problem}; {fix}.")
        self.key = key
        self.value = _plain(value)


def options(config_value) -> dict:
    """A free-form option section (``dataset_options``, ...) as a plain dict."""
    return dict(config_value) if config_value else {}


def validate_config(
    config: ml_collections.ConfigDict, *, num_devices: int, check_data_files: bool = True
) -> None:
    """Checks a config before anything expensive starts.

    Each problem raises a one-line ``ConfigError`` (a ``ValueError``) naming the
    key, the value and the fix: keys unknown to ``default_config`` (a locked
    config already refuses them; this catches configs built as plain dicts) or
    missing from it, names of methods, models, datasets, augmentations and
    optimizers, the range and finiteness of every numeric key (`_RANGES`),
    batch sizes that do not split over the devices, the method's own
    section (``Method.validate``), crop size, augmentation options and dataset
    files that are not there.

    Args:
      config: the training config.
      num_devices: devices of the data mesh (all processes).
      check_data_files: also check that the dataset's files are there (off when
        only the encoder is wanted, on a machine without the data).
    """

    def fail(key, problem, fix):
        raise ConfigError(key, config[key], problem, fix)

    _check_keys(config, default_config())
    if config.method not in METHOD_NAMES:
        fail("method", "is unknown", f"use one of {', '.join(METHOD_NAMES)}")
    if config.model not in models.ENCODER_NAMES:
        fail("model", "is not an encoder", f"use one of {', '.join(models.ENCODER_NAMES)}")
    try:
        data.check_dataset_name(config.dataset, config.data_dir or None)
    except ValueError as error:
        fail("dataset", f"is unknown ({error})", f"use one of {', '.join(data.DATASET_NAMES)}")
    if config.augmentation not in data.PRESET_NAMES:
        fail("augmentation", "is unknown", f"use one of {', '.join(data.PRESET_NAMES)}")
    if config.optimizer not in optim.OPTIMIZERS:
        fail("optimizer", "is unknown", f"use one of {', '.join(optim.OPTIMIZERS)}")
    if config.weight_decay_on not in optim.DECAY_TARGETS:
        fail("weight_decay_on", "is unknown", f"use one of {', '.join(optim.DECAY_TARGETS)}")
    _check_ranges(config)
    init_from = config.init_from
    if init_from and not (
        workdir_io.resolve(init_from).exists() or workdir_io.resolve(f"{init_from}.index").exists()
    ):
        fail(
            "init_from",
            "does not exist",
            "pass a jaxcl run's workdir, a PyTorch file or a TF checkpoint; '' starts at random",
        )
    if float(config.model_options.get("drop_path_rate", 0.0)) > 0.0:
        raise ConfigError(
            "model_options.drop_path_rate",
            config.model_options.drop_path_rate,
            "is not supported in pretraining (MoCo v3 pretrains its ViTs without drop-path)",
            "use 0.0; drop-path is for fine-tuning code that passes apply(..., rng=key)",
        )
    if config.projection_layers and config.projector not in PROJECTORS_WITH_LAYERS:
        fail(
            "projection_layers",
            f"does not apply to the {config.projector} head",
            f"use 0, or a projector among {', '.join(PROJECTORS_WITH_LAYERS)}",
        )
    if config.global_batch_size % num_devices:
        fail(
            "global_batch_size",
            f"is not a multiple of the {num_devices} devices",
            f"use a multiple of {num_devices}",
        )
    if config.num_steps == 0 and config.num_epochs == 0:
        fail("num_epochs", "and num_steps are both 0", "set one of them > 0")
    if config.eval.linear_protocol not in LINEAR_PROTOCOLS:
        raise ConfigError(
            "eval.linear_protocol", config.eval.linear_protocol, "is unknown",
            f"use one of {', '.join(LINEAR_PROTOCOLS)}",
        )  # fmt: skip
    if config.nonfinite_loss not in ("raise", "skip"):
        fail("nonfinite_loss", "is unknown", "use 'raise' or 'skip'")
    if config.augment_on_device not in data.AUGMENT_ON_DEVICE_VALUES:
        fail("augment_on_device", "is unknown", "use 'auto', 'true' or 'false'")
    if config.compute_dtype not in ("auto", "float32", "bfloat16", "float16"):
        fail("compute_dtype", "is unsupported", "use 'auto', 'float32' or 'bfloat16'")
    method = get_method(config.method)
    if method.validate is not None:
        method.validate(config[method.name], config)
    info = _dataset_info(config, check_data_files)
    for key in ("train_split", "eval_train_split", "eval_test_split"):
        if config[key]:
            try:
                data.check_split(info, config[key])
            except ValueError:
                fail(
                    key,
                    f"is not a split of {config.dataset}",
                    f"use one of {', '.join(info.num_examples)}",
                )
    _check_baselines_fit(config, info)
    if not info.labelled:
        _check_labels_not_needed(config, method)
    # The random crop is resized to image_size: a larger size only upsamples
    # (ImageNet's images vary in size, so there is nothing to compare with).
    native = min(info.image_shape[:2]) if info.image_shape[0] is not None else None
    sides = (("image_size", config.image_size), ("eval.image_size", config.eval.image_size))
    for key, size in sides:
        if native is not None and size > native:
            raise ConfigError(
                key,
                size,
                f"does not fit the {config.dataset} images of side {native}",
                f"use a {key} between 1 and {native}",
            )
    try:
        data.get_preset(config.augmentation, **options(config.augment_options))
    except (ValueError, TypeError) as error:
        fail("augment_options", f"is invalid ({error})", "see jaxcl.data.AugmentConfig")
    if check_data_files:
        _check_dataset_files(config)


# Every numeric key's allowed values, as an interval ('inf' excludes infinity
# too), and a sensible value for the error message. Method sections are checked
# by their methods (``Method.validate``), augmentation options by AugmentConfig.
_RANGES = {
    "global_batch_size": ("[1, inf)", 256),
    "num_steps": ("[0, inf)", "0 (use num_epochs) or 1000"),
    "num_epochs": ("[0, inf)", 10.0),
    "learning_rate": ("(0, inf)", 0.3),
    "warmup_epochs": ("[0, inf)", 1.0),
    "weight_decay": ("[0, inf)", 1e-6),
    "momentum": ("[0, 1)", 0.9),
    "trust_coefficient": ("(0, inf)", 1e-3),
    "probe_weight": ("[0, inf)", 0.1),
    "projection_dim": ("[1, inf)", 128),
    "projection_hidden_dim": ("[0, inf)", "0 (the encoder width)"),
    "projection_layers": ("[0, inf)", "0 (the head's default) or 3"),
    "image_size": ("[1, inf)", 224),
    "num_views": ("[2, inf)", "2 (contrastive methods need two views of each image)"),
    "log_every_steps": ("[1, inf)", 50),
    "checkpoint_every_steps": ("[1, inf)", 500),
    "max_checkpoints_to_keep": ("[1, inf)", 2),
    "max_consecutive_skips": ("[1, inf)", 10),
    "knn_every_steps": ("[0, inf)", "0 (off) or 1000"),
    "knn_k": ("[1, inf)", 200),
    "knn_temperature": ("(0, inf)", 0.1),
    "knn_train_examples": ("[1, inf)", 10000),
    "eval.linear_epochs": ("[1, inf)", 100),
    "eval.linear_batch_size": ("[1, inf)", 512),
    "eval.linear_learning_rate": ("(0, inf)", 0.1),
    "eval.linear_weight_decay": ("[0, inf)", 0.0),
    "eval.feature_batch_size": ("[1, inf)", 1024),
    "eval.image_size": ("[0, inf)", "0 (config.image_size)"),
    "eval.max_train_examples": ("[0, inf)", "0 (the whole split)"),
    "eval.max_test_examples": ("[0, inf)", "0 (the whole split)"),
}


def _in_interval(value, interval: str) -> bool:
    """Whether a finite number ``value`` lies in an interval written like ``'[0, 1)'``."""
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    above = value > low if interval[0] == "(" else value >= low
    below = value < high if interval[-1] == ")" else value <= high
    return above and below


def _check_ranges(config) -> None:
    """Raises for a numeric key that is not a finite number in its `_RANGES` interval."""
    for key, (interval, sensible) in _RANGES.items():
        section, _, name = key.rpartition(".")
        value = (config[section] if section else config)[name]
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and _in_interval(value, interval)):
            kind = "an integer" if isinstance(default_value(key), int) else "a finite number"
            raise ConfigError(key, value, f"must be {kind} in {interval}", f"use e.g. {sensible}")


def default_value(key: str):
    """The default of a dotted config key, e.g. ``default_value('eval.linear_epochs')``."""
    value = default_config()
    for part in key.split("."):
        value = value[part]
    return value


def _dataset_info(config, check_data_files: bool):
    """The config's ``DatasetInfo``; a TFDS dataset by name is prepared first if needed.

    Preparing (downloading) is the one expensive step of validation, and the run
    needs it anyway; without ``check_data_files`` an unprepared one is an error.
    """
    try:
        return data.dataset_info(
            config.dataset,
            options(config.dataset_options),
            config.data_dir or None,
            prepare=check_data_files,
        )
    except data.NotPreparedError:
        data_dir = config.data_dir or "~/tensorflow_datasets"
        raise ConfigError(
            "dataset", config.dataset, f"is not prepared in data_dir {data_dir}",
            f"prepare it there (tfds build {config.dataset} --data_dir={data_dir})",
        ) from None  # fmt: skip
    except ValueError as error:
        raise ConfigError(
            "dataset_options", options(config.dataset_options), f"is invalid ({error})",
            "pass only the options listed",
        ) from None  # fmt: skip


def _plain(value):
    """A config value as plain Python, whose repr fits on one line."""
    return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value


def _check_keys(config, defaults, prefix: str = "") -> None:
    """Raises for keys of ``config`` that ``defaults`` lacks and the reverse."""
    for key in config:
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults.keys()), n=1)
            fix = f"did you mean config.{prefix}{close[0]}?" if close else "remove it"
            raise ConfigError(f"{prefix}{key}", config[key], "is not a jaxcl config key", fix)
        if key not in FREE_FORM_KEYS and isinstance(defaults[key], ml_collections.ConfigDict):
            _check_keys(config[key], defaults[key], f"{prefix}{key}.")
    for key in defaults:
        if key not in config:
            raise ConfigError(
                f"{prefix}{key}",
                "<missing>",
                f"is missing (its default: {_plain(defaults[key])!r})",
                "build configs from jaxcl.config.default_config()",
            )


# Raw-pixel features of the baseline probe above this many bytes are refused:
# ImageNet's train split would be 1.28M x 224 x 224 x 3 x 4 bytes, about 770 GB.
_MAX_RAW_PIXEL_BYTES = 8 * 2**30


def _check_baselines_fit(config, info) -> None:
    """Raises when the raw-pixel baseline would not fit in host memory."""
    if not config.eval.baselines:
        return
    split = config.eval_train_split or info.eval_splits[0]
    examples = config.eval.max_train_examples or data.split_num_examples(info, split)
    channels = info.image_shape[2]
    size = data.eval_image_size(config)
    raw_bytes = examples * size**2 * channels * 4
    if raw_bytes > _MAX_RAW_PIXEL_BYTES:
        raise ConfigError(
            "eval.baselines",
            True,
            f"needs {raw_bytes / 2**30:.0f} GiB of raw-pixel features for {examples} "
            f"{size}x{size} images",
            "turn it off or set config.eval.max_train_examples lower",
        )


def _check_labels_not_needed(config, method) -> None:
    """Raises when an unlabelled dataset meets a part of the run that needs labels."""
    needs_labels = {
        "eval.run_at_end": config.eval.run_at_end,
        "knn_every_steps": config.knn_every_steps > 0,
        "eval.baselines": config.eval.baselines,
        "method": method.uses_labels,
    }
    for key, needed in needs_labels.items():
        if needed:
            section, _, name = key.rpartition(".")
            value = (config[section] if section else config)[name]
            raise ConfigError(
                key,
                value,
                f"needs class labels, and this {config.dataset} has none",
                "turn it off, or use labelled data (a folder per class; a TFDS label_key)",
            )


def _check_dataset_files(config) -> None:
    """Raises when the files a dataset is read from are known to be missing.

    Only what can be known without a download: an explicit Fashion-MNIST
    ``source_dir``, and ImageNet, which TFDS cannot download.
    """
    dataset_options = options(config.dataset_options)
    if config.dataset == "fashion_mnist" and "source_dir" in dataset_options:
        source_dir = dataset_options["source_dir"]
        if not data.fashion_mnist_files_exist(source_dir):
            raise ConfigError(
                "dataset_options.source_dir",
                source_dir,
                "holds no Fashion-MNIST IDX files (train-images-idx3-ubyte.gz ...)",
                f"run {data.FASHION_MNIST_INSTALL_HINT} and drop the option, or point it "
                "at the directory of the four files",
            )
    if config.dataset == "imagenet2012" and not data.is_prepared(
        "imagenet2012", config.data_dir or None
    ):
        manual_dir = dataset_options.get("manual_dir", "")
        tars = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
        has_tars = manual_dir and all(
            os.path.isfile(os.path.join(manual_dir, name)) for name in tars
        )
        if not has_tars:
            raise ConfigError(
                "dataset_options.manual_dir",
                manual_dir,
                f"does not hold {' and '.join(tars)} and imagenet2012 is not prepared in "
                f"config.data_dir={config.data_dir!r}",
                "download the two tar files from image-net.org and pass their directory: "
                """--config.dataset_options='{"manual_dir": "DIR"}'""",
            )


# ------------------------------------------------------- the workdir's copy


class NotARunError(workdir_io.WorkdirError, FileNotFoundError):
    """A workdir without a run's ``config.json``."""


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes ``workdir/config.json`` atomically (read back by ``load_config``)."""
    workdir_io.write_json(workdir_io.resolve(workdir) / "config.json", config.to_dict())


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in ``workdir`` was trained with, on today's defaults.

    Keys added to jaxcl since the run keep their defaults.

    Raises:
      NotARunError: ``workdir`` holds no ``config.json`` (a ``FileNotFoundError``).
      jaxcl.workdir_io.WorkdirError: its ``config.json`` is not valid JSON.
    """
    path = workdir_io.resolve(workdir) / "config.json"
    if not path.exists():
        raise NotARunError(f"{path} does not exist; pass the --workdir of a jaxcl training run")
    try:
        saved = workdir_io.read_json(path)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise workdir_io.WorkdirError(
            f"{path} is not valid JSON (cut short? {error}); restore it from a copy, or write "
            "it again with the run's exact config: jaxcl.config.save_config(config, workdir)"
        ) from None
    if not isinstance(saved, dict):
        raise workdir_io.WorkdirError(f"{path} holds no config object; restore it from a copy")
    config = default_config()
    config.unlock()
    _merge_saved(config, saved)
    config.lock()
    return config


def _merge_saved(config: ml_collections.ConfigDict, saved: dict) -> None:
    # Structured sections (eval, a method's) merge key by key, so keys added to
    # jaxcl since the run keep their defaults; free-form option dicts
    # (model_options, dataset_options) are replaced whole.
    for key, value in saved.items():
        default = config.get(key)
        structured = isinstance(default, ml_collections.ConfigDict) and key not in FREE_FORM_KEYS
        if isinstance(value, dict) and structured:
            _merge_saved(default, value)
        else:
            config[key] = value
