"""Weights in and out: PyTorch ResNets and ViTs to jaxcl encoders, safe loading, export."""

import json
import os
import pathlib

import jax
import numpy as np
import pytest
import torch
from conftest import make_tiny_config
from flax import nnx
from torch_reference import (
    TorchResNet,
    TorchViT,
    randomize_batch_norm_statistics,
    randomize_vit,
)

from jaxcl import finetuning, load_encoder, models, weights
from jaxcl.checkpoint import Checkpointer
from jaxcl.config import ConfigError
from jaxcl.configs.finetune import simclr_fashion_mnist as finetune_recipe
from jaxcl.models import functional
from jaxcl.restore import restore_run
from jaxcl.run import evaluate_init_from, evaluate_workdir, train_and_evaluate
from jaxcl.train import Trainer, restore_or_initialize
from jaxcl.trained_encoder import export_torch
from jaxcl.workdir_identity import WorkdirMismatchError


def _features(encoder, images_nhwc):
    """Eval-mode features through the pure split/apply path."""
    outputs, _ = functional.apply(*functional.split(encoder), images_nhwc, train=False)
    return np.asarray(outputs)


def _torch_features(model, images_nhwc):
    model.eval()
    with torch.no_grad():
        return model.features(torch.from_numpy(np.transpose(images_nhwc, (0, 3, 1, 2)))).numpy()


def _assert_same_features(jax_features, torch_features):
    scale = np.abs(torch_features).max()
    assert scale > 1e-2  # the comparison is not between near-zero vectors
    np.testing.assert_allclose(jax_features, torch_features, rtol=1e-4, atol=1e-4 * scale)


def _images(shape, seed=0):
    return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


@pytest.mark.parametrize(
    ("name", "width", "depth", "heads", "expected"),
    [
        ("vit_tiny", 192, 12, 3, 5_486_592),
        ("vit_small", 384, 12, 12, 21_590_016),
        ("vit_base", 768, 12, 12, 85_647_360),
    ],
)
def test_vit_parameter_counts_match_the_reference_architecture(name, width, depth, heads, expected):
    """timm's / MoCo v3's ViT at 224 px, patch 16, without head and fixed pos_embed."""
    reference = TorchViT(width=width, depth=depth, num_heads=heads, sincos=True)
    reference_count = sum(
        p.numel() for n, p in reference.named_parameters() if not n.startswith(("head.", "pos_"))
    )
    encoder = nnx.eval_shape(lambda: models.create(name, rngs=nnx.Rngs(0)))
    _, params, batch_stats = functional.split(encoder)
    count = sum(leaf.size for leaf in jax.tree.leaves((params, batch_stats)))
    assert reference_count == count == expected
    # Learned position embeddings add timm's (1, 197, width) table.
    learned = nnx.eval_shape(
        lambda: models.create(name, position_embedding="learned", image_size=224, rngs=nnx.Rngs(0))
    )
    assert sum(x.size for x in jax.tree.leaves(nnx.state(learned))) == expected + 197 * width


def test_mocov3_sincos_position_embedding_matches_the_reference_formula():
    from jaxcl.models.vit import sincos_position_embedding

    reference = TorchViT(image_size=64, width=32, depth=1, num_heads=2).pos_embed.detach().numpy()
    ours = np.asarray(sincos_position_embedding(4, 4, 32))
    np.testing.assert_allclose(ours, reference[0, 1:], atol=1e-6)
    # Rows and columns are encoded apart: two tokens in one row share the first half.
    np.testing.assert_array_equal(ours[0, :16], ours[1, :16])
    assert not np.allclose(ours[0, 16:], ours[1, 16:])


def test_resnet50_from_a_moco_checkpoint_file_gives_the_source_features(tmp_path):
    generator = torch.Generator().manual_seed(0)
    source = TorchResNet("bottleneck", (3, 4, 6, 3))
    randomize_batch_norm_statistics(source, generator)
    # MoCo v2's .pth.tar: the query and key encoders, their heads, the queue.
    state = {f"module.encoder_q.{k}": v for k, v in source.state_dict().items()}
    state |= {f"module.encoder_k.{k}": torch.zeros_like(v) for k, v in source.state_dict().items()}
    state["module.queue"] = torch.randn(128, 64)
    path = tmp_path / "moco_v2_800ep_pretrain.pth.tar"
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": state, "optimizer": {}}, path)

    encoder = weights.import_torch(str(path), model="resnet50")
    images = _images((2, 64, 64, 3))
    _assert_same_features(_features(encoder, images), _torch_features(source, images))


