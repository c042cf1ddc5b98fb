"""On-device augmentation: op by op equal to tf.image, the same distributions as the
tf.data presets, the same geometry in both modes, and a train step that stays exact
(8 devices == 1 device, bitwise resume)."""

import dataclasses
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_tiny_config
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from scipy import stats

from jaxcl import data
from jaxcl.config import ConfigError, validate_config
from jaxcl.data import augment, device_augment
from jaxcl.data._tf import tf
from jaxcl.restore import restore_run
from jaxcl.run import train_and_evaluate
from jaxcl.train import Trainer


def _rgb(shape=(13, 11, 3), seed=0):
    image = np.random.default_rng(seed).uniform(size=shape).astype(np.float32)
    # Grays, primaries, black and white: the edge cases of the HSV conversion.
    edges = [[0.5, 0.5, 0.5], [1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 1], [0.2, 0.9, 0.9]]
    image[0, : len(edges)] = edges
    return image


def _tf_clip(image):
    return tf.clip_by_value(image, 0.0, 1.0).numpy()


# -------------------------------------------------------------- op by op


@pytest.mark.parametrize("factor", [0.0, 0.35, 1.0, 1.8])
def test_brightness_contrast_saturation_equal_tf_image(factor):
    image = _rgb()
    np.testing.assert_allclose(
        device_augment.adjust_brightness(image, factor), _tf_clip(image * factor), atol=1e-6
    )
    np.testing.assert_allclose(
        device_augment.adjust_contrast(image, factor),
        _tf_clip(tf.image.adjust_contrast(image, factor)),
        atol=1e-6,
    )
    np.testing.assert_allclose(
        device_augment.adjust_saturation(image, factor),
        _tf_clip(tf.image.adjust_saturation(image, factor)),
        atol=2e-6,
    )


@pytest.mark.parametrize("delta", [-0.5, -0.2, 0.0, 0.07, 0.2, 0.5])
def test_hue_equals_tf_image(delta):
    image = _rgb(seed=1)
    np.testing.assert_allclose(
        device_augment.adjust_hue(image, delta),
        _tf_clip(tf.image.adjust_hue(image, delta)),
        atol=2e-6,
    )


def test_hsv_conversions_equal_tf_image_and_invert():
    image = _rgb(seed=2)
    hsv = device_augment.rgb_to_hsv(image)
    np.testing.assert_allclose(hsv, tf.image.rgb_to_hsv(image).numpy(), atol=1e-6)
    np.testing.assert_allclose(device_augment.hsv_to_rgb(hsv), image, atol=1e-6)


def test_grayscale_and_solarize_equal_tf_versions():
    image = _rgb(seed=3)
    np.testing.assert_allclose(
        device_augment.to_grayscale(image), augment.to_grayscale(image).numpy(), atol=1e-6
    )
    gray = image[..., :1]
    np.testing.assert_array_equal(device_augment.to_grayscale(gray), gray)
    np.testing.assert_array_equal(
        device_augment.solarize(image, 0.4), augment.solarize(image, 0.4).numpy()
    )


@pytest.mark.parametrize(
    ("kernel_size", "shape"), [(3, (9, 8, 1)), (7, (16, 12, 3)), (23, (24, 24, 3))]
)
def test_blur_equals_tf_blur_at_the_same_sigma(kernel_size, shape):
    image = _rgb(shape) if shape[-1] == 3 else _rgb((*shape[:2], 3))[..., :1]
    seed = tf.constant([4, 2], tf.int64)
    # augment.gaussian_blur draws its sigma from the seed this way.
    sigma = float(tf.random.stateless_uniform([], seed=seed, minval=0.1, maxval=2.0))
    expected = augment.gaussian_blur(image, seed, kernel_size, (0.1, 2.0)).numpy()
    np.testing.assert_allclose(
        device_augment.gaussian_blur(image, sigma, kernel_size), expected, atol=2e-6
    )


