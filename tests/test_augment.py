"""Tests of jaxcl.data.augment: presets, ranges, determinism, exact 1-channel handling."""

import dataclasses

import numpy as np
import pytest

from jaxcl.data import augment
from jaxcl.data._tf import tf


def _image(shape, seed=0):
    return tf.random.stateless_uniform(shape, seed=[seed, 7])


@pytest.mark.parametrize("name", augment.PRESET_NAMES)
@pytest.mark.parametrize(("in_shape", "size"), [((40, 40, 3), (32, 32)), ((28, 28, 1), (28, 28))])
def test_preset_shapes_dtypes_ranges(name, in_shape, size):
    views = augment.get_preset(name) * 2
    out = augment.augment_views(_image(in_shape), views[:2], seed=3, index=5, epoch=1, size=size)
    out = out.numpy()
    assert out.shape == (2, *size, in_shape[-1])
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not np.array_equal(out[0], out[1])


def test_simclr_imagenet_at_224():
    out = augment.augment_views(
        _image((256, 256, 3)), augment.get_preset("simclr_imagenet") * 2, 0, 0, 0, (224, 224)
    ).numpy()
    assert out.shape == (2, 224, 224, 3)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_preset_parameters():
    (simclr,) = augment.get_preset("simclr_imagenet")
    assert (simclr.brightness, simclr.contrast, simclr.saturation, simclr.hue) == pytest.approx(
        (0.8, 0.8, 0.8, 0.2)
    )
    assert (simclr.crop_scale, simclr.jitter_prob, simclr.grayscale_prob) == ((0.08, 1.0), 0.8, 0.2)
    assert simclr.blur_prob == 0.5 and simclr.crop_min_object_covered == 0.1
    (cifar,) = augment.get_preset("simclr_cifar")
    assert cifar.brightness == pytest.approx(0.4) and cifar.blur_prob == 0.0
    (moco,) = augment.get_preset("mocov2")
    assert moco.crop_scale == (0.2, 1.0)
    assert (moco.brightness, moco.contrast, moco.saturation, moco.hue) == pytest.approx(
        (0.4, 0.4, 0.4, 0.1)
    )
    byol_1, byol_2 = augment.get_preset("byol")
    assert (byol_1.blur_prob, byol_1.solarize_prob) == (1.0, 0.0)
    assert (byol_2.blur_prob, byol_2.solarize_prob) == (0.1, 0.2)
    (fashion,) = augment.get_preset("fashion_mnist", crop_scale=(0.5, 1), jitter_strength=0.25)
    assert fashion.crop_scale == (0.5, 1.0) and fashion.brightness == pytest.approx(0.2)
    assert augment.get_preset("simclr_cifar", blur_prob=0.3)[0].blur_prob == 0.3


def test_bad_names_raise():
    with pytest.raises(ValueError, match="unknown augmentation preset 'simclr'; valid: "):
        augment.get_preset("simclr")
    with pytest.raises(ValueError, match="unknown augmentation option"):
        augment.get_preset("byol", blur=1.0)
    with pytest.raises(ValueError, match="resize_method"):
        augment.AugmentConfig(resize_method="lanczos7")


def test_view_determinism():
    image, (config,) = _image((36, 36, 3)), augment.get_preset("simclr_imagenet")

    def view(seed, index, epoch, view):
        return augment.augment_view(
            image, augment.view_seed(seed, index, epoch, view), (32, 32), config
        ).numpy()

    np.testing.assert_array_equal(view(0, 1, 2, 0), view(0, 1, 2, 0))
    for other in [(1, 1, 2, 0), (0, 2, 2, 0), (0, 1, 3, 0), (0, 1, 2, 1)]:
        assert not np.array_equal(view(0, 1, 2, 0), view(*other))


def test_one_channel_equals_broadcast_rgb():
    """Skipping saturation, hue and grayscale on gray images is exact, as documented."""
    gray = _image((40, 40, 1))
    rgb = tf.tile(gray, [1, 1, 3])
    (config,) = augment.get_preset("simclr_imagenet")
    for index in range(12):
        seed = augment.view_seed(0, index, 0, 0)
        one = augment.augment_view(gray, seed, (32, 32), config).numpy()
        three = augment.augment_view(rgb, seed, (32, 32), config).numpy()
        np.testing.assert_allclose(three, np.repeat(one, 3, axis=-1), atol=1e-3)


def test_brightness_factor_range():
    image = tf.fill([8, 8, 3], 0.5)
    factors = [
        float(augment.color_jitter(image, [i, 0], 0.8, 0.0, 0.0, 0.0)[0, 0, 0]) / 0.5
        for i in range(200)
    ]
    assert 0.2 <= min(factors) < 0.3 and 1.7 < max(factors) <= 1.8


def test_flip_solarize_grayscale_blur():
    image = _image((16, 16, 3))
    np.testing.assert_array_equal(augment.random_flip(image, [0, 0], 1.0), image[:, ::-1])
    np.testing.assert_array_equal(augment.random_flip(image, [0, 0], 0.0), image)
    solarized = augment.solarize(image).numpy()
    np.testing.assert_allclose(solarized, np.where(image < 0.5, image, 1 - image))
    gray = augment.to_grayscale(image).numpy()
    np.testing.assert_allclose(gray[..., 0], gray[..., 2])
    assert augment.blur_kernel_size(224) == 23 and augment.blur_kernel_size(32) == 3
    blurred = augment.gaussian_blur(image, [0, 0], 5).numpy()
    assert blurred.shape == (16, 16, 3) and blurred.std() < image.numpy().std()
    constant = tf.fill([16, 16, 1], 0.3)  # Reflect padding keeps a flat image flat.
    np.testing.assert_allclose(augment.gaussian_blur(constant, [1, 2], 5), constant, atol=1e-6)


def test_eval_preprocessing():
    image = _image((256, 320, 3))
    out = augment.preprocess_eval(image, (224, 224), crop_fraction=0.875)
    assert out.shape == (224, 224, 3)  # 0.875 * 256 = 224: the crop is not resized.
    np.testing.assert_allclose(out, image[16:240, 48:272])
    small = _image((32, 32, 3))
    np.testing.assert_array_equal(augment.preprocess_eval(small, (32, 32)), small)
    assert augment.preprocess_eval(small, (64, 64)).shape == (64, 64, 3)


def test_no_crop_config_only_resizes():
    config = dataclasses.replace(
        augment.AugmentConfig(), crop=False, flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0
    )
    image = _image((32, 32, 3))
    out = augment.augment_view(image, [0, 0], (32, 32), config)
    np.testing.assert_allclose(out, image, atol=1e-6)