@pytest.mark.parametrize(
    "prefix", ["module.base_encoder.", "module.encoder.", "backbone.", ""], ids=repr
)
def test_resnet18_small_stem_under_each_published_prefix(prefix):
    """MoCo v3 (momentum encoder beside it), SupCon, solo-learn and bare state dicts."""
    generator = torch.Generator().manual_seed(1)
    source = TorchResNet("basic", (2, 2, 2, 2), widths=(16, 32, 64, 128), small_stem=True)
    randomize_batch_norm_statistics(source, generator)
    state = {f"{prefix}{k}": v for k, v in source.state_dict().items()}
    if prefix == "module.base_encoder.":
        state |= {f"module.momentum_encoder.{k}": -v for k, v in source.state_dict().items()}
        state["module.predictor.0.weight"] = torch.randn(8, 4)
    encoder = weights.import_torch(state, model="resnet18", width_multiplier=0.25)
    assert encoder.stem == "small"
    images = _images((2, 32, 32, 3), seed=1)
    _assert_same_features(_features(encoder, images), _torch_features(source, images))


def test_mocov3_vit_small_gives_the_source_features_and_can_freeze_its_patch_projection():
    generator = torch.Generator().manual_seed(2)
    source = TorchViT(width=384, depth=12, num_heads=12, sincos=True)
    randomize_vit(source, generator)
    state = {f"module.base_encoder.{k}": v for k, v in source.state_dict().items()}
    images = _images((2, 224, 224, 3), seed=2)
    expected = _torch_features(source, images)

    encoder = weights.import_torch(state, model="vit_small")
    assert encoder.position_embedding == "sincos"  # recognised from MoCo v3's fixed table
    _assert_same_features(_features(encoder, images), expected)

    frozen = weights.import_torch(state, model="vit_small", frozen_patch_embedding=True)
    _, params, batch_stats = functional.split(frozen)
    assert "patch_embed" not in params and set(batch_stats["patch_embed"]) == {"kernel", "bias"}
    _assert_same_features(_features(frozen, images), expected)


def test_deit_style_vit_with_learned_position_embeddings_and_six_heads():
    generator = torch.Generator().manual_seed(3)
    source = TorchViT(image_size=32, patch_size=4, width=96, depth=3, num_heads=6, sincos=False)
    randomize_vit(source, generator)
    encoder = weights.import_torch(source.state_dict(), model="vit_small", num_heads=6)
    assert (encoder.position_embedding, encoder.image_size, encoder.depth) == ("learned", 32, 3)
    images = _images((3, 32, 32, 3), seed=3)
    _assert_same_features(_features(encoder, images), _torch_features(source, images))
    # The head count is not in the weights: the wrong one gives other features.
    wrong = weights.import_torch(source.state_dict(), model="vit_small", num_heads=3)
    assert not np.allclose(_features(wrong, images), _torch_features(source, images), atol=1e-3)