def test_blur_refuses_a_kernel_wider_than_the_image():
    with pytest.raises(ValueError, match="a kernel of side 23 needs images larger than 11"):
        device_augment.gaussian_blur(np.zeros((8, 8, 3), np.float32), 1.0, 23)


# ------------------------------------------------------------ distributions

# A fixed 6x6 source; no crop and no flip, so only the photometric half varies.
_NUM_DRAWS = 2000


def _source(channels):
    image = _rgb((6, 6, 3), seed=5)
    return image if channels == 3 else image[..., :1]


def _statistics(views):
    """Per view: each channel's mean and standard deviation and one pixel's values.

    Rounded to 1e-4: clipping and grays make atoms (a value many views share),
    and the two implementations' last float bits would split each atom in two,
    which the Kolmogorov-Smirnov test sees as a large difference.
    """
    views = np.asarray(views, np.float64)
    flat = views.reshape(len(views), -1, views.shape[-1])
    return np.concatenate([flat.mean(1), flat.std(1), flat[:, 7]], axis=1).round(4)


def _tf_views(config, channels, count=_NUM_DRAWS):
    image = tf.constant(_source(channels))
    views = tf.data.Dataset.range(count).map(
        lambda index: augment.augment_view(
            image, augment.view_seed(0, index, 0, 0), (6, 6), config
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return next(views.batch(count).as_numpy_iterator())


def _device_views(config, channels, count=_NUM_DRAWS):
    image = _source(channels)
    views = np.broadcast_to(image, (count, 1, *image.shape))
    keys = jax.random.key_data(jax.random.split(jax.random.key(7), count))[:, None]
    return np.asarray(device_augment.finish_views(views, keys, [config]))[:, 0]


def _photometric_only(config):
    return dataclasses.replace(config, crop=False, flip_prob=0.0, blur_kernel_fraction=0.5)


def _smallest_p_value(a, b):
    statistics_a, statistics_b = _statistics(a), _statistics(b)
    return min(
        stats.ks_2samp(statistics_a[:, j], statistics_b[:, j]).pvalue
        for j in range(statistics_a.shape[1])
    )


PRESET_VIEWS = [
    ("simclr_imagenet", 0, 3),
    ("mocov2", 0, 3),
    ("byol", 0, 3),
    ("byol", 1, 3),
    ("fashion_mnist", 0, 1),
]

# One random parameter at a time (always applied), where a preset's mixture of
# choices would hide a small difference in one of them.
_NOTHING = {
    "jitter_prob": 1.0, "brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0,
    "grayscale_prob": 0.0, "blur_prob": 0.0,
}  # fmt: skip
ISOLATED = {
    "brightness": {"brightness": 0.8},
    "contrast": {"contrast": 0.8},
    "saturation": {"saturation": 0.8},
    "hue": {"hue": 0.2},
    # Contrast mixes the channels' means into each other and hue rotates them:
    # of the pairs of adjustments, the one whose order changes most.
    "order": {"contrast": 0.8, "hue": 0.2},
    "blur_sigma": {"jitter_prob": 0.0, "blur_prob": 1.0},
}


def _isolated(name):
    base = _photometric_only(augment.AugmentConfig())
    return dataclasses.replace(base, **{**_NOTHING, **ISOLATED[name]})


@pytest.mark.parametrize(("preset", "view", "channels"), PRESET_VIEWS)
def test_device_views_follow_the_distribution_of_the_tf_data_preset(preset, view, channels):
    """Two-sample Kolmogorov-Smirnov tests on 2,000 views of one image: channel
    means, spreads and one pixel, for every random choice of the preset at once
    (whether each operation applies, jitter factors and their order, grayscale,
    blur sigma, solarization)."""
    config = _photometric_only(augment.get_preset(preset)[view])
    p_value = _smallest_p_value(_tf_views(config, channels), _device_views(config, channels))
    # 3C statistics tested at once: 1e-3 each keeps a false alarm below 1%.
    assert p_value > 1e-3, p_value


@pytest.mark.parametrize("name", ISOLATED)
def test_each_random_parameter_has_the_distribution_of_the_tf_data_one(name):
    config = _isolated(name)
    assert _smallest_p_value(_tf_views(config, 3), _device_views(config, 3)) > 1e-3


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("brightness", {"brightness": 0.6}),
        ("hue", {"hue": 0.15}),
        ("order", {"jitter_random_order": False}),
        ("blur_sigma", {"blur_sigma": (0.1, 1.5)}),
    ],
)
def test_the_distribution_test_detects_a_small_difference(name, change):
    """The tests above have power: each of these changes fails them."""
    config = _isolated(name)
    changed = dataclasses.replace(config, **change)
    assert _smallest_p_value(_tf_views(config, 3), _device_views(changed, 3)) < 1e-4