class _RunsCode:
    """An object whose unpickling runs a shell command (what a hostile checkpoint does)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "hook": _RunsCode(marker)}, path)
    with pytest.raises(weights.WeightsError, match=r"needs (posix|os)\.system, which is not a"):
        weights.import_torch(str(path), model="resnet18")
    assert not marker.exists()
    # The file is live: an unsafe load would have run the command.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_mismatched_weights_name_the_keys_and_the_fix():
    state = TorchResNet("basic", (2, 2, 2, 2)).state_dict()
    with pytest.raises(weights.WeightsError, match=r"unexpected layer1\.0\.conv3\.weight|missing"):
        weights.import_torch(state, model="resnet50")
    with pytest.raises(weights.WeightsError, match=r"found no 'conv1.weight'.*'model\.'"):
        weights.import_torch({f"model.{k}": v for k, v in state.items()}, model="resnet18")
    with pytest.raises(weights.WeightsError, match=r"'vit_huge' is not a jaxcl encoder"):
        weights.import_torch(state, model="vit_huge")
    with pytest.raises(weights.WeightsError, match=r"list is not a state dict"):
        weights.import_torch([1, 2], model="resnet18")


def test_in_memory_round_trip_of_both_layouts():
    for encoder in (
        models.create("resnet18", width_multiplier=0.25, rngs=nnx.Rngs(4)),
        models.create("vit_tiny", depth=2, patch_size=4, in_channels=1, rngs=nnx.Rngs(5)),
    ):
        state_dict = weights.torch_state_dict_of(encoder)
        name = "resnet18" if isinstance(encoder, models.ResNet) else "vit_tiny"
        back = weights.import_torch(state_dict, model=name)
        size = (2, 32, 32, 3) if name == "resnet18" else (2, 28, 28, 1)
        images = _images(size, seed=4)
        np.testing.assert_array_equal(_features(back, images), _features(encoder, images))


@pytest.mark.parametrize("model", ["resnet_tiny", "vit"])
def test_export_torch_of_a_run_loads_into_the_pytorch_model_and_back(tmp_path, model):
    overrides = {}
    if model == "vit":
        overrides = {
            "model": "vit_tiny",
            "model_options": {"width": 32, "depth": 2, "num_heads": 2, "patch_size": 4},
            "method": "mocov3",
            "optimizer": "adamw",
            "learning_rate": 1e-3,
            "projection_layers": 3,
        }
    config = make_tiny_config(**overrides)
    # The end-of-run evaluation too: features of batches sharded over 8 devices.
    config.eval.run_at_end = model == "vit"
    config.eval.linear_epochs = 2
    workdir = str(tmp_path / "run")
    train_and_evaluate(config, workdir)
    out = tmp_path / "encoder.pth"
    exported = export_torch(workdir, str(out))
    images = _images((3, 16, 16, 1), seed=5)
    expected = np.asarray(load_encoder(workdir)(images))

    if model == "vit":
        source = TorchViT(image_size=16, patch_size=4, in_channels=1, width=32, depth=2,
                          num_heads=2)  # fmt: skip
        back = weights.import_torch(str(out), model="vit_tiny", num_heads=2)
    else:
        source = TorchResNet("basic", (1, 1), widths=(8, 16), small_stem=True, in_channels=1)
        back = weights.import_torch(str(out), model="resnet_tiny")
    missing, unexpected = source.load_state_dict(exported, strict=False)
    assert unexpected == [] and all(key.startswith("head.") or key.startswith("fc.")
                                    for key in missing)  # fmt: skip
    np.testing.assert_allclose(_torch_features(source, images), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_features(back, images), expected, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A tiny SimCLR run, its trained state on the host, and its encoder as a .pth file."""
    root = tmp_path_factory.mktemp("source_run")
    source = str(root / "source")
    train_and_evaluate(make_tiny_config("simclr"), source)
    torch_file = str(root / "encoder.pth")
    export_torch(source, torch_file)
    return source, jax.device_get(restore_run(source).state), torch_file


def test_init_from_a_run_or_a_pytorch_file_starts_from_its_encoder(source_run, tmp_path):
    source, trained, torch_file = source_run
    for init_from in (source, torch_file):
        config = make_tiny_config("mocov3", init_from=init_from, seed=7)
        trainer = Trainer(config)
        checkpointer = Checkpointer(str(tmp_path / f"fresh_{os.path.basename(init_from)}"))
        state = jax.device_get(restore_or_initialize(trainer, checkpointer))
        checkpointer.close()
        for tree in ("params", "batch_stats", "momentum_params", "momentum_batch_stats"):
            own = "params" if tree.endswith("params") else "batch_stats"
            jax.tree.map(
                np.testing.assert_array_equal, state[tree]["encoder"], trained[own]["encoder"]
            )
        # The heads are this run's own, freshly initialised.
        head, source_head = (jax.tree.leaves(t["params"]["projector"])[0] for t in (state, trained))
        assert not np.allclose(head, source_head)

    with pytest.raises(ConfigError, match=r"init_from.*does not exist"):
        Trainer(make_tiny_config(init_from=str(tmp_path / "nowhere")))
    wider = make_tiny_config(init_from=torch_file, model_options={"base_widths": (16, 32)})
    with pytest.raises(weights.WeightsError, match=r"does not match resnet_tiny|another encoder"):
        restore_or_initialize(Trainer(wider), Checkpointer(str(tmp_path / "wider")))


def test_linear_evaluation_of_imported_weights_is_the_runs_own(source_run, tmp_path):
    source, _, torch_file = source_run
    own = evaluate_workdir(source)
    imported_dir = str(tmp_path / "imported")
    config = make_tiny_config("simclr", init_from=torch_file)
    imported = evaluate_init_from(config, imported_dir)
    assert imported["init_from"] == torch_file
    for key in ("linear_top1", "knn_top1", "alignment", "uniformity"):
        assert imported[key] == pytest.approx(own[key], rel=1e-6, abs=1e-6), key
    stored = json.loads((tmp_path / "imported" / "results.json").read_text())
    assert stored["linear_top1"] == imported["linear_top1"]
    assert (tmp_path / "imported" / "plots" / "embedding_pca.png").exists()

    # A training run's workdir is never the target; init_from must name weights.
    before = (pathlib.Path(source) / "results.json").read_bytes()
    with pytest.raises(WorkdirMismatchError, match="holds a training run"):
        evaluate_init_from(config, source)
    assert (pathlib.Path(source) / "results.json").read_bytes() == before
    with pytest.raises(ConfigError, match=r"init_from.*names no weights"):
        evaluate_init_from(make_tiny_config("simclr"), str(tmp_path / "none"))
    assert not (tmp_path / "none").exists()


def test_fine_tuning_starts_from_a_pytorch_file_as_from_its_run(source_run, tmp_path):
    source, trained, torch_file = source_run
    recipe = finetune_recipe.get_config("smoke")
    recipe.base_config = source  # the run's network; the file gives its encoder
    states = []
    for pretrained in (source, torch_file):
        tuner = finetuning.FineTuner(finetuning.finetune_run_config(recipe, pretrained))
        states.append(jax.device_get(tuner.initial_state()))
    for tree in ("params", "batch_stats"):
        jax.tree.map(np.testing.assert_array_equal, states[1][tree], states[0][tree])
        jax.tree.map(
            np.testing.assert_array_equal, states[1][tree]["encoder"], trained[tree]["encoder"]
        )

    recipe.from_projection_layer = 1
    with pytest.raises(ConfigError, match=r"from_projection_layer.*encoder only"):
        finetuning.finetune_run_config(recipe, torch_file)
    recipe.from_projection_layer = 0
    with pytest.raises(ConfigError, match=r"pretrained.*does not exist"):
        finetuning.finetune_run_config(recipe, str(tmp_path / "nowhere.pth"))
    recipe.base_config = "supcon_cifar10:smoke"  # RGB: another stem than the file's
    wider = finetuning.finetune_run_config(recipe, torch_file)
    with pytest.raises(weights.WeightsError, match=r"another encoder|does not match"):
        finetuning.FineTuner(wider).initial_state()


def test_simclr_tf2_checkpoint_gives_the_tensorflow_features(tmp_path):
    import tensorflow as tf
    from tf_reference import Model

    source = Model(seed=0)
    prefix = tf.train.Checkpoint(model=source).save(str(tmp_path / "ckpt"))
    keys = dict(tf.train.list_variables(prefix))
    # The names of SimCLR's tf2 checkpoints.
    assert (
        "model/resnet_model/block_groups/0/layers/0/projection_layers/0/conv2d/kernel"
        "/.ATTRIBUTES/VARIABLE_VALUE" in keys
    )
    images = _images((2, 64, 64, 3), seed=6)
    expected = source.resnet_model(tf.constant(images)).numpy()

    encoder = weights.import_simclr_tf(str(tmp_path), model="resnet50")
    assert encoder.stem_pool_padding == "same"
    _assert_same_features(_features(encoder, images), expected)
    # init_from takes the checkpoint's prefix too.
    config = make_tiny_config(
        model="resnet50", model_options={"stem": "imagenet", "stem_pool_padding": "same"},
        init_from=prefix, compute_dtype="float32",
    )  # fmt: skip
    config.dataset_options = {**config.dataset_options, "image_shape": (64, 64, 3)}
    config.image_size = 64
    trainer = Trainer(config)
    state = trainer.with_encoder_from(trainer.initial_state(), prefix)
    started = functional.merge(
        functional.split(encoder)[0], state["params"]["encoder"], state["batch_stats"]["encoder"]
    )
    _assert_same_features(_features(started, images), expected)
    # torchvision's symmetric max-pool padding shifts every window by a pixel.
    _, params, batch_stats = functional.split(encoder)
    symmetric = models.create("resnet50", rngs=nnx.Rngs(0))
    graphdef = functional.split(symmetric)[0]
    shifted, _ = functional.apply(graphdef, params, batch_stats, images, train=False)
    assert not np.allclose(np.asarray(shifted), expected, rtol=1e-3)

    (tmp_path / "empty").mkdir()
    with pytest.raises(weights.WeightsError, match=r"holds no TensorFlow checkpoint"):
        weights.import_simclr_tf(str(tmp_path / "empty"))
    with pytest.raises(weights.WeightsError, match=r"not a readable TensorFlow checkpoint"):
        weights.import_simclr_tf(str(tmp_path / "missing" / "ckpt-1"))
    with pytest.raises(weights.WeightsError, match=r"bottleneck ResNets"):
        weights.import_simclr_tf(prefix, model="resnet18")