def test_all_probabilities_zero_is_the_identity():
    config = dataclasses.replace(
        augment.AugmentConfig(), jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0
    )
    views = np.random.default_rng(0).integers(0, 256, (4, 2, 8, 8, 3), dtype=np.uint8)
    keys = np.zeros((4, 2, 2), np.uint32)
    out = device_augment.finish_views(views, keys, [config, config])
    np.testing.assert_allclose(out, views / 255.0, atol=1e-7)


def test_finish_views_refuses_keys_that_do_not_match():
    views = np.zeros((4, 2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"do not match: \(4, 2, 8, 8, 3\) and \(4, 2\)"):
        device_augment.finish_views(views, np.zeros((4, 2), np.uint32), augment.get_preset("byol"))


# ------------------------------------------------------------ the pipeline

SYNTHETIC = {"image_shape": (20, 20, 3), "num_classes": 4, "num_examples": 32}


def _batch(on_device, preset="byol", **overrides):
    arguments = {"process_index": 0, "process_count": 1, **overrides}
    iterator = data.make_train_iterator(
        "synthetic", preset=preset, global_batch_size=8, image_size=16, seed=3,
        dataset_options=SYNTHETIC, augment_on_device=on_device, **arguments,
    )  # fmt: skip
    return next(iterator)


def test_both_modes_draw_the_same_crops_and_flips():
    """With the photometric half off, the host's uint8 views are the tf.data views
    rounded to 1/255: the same crop, resize and flip from the same seed."""
    off = {"jitter_prob": 0.0, "grayscale_prob": 0.0, "blur_prob": 0.0, "solarize_prob": 0.0}
    host = _batch(False, "simclr_imagenet", augment_options=off)
    device = _batch(True, "simclr_imagenet", augment_options=off)
    assert device["views"].dtype == np.uint8 and device["view_keys"].dtype == np.uint32
    assert device["view_keys"].shape == (8, 2, 2)
    np.testing.assert_allclose(device["views"] / 255.0, host["views"], atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(device["index"], host["index"])


def test_view_keys_depend_on_example_epoch_and_view_only():
    first = _batch(True)
    again = _batch(True)
    np.testing.assert_array_equal(first["view_keys"], again["view_keys"])
    keys = first["view_keys"].reshape(-1, 2)
    assert len({tuple(k) for k in keys}) == len(keys), "two views share a key"
    # Two processes' halves of the batch carry the keys of the whole batch.
    halves = [_batch(True, process_index=p, process_count=2) for p in (0, 1)]
    halves = np.concatenate([h["view_keys"] for h in halves])
    np.testing.assert_array_equal(halves, first["view_keys"])


# ------------------------------------------------------------ the train step


def _device_config(**overrides):
    config = make_tiny_config("simclr", **overrides)
    config.dataset_options = {
        "image_shape": (16, 16, 3),
        "num_classes": 4,
        "num_examples": {"train": 64, "test": 32},
    }
    # Jitter with saturation and hue, grayscale and blur (a 3-pixel kernel at 16
    # px). Not BYOL's solarization: on this tiny network a 2-step run with it
    # turns the last float bits of the inputs into 1e-3 parameter differences
    # (host augmentation too), so its 8-device views are compared below instead.
    config.augmentation = "simclr_imagenet"
    config.augment_options = {"blur_kernel_fraction": 0.2}
    config.augment_on_device = "true"
    return config


def test_auto_resolves_by_platform_and_bad_values_are_refused():
    assert data.resolve_augment_on_device("auto", "gpu") is True
    assert data.resolve_augment_on_device("auto", "tpu") is True
    assert data.resolve_augment_on_device("false", "gpu") is False
    assert data.resolve_augment_on_device("true", "cpu") is True
    config = _device_config()
    config.augment_on_device = "yes"
    with pytest.raises(ConfigError, match=r"config.augment_on_device='yes' is unknown; use 'auto'"):
        validate_config(config, num_devices=8, check_data_files=False)


def _step_twice(config, mesh, batch):
    trainer = Trainer(config, mesh)
    state = trainer.initial_state()
    placed = {k: jax.device_put(v, NamedSharding(mesh, P("data"))) for k, v in batch.items()}
    losses = []
    with jax.set_mesh(mesh):
        for _ in range(2):
            state, metrics = trainer.train_step(state, placed)
            losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state["params"])


def test_eight_devices_equal_one_device_with_device_augmentation(mesh):
    config = _device_config()
    trainer = Trainer(config, mesh)
    batch = next(trainer.data.train_iterator(process_index=0, process_count=1))
    batch = {k: batch[k] for k in ("views", "label", "view_keys")}
    assert batch["views"].dtype == np.uint8
    one_device = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    losses_one, params_one = _step_twice(config, one_device, batch)
    losses_eight, params_eight = _step_twice(config, mesh, batch)
    np.testing.assert_allclose(losses_eight, losses_one, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(params_eight), jax.tree.leaves(params_one), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # And the device did augment: the finished views are not the uint8 ones.
    finished = data.finish_views(
        jnp.asarray(batch["views"]), jnp.asarray(batch["view_keys"]), trainer.view_configs
    )
    assert np.abs(np.asarray(finished) - batch["views"] / 255.0).max() > 0.1


def test_views_finished_on_eight_devices_equal_one_device(mesh):
    """Every preset (BYOL's solarization included): each device finishes its
    examples from their own keys, so the sharding changes nothing."""
    for preset in augment.PRESET_NAMES:
        batch = _batch(True, preset)
        configs = data.view_configs(preset, 2, {"blur_kernel_fraction": 0.2})

        def finish(views, keys, configs=configs):
            return data.finish_views(views, keys, configs)

        sharded = jax.jit(
            jax.shard_map(finish, mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P("data"))
        )
        placed = [
            jax.device_put(batch[k], NamedSharding(mesh, P("data"))) for k in ("views", "view_keys")
        ]
        with jax.set_mesh(mesh):
            on_eight = np.asarray(sharded(*placed))
        np.testing.assert_allclose(
            on_eight, finish(batch["views"], batch["view_keys"]), atol=1e-6, err_msg=preset
        )


def test_a_batch_without_keys_is_refused_by_a_device_augmenting_trainer(mesh):
    trainer = Trainer(_device_config(), mesh)
    batch = next(trainer.data.train_iterator(process_index=0, process_count=1))
    state = trainer.initial_state()
    with pytest.raises(ValueError, match="the batch has no 'view_keys'"), jax.set_mesh(mesh):
        trainer.train_step(state, {"views": batch["views"], "label": batch["label"]})


def test_resume_is_bitwise_exact_with_device_augmentation(tmp_path):
    config = _device_config()
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    train_and_evaluate(config, straight)
    train_and_evaluate(config, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", "4"))
    train_and_evaluate(config, resumed)
    run_a, run_b = restore_run(straight), restore_run(resumed)
    assert run_a.step == run_b.step == 4
    leaves_a = jax.tree.leaves(jax.device_get(run_a.state))
    leaves_b = jax.tree.leaves(jax.device_get(run_b.state))
    for a, b in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(a, b)
