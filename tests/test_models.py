"""Tests of jaxcl.models: ResNet encoders, heads, registry and the functional API."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcl import models
from jaxcl.models import functional


@pytest.fixture(autouse=True)
def fast_parameter_init():
    """Uses the non-partitionable threefry PRNG for this module's tests only.

    JAX's default (partitionable) threefry compiles slowly on CPU, about a second for
    every new parameter shape, which dominated these tests. The models do not depend on
    the PRNG implementation; the context manager restores the default afterwards.
    """
    with jax.threefry_partitionable(False):
        yield


def param_count(module) -> int:
    """Number of trainable parameters (BatchNorm scale/bias included, running stats not)."""
    return sum(leaf.size for leaf in jax.tree.leaves(nnx.state(module, nnx.Param)))


def abstract(name, **options):
    """Builds a model as shapes only, so that large ResNets cost nothing to inspect."""
    return nnx.eval_shape(lambda: models.create(name, rngs=nnx.Rngs(0), **options))


def jitted_forward(model, inputs, *, train=True):
    """Runs a model through the jitted functional API: one compile, not one per op."""
    graphdef, params, batch_stats = functional.split(model)
    forward = jax.jit(functional.apply, static_argnames="train")
    return forward(graphdef, params, batch_stats, inputs, train=train)[0]


def random_images(shape, seed=0):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


# --- Architecture ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # torchvision totals minus the fc layer (512*1000+1000 or 2048*1000+1000).
        ("resnet18", 11_176_512),
        ("resnet34", 21_284_672),
        ("resnet50", 23_508_032),
        ("resnet101", 42_500_160),
        ("resnet152", 58_143_808),
    ],
)
def test_param_counts_match_torchvision_without_fc(name, expected):
    model = abstract(name)
    assert param_count(model) == expected
    assert model.num_features == (512 if name in ("resnet18", "resnet34") else 2048)


@pytest.mark.parametrize(("width", "millions"), [(2, 94), (4, 375)])
def test_width_multiplier_matches_simclr_model_sizes(width, millions):
    # SimCLR (Table 1 / Figure 1) reports 94M and 375M parameters for ResNet-50 (2x)
    # and (4x): the multiplier scales every layer, stem included.
    model = abstract("resnet50", width_multiplier=width)
    assert round(param_count(model) / 1e6) == millions
    assert model.num_features == 2048 * width


def feature_shape(name, images_shape, **options):
    """Output shape of a forward pass, computed from shapes alone (nothing allocated)."""

    def forward():
        return models.create(name, rngs=nnx.Rngs(0), **options)(jnp.zeros(images_shape))

    return nnx.eval_shape(forward)


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("resnet18", "imagenet"),
        ("resnet18", "small"),
        ("resnet34", "small"),
        ("resnet50", "imagenet"),
    ],
)
def test_output_shapes_of_built_models(name, stem):
    # Built for real and run (jitted) on 32x32 images; width 0.25 keeps the real depth
    # and block structure at a fraction of the cost.
    model = models.create(name, stem=stem, width_multiplier=0.25, rngs=nnx.Rngs(0))
    graphdef, params, batch_stats = functional.split(model)
    forward = jax.jit(functional.apply, static_argnames="train")
    features, _ = forward(graphdef, params, batch_stats, random_images((2, 32, 32, 3)), train=True)
    expected = 128 if name != "resnet50" else 512
    assert model.num_features == expected
    assert features.shape == (2, expected)
    assert features.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(features)))


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
@pytest.mark.parametrize("stem", ["imagenet", "small"])
def test_output_shapes_of_every_depth_and_stem(name, stem):
    # Shapes only: traces the full-width model without allocating or compiling it.
    num_features = 512 if name in ("resnet18", "resnet34") else 2048
    shape = feature_shape(name, (2, 32, 32, 3), stem=stem)
    assert (shape.shape, shape.dtype) == ((2, num_features), jnp.float32)


def test_stems():
    imagenet = abstract("resnet18")
    small = abstract("resnet18", stem="small", in_channels=1)
    assert imagenet.stem_conv.kernel.shape == (7, 7, 3, 64)
    assert imagenet.stem_conv.strides == (2, 2)
    assert imagenet.stem_conv.padding == ((3, 3), (3, 3))
    assert small.stem_conv.kernel.shape == (3, 3, 1, 64)
    assert small.stem_conv.strides == (1, 1)


@pytest.mark.parametrize(
    ("stem", "size", "final"),
    [
        # Imagenet stem: /4 (conv stride 2, max-pool stride 2), then /2 per later stage.
        ("imagenet", 64, 8),
        ("imagenet", 28, 4),  # 28 -> 14 -> 7 -> 4, with torchvision's padding.
        # Small stem: no downsampling before the stages.
        ("small", 32, 16),
        ("small", 28, 14),
    ],
)
def test_spatial_downsampling_per_stem(stem, size, final):
    def final_map():
        model = models.create("resnet_tiny", stem=stem, rngs=nnx.Rngs(0))
        x = nnx.relu(model.stem_bn(model.stem_conv(jnp.zeros((1, size, size, 3)))))
        if stem == "imagenet":
            x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage in model.stages():
            x = stage(x)
        return x

    assert nnx.eval_shape(final_map).shape == (1, final, final, 16)


@pytest.mark.parametrize("name", ["resnet18", "resnet10"])
def test_small_stem_quarter_width_for_fashion_mnist(name):
    model = models.create(
        name, stem="small", width_multiplier=0.25, in_channels=1, rngs=nnx.Rngs(0)
    )
    assert model.stage_widths == (16, 32, 64, 128)
    assert model.num_features == 128
    assert model.stem == "small"
    images = random_images((3, 28, 28, 1))
    features = jitted_forward(model, images)
    assert features.shape == (3, 128)
    # Global average pooling of ReLU outputs: non-negative, and not constant.
    assert np.all(np.asarray(features) >= 0.0) and np.std(np.asarray(features)) > 0.0
    # The jitted functional forward is the module's own forward (same batch statistics).
    np.testing.assert_allclose(features, model(images), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="1 channels"):
        model(random_images((3, 28, 28, 3)))


def test_resnet10_has_one_block_per_stage():
    def small(name):
        return abstract(name, stem="small", width_multiplier=0.25, in_channels=1)

    resnet10, resnet18 = small("resnet10"), small("resnet18")
    for stage in resnet10.stages():
        assert hasattr(stage, "block0") and not hasattr(stage, "block1")
    for stage in resnet18.stages():
        assert hasattr(stage, "block1") and not hasattr(stage, "block2")
    # Counted by hand: the 3x3 stem conv (1 -> 16, no bias) and its BatchNorm (scale,
    # bias); per stage one BasicBlock of two 3x3 convs and two BatchNorms, plus a 1x1
    # projection shortcut with its BatchNorm where the stage downsamples.
    stem = 9 * 1 * 16 + 2 * 16
    stages = 0
    for cin, width in [(16, 16), (16, 32), (32, 64), (64, 128)]:
        stages += 9 * cin * width + 9 * width * width + 2 * 2 * width
        if cin != width:
            stages += cin * width + 2 * width
    assert param_count(resnet10) == stem + stages == 307_248
    # ResNet-18 adds one identity BasicBlock per stage.
    extra = sum(2 * 9 * w * w + 2 * 2 * w for w in (16, 32, 64, 128))
    assert param_count(resnet18) - param_count(resnet10) == extra


def test_bottleneck_is_torchvision_v1_5():
    model = abstract("resnet50")
    first = model.layer2.block0
    # Stride on the 3x3 conv, 1x1 projection shortcut with the same stride.
    assert first.conv1.strides == (1, 1) and first.conv1.kernel.shape[:2] == (1, 1)
    assert first.conv2.strides == (2, 2) and first.conv2.kernel.shape[:2] == (3, 3)
    assert first.shortcut_conv.strides == (2, 2)
    assert first.shortcut_conv.kernel.shape == (1, 1, 256, 512)
    # Projection in layer1.block0 too (64 -> 256 channels), identity afterwards.
    assert model.layer1.block0.shortcut_conv.kernel.shape == (1, 1, 64, 256)
    assert model.layer1.block1.shortcut_conv is None
    # BasicBlock: no projection where the shape is unchanged.
    resnet18 = abstract("resnet18")
    assert resnet18.layer1.block0.shortcut_conv is None
    assert resnet18.layer2.block0.shortcut_conv.kernel.shape == (1, 1, 64, 128)


def test_convs_have_no_bias_and_batch_norm_hyperparameters():
    model = abstract("resnet50")
    convs = [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.Conv)]
    norms = [m for _, m in nnx.iter_modules(model) if isinstance(m, nnx.BatchNorm)]
    assert len(convs) == 53 and len(norms) == 53
    assert all(conv.bias is None for conv in convs)
    assert all(norm.momentum == 0.9 and norm.epsilon == 1e-5 for norm in norms)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_batch_norm_matches_flax_batch_norm(dtype):
    from jaxcl.models.layers import BatchNorm

    # Inputs in the compute dtype, as the convolutions before every BatchNorm give them.
    x = (random_images((6, 4, 4, 5)) * 3.0 + 1.0).astype(dtype)
    ours = BatchNorm(5, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=nnx.Rngs(0))
    flax_norm = nnx.BatchNorm(5, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=nnx.Rngs(0))
    for norm in (ours, flax_norm):
        norm.scale.set_value(jnp.linspace(0.5, 2.0, 5))
        norm.bias.set_value(jnp.linspace(-1.0, 1.0, 5))
    tolerance = 1e-5 if dtype == jnp.float32 else 2e-2
    for train in (True, False):
        expected, actual = flax_norm(x, use_running_average=not train), ours(x, not train)
        assert actual.dtype == expected.dtype == dtype
        np.testing.assert_allclose(
            actual.astype(jnp.float32), expected.astype(jnp.float32), rtol=tolerance, atol=tolerance
        )
        for name in ("mean", "var"):
            np.testing.assert_allclose(
                getattr(ours, name)[...], getattr(flax_norm, name)[...], rtol=1e-5, atol=1e-6
            )
            assert getattr(ours, name)[...].dtype == jnp.float32


def test_running_statistics_use_momentum_0_9():
    model = models.create("resnet_tiny", rngs=nnx.Rngs(0))
    graphdef, params, batch_stats = functional.split(model)
    images = random_images((8, 8, 8, 3))
    _, new_stats = functional.apply(graphdef, params, batch_stats, images, train=True)
    stem_output = model.stem_conv(images)
    batch_mean = jnp.mean(stem_output, axis=(0, 1, 2))
    batch_var = jnp.var(stem_output, axis=(0, 1, 2))
    np.testing.assert_allclose(new_stats["stem_bn"]["mean"], 0.1 * batch_mean, atol=1e-6)
    np.testing.assert_allclose(new_stats["stem_bn"]["var"], 0.9 + 0.1 * batch_var, atol=1e-5)


# --- zero_init_residual -----------------------------------------------------------


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_zero_init_residual_makes_blocks_their_shortcut(block):
    model = models.ResNet(
        block,
        (2, 1),
        base_widths=(4, 8),
        stem="small",
        zero_init_residual=True,
        rngs=nnx.Rngs(0),
    )
    x = nnx.relu(random_images((2, 8, 8, model.stem_conv.out_features)))
    for stage in model.stages():
        for residual_block in stage.blocks():
            assert bool(jnp.all(residual_block.last_batch_norm.scale[...] == 0))
            if residual_block.shortcut_conv is None:
                shortcut = x
            else:
                shortcut = residual_block.shortcut_bn(residual_block.shortcut_conv(x))
            y = residual_block(x)
            np.testing.assert_allclose(y, nnx.relu(shortcut), atol=1e-6)
            x = y
    default = models.ResNet(block, (1,), base_widths=(4,), stem="small", rngs=nnx.Rngs(0))
    assert bool(jnp.all(default.layer1.block0.last_batch_norm.scale[...] == 1))


# --- Train and eval modes -----------------------------------------------------------


def test_train_and_eval_modes():
    model = models.create("resnet_tiny", rngs=nnx.Rngs(0))
    graphdef, params, batch_stats = functional.split(model)
    images = random_images((8, 8, 8, 3))
    train_out, stats = functional.apply(graphdef, params, batch_stats, images, train=True)
    assert jax.tree.structure(stats) == jax.tree.structure(batch_stats)
    assert not np.allclose(stats["stem_bn"]["mean"], batch_stats["stem_bn"]["mean"])

    eval_out, same_stats = functional.apply(graphdef, params, stats, images, train=False)
    assert same_stats is stats  # Eval leaves the running statistics alone.
    assert not np.allclose(train_out, eval_out, atol=1e-3)
    # Eval normalizes with running statistics: each example is independent of the
    # rest of the batch, and the result depends on the statistics passed in.
    alone, _ = functional.apply(graphdef, params, stats, images[:1], train=False)
    np.testing.assert_allclose(alone, eval_out[:1], rtol=1e-5, atol=1e-6)
    train_alone, _ = functional.apply(graphdef, params, stats, images[:2], train=True)
    assert not np.allclose(train_alone, train_out[:2], atol=1e-3)
    other, _ = functional.apply(graphdef, params, batch_stats, images, train=False)
    assert not np.allclose(other, eval_out, atol=1e-3)

    # The stateful NNX API agrees with the functional one.
    stateful = functional.merge(graphdef, params, stats)
    stateful.eval()
    np.testing.assert_allclose(stateful(images), eval_out, rtol=1e-5, atol=1e-6)
    stateful.train()
    np.testing.assert_allclose(stateful(images), train_out, rtol=1e-5, atol=1e-6)


# --- Functional API ---------------------------------------------------------------


def test_split_returns_plain_dicts_with_string_keys():
    model = models.create("resnet_tiny", rngs=nnx.Rngs(0))
    graphdef, params, batch_stats = functional.split(model)
    for tree in (params, batch_stats):
        assert type(tree) is dict
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            assert all(isinstance(key, jax.tree_util.DictKey) for key in path)
            assert all(isinstance(key.key, str) for key in path)
            assert isinstance(leaf, jax.Array) and leaf.dtype == jnp.float32
    assert set(params["stem_bn"]) == {"scale", "bias"}
    assert set(batch_stats["stem_bn"]) == {"mean", "var"}
    assert sum(x.size for x in jax.tree.leaves(params)) == param_count(model)
    assert jax.tree.leaves(graphdef) == []


def test_split_rejects_state_it_cannot_carry():
    class WithDropout(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(2, 2, rngs=rngs)
            self.dropout = nnx.Dropout(0.5, rngs=rngs)

    with pytest.raises(ValueError, match="dropout"):
        functional.split(WithDropout(nnx.Rngs(0)))


def test_split_state_round_trips_through_orbax(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    model = models.create("resnet_tiny", rngs=nnx.Rngs(0))
    _, params, batch_stats = functional.split(model)
    state = {"params": params, "batch_stats": batch_stats}
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "state", state)
        checkpointer.wait_until_finished()
        restored = checkpointer.restore(tmp_path / "state", jax.tree.map(jnp.zeros_like, state))
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    jax.tree.map(np.testing.assert_array_equal, restored, state)


def test_apply_is_differentiable_and_jits_once():
    model = models.create("resnet_tiny", rngs=nnx.Rngs(0))
    graphdef, params, batch_stats = functional.split(model)
    traces = 0

    def loss_fn(params, batch_stats, images):
        nonlocal traces
        traces += 1  # Runs only while tracing.
        features, new_stats = functional.apply(graphdef, params, batch_stats, images, train=True)
        return jnp.mean(features**2), new_stats

    step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    images = random_images((4, 8, 8, 3))
    (loss, stats), grads = step(params, batch_stats, images)
    (_, stats), grads = step(params, stats, random_images((4, 8, 8, 3), seed=1))
    assert traces == 1
    assert jnp.isfinite(loss)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    grad_norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))
    assert jnp.isfinite(grad_norm) and grad_norm > 0


def test_apply_with_graphdef_as_jit_argument_traces_once():
    traces = 0

    def forward(graphdef, params, batch_stats, images):
        nonlocal traces
        traces += 1
        return functional.apply(graphdef, params, batch_stats, images, train=False)[0]

    forward = jax.jit(forward)
    graphdef, params, batch_stats = functional.split(models.create("resnet_tiny", rngs=nnx.Rngs(0)))
    images = random_images((2, 8, 8, 3))
    forward(graphdef, params, batch_stats, images)
    forward(graphdef, params, batch_stats, images + 1)
    # A second, equal model (other weights) shares the compiled program.
    graphdef2, params2, stats2 = functional.split(models.create("resnet_tiny", rngs=nnx.Rngs(1)))
    forward(graphdef2, params2, stats2, images)
    assert traces == 1


# --- Global BatchNorm -------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet_tiny", "mocov3_projector"])
def test_global_batch_norm_under_shard_map_equals_full_batch(mesh, name):
    options = {"in_features": 6, "hidden_features": 12, "out_features": 4}
    options = options if name == "mocov3_projector" else {}
    shape = (16, 6) if name == "mocov3_projector" else (16, 8, 8, 3)
    inputs = random_images(shape)

    local = models.create(name, rngs=nnx.Rngs(0), **options)
    graphdef, params, batch_stats = functional.split(local)
    synced = models.create(name, bn_axis_name="data", rngs=nnx.Rngs(0), **options)
    synced_graphdef, synced_params, _ = functional.split(synced)
    jax.tree.map(np.testing.assert_array_equal, synced_params, params)

    def loss_fn(graphdef, params, batch_stats, inputs):
        outputs, stats = functional.apply(graphdef, params, batch_stats, inputs, train=True)
        return jnp.sum(outputs**2 * jnp.arange(outputs.shape[-1])), (outputs, stats)

    full_batch_grad = jax.jit(jax.grad(loss_fn, argnums=1, has_aux=True), static_argnums=0)
    expected_grads, (expected_out, expected_stats) = full_batch_grad(
        graphdef, params, batch_stats, inputs
    )

    def per_device(params, batch_stats, inputs):
        grads, (outputs, stats) = jax.grad(loss_fn, argnums=1, has_aux=True)(
            synced_graphdef, params, batch_stats, inputs
        )
        # The params are replicated (invariant over 'data'), so the transpose of their
        # implicit broadcast already sums the gradient over devices; the pmean inside
        # BatchNorm routes the cross-device terms. No explicit psum here.
        return outputs, stats, grads

    sharded = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(P(), P(), P("data")),
        out_specs=(P("data"), P(), P()),
    )
    with jax.set_mesh(mesh):
        replicated = NamedSharding(mesh, P())
        outputs, stats, grads = jax.jit(sharded)(
            jax.device_put(params, replicated),
            jax.device_put(batch_stats, replicated),
            jax.device_put(inputs, NamedSharding(mesh, P("data"))),
        )
    np.testing.assert_allclose(outputs, expected_out, atol=1e-5)
    jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-5), stats, expected_stats)
    jax.tree.map(
        functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-4), grads, expected_grads
    )

    # Without the axis name each device normalizes its own 2 examples: different.
    def per_device_local(params, batch_stats, inputs):
        return functional.apply(graphdef, params, batch_stats, inputs, train=True)[0]

    with jax.set_mesh(mesh):
        local_outputs = jax.jit(
            jax.shard_map(
                per_device_local, mesh=mesh, in_specs=(P(), P(), P("data")), out_specs=P("data")
            )
        )(
            jax.device_put(params, NamedSharding(mesh, P())),
            jax.device_put(batch_stats, NamedSharding(mesh, P())),
            jax.device_put(inputs, NamedSharding(mesh, P("data"))),
        )
    assert not np.allclose(local_outputs, expected_out, atol=1e-3)


# --- Compute dtype ----------------------------------------------------------------


def test_bfloat16_compute_keeps_float32_params_stats_and_features():
    images = random_images((4, 8, 8, 3))
    reference = models.create("resnet_tiny", rngs=nnx.Rngs(0))
    model = models.create("resnet_tiny", dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    graphdef, params, batch_stats = functional.split(model)
    assert {leaf.dtype for leaf in jax.tree.leaves((params, batch_stats))} == {
        np.dtype(jnp.float32)
    }
    # The same float32 parameters through both graphs: only the compute dtype differs.
    reference_graphdef, reference_params, reference_stats = functional.split(reference)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(reference_params), strict=True):
        np.testing.assert_array_equal(got, want)
    features, stats = jax.jit(functools.partial(functional.apply, graphdef, train=True))(
        params, batch_stats, images
    )
    assert features.dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree.leaves(stats)} == {np.dtype(jnp.float32)}
    expected, _ = jax.jit(functools.partial(functional.apply, reference_graphdef, train=True))(
        reference_params, reference_stats, images
    )
    features, expected = np.asarray(features, np.float64), np.asarray(expected, np.float64)

    # bfloat16 keeps 8 significant bits, so each rounding has a relative error up to
    # 2^-8 (0.0039). resnet_tiny rounds activations after each of its 5 convs, BN and
    # residual adds; measured here (4 images, seed 0) the feature error is 0.0034, about
    # one rounding's worth (0.0028-0.0034 over seeds 0-3: independent roundings partly
    # cancel, and BatchNorm renormalises). The bound is 3x the measured value, still
    # far below an error that would change what the features say. Float32 noise (this
    # jitted graph against the eager module) is 1.7e-7, so a bf16 error above 1e-4
    # shows the convs really ran in bfloat16, not silently in float32.
    relative_error = np.linalg.norm(features - expected) / np.linalg.norm(expected)
    assert 1e-4 < relative_error < 0.01, relative_error
    float32_noise = np.linalg.norm(np.asarray(reference(images)) - expected)
    assert float32_noise / np.linalg.norm(expected) < 1e-5
    # Per example the direction (what a cosine-similarity loss sees) is kept: measured
    # 1 - cos is at most 8.1e-6; the bound is about 3x that.
    cosine = np.sum(features * expected, axis=1) / (
        np.linalg.norm(features, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert np.all(1.0 - cosine < 3e-5), 1.0 - cosine

    head = models.create(
        "simclr_v2_projection", in_features=16, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)
    )
    assert head(features).dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree.leaves(nnx.state(head))} == {np.dtype(jnp.float32)}


# --- Heads ------------------------------------------------------------------------


def test_simclr_v1_projection():
    head = models.create("simclr_v1_projection", in_features=32, rngs=nnx.Rngs(0))
    assert param_count(head) == 32 * 32 + 32 + 32 * 128 + 128
    assert head(random_images((5, 32))).shape == (5, 128)
    mocov2 = abstract("mocov2_projection", in_features=2048)
    assert mocov2.dense1.kernel.shape == (2048, 2048)
    assert mocov2.dense2.kernel.shape == (2048, 128)


def test_simclr_v2_projection_follows_official_code():
    head = models.create("simclr_v2_projection", in_features=32, rngs=nnx.Rngs(0))
    assert head.num_layers == 3
    assert [head.dense0.kernel.shape, head.dense1.kernel.shape, head.dense2.kernel.shape] == [
        (32, 32),
        (32, 32),
        (32, 128),
    ]
    assert all(getattr(head, f"dense{i}").bias is None for i in range(3))
    assert head.bn0.bias is not None and head.bn1.bias is not None
    # Last layer: BatchNorm with a scale but no bias, and no ReLU (outputs can be < 0).
    assert head.bn2.scale is not None and head.bn2.bias is None
    out = head(random_images((16, 32)))
    assert out.shape == (16, 128) and bool(jnp.any(out < 0))
    np.testing.assert_allclose(jnp.mean(out, axis=0), 0.0, atol=1e-5)


def test_mocov3_projector_and_predictor():
    projector = models.create(
        "mocov3_projector", in_features=16, hidden_features=32, rngs=nnx.Rngs(0)
    )
    assert projector.bn2.scale is None and projector.bn2.bias is None
    assert projector.dense1.bias is None and projector.dense2.bias is None
    projections = projector(random_images((8, 16)))
    assert projections.shape == (8, 256)

    predictor = abstract("mocov3_predictor")
    assert predictor.dense1.kernel.shape == (256, 4096)
    assert predictor.dense2.kernel.shape == (4096, 256)
    assert param_count(predictor) == 256 * 4096 + 2 * 4096 + 4096 * 256
    small = models.create("mocov3_predictor", hidden_features=32, rngs=nnx.Rngs(0))
    assert small(projections).shape == (8, 256)


def test_linear_classifier():
    head = models.create("linear_classifier", in_features=16, num_classes=10, rngs=nnx.Rngs(0))
    assert head(random_images((3, 16))).shape == (3, 10)
    graphdef, params, batch_stats = functional.split(head)
    assert batch_stats == {}
    logits, stats = functional.apply(graphdef, params, batch_stats, jnp.ones((3, 16)), train=True)
    assert logits.shape == (3, 10) and stats == {}
    assert float(jnp.std(params["dense"]["kernel"])) < 0.02


def test_heads_accept_bn_axis_name():
    for name in ["simclr_v1_projection", "simclr_v2_projection", "mocov3_projector"]:
        head = abstract(name, in_features=8, bn_axis_name="data")
        norms = [m for _, m in nnx.iter_modules(head) if isinstance(m, nnx.BatchNorm)]
        assert all(norm.axis_name == "data" for norm in norms)
    abstract("mocov3_predictor", bn_axis_name="data")
    abstract("linear_classifier", in_features=8, num_classes=2, bn_axis_name="data")


# --- Registry ---------------------------------------------------------------------


def test_registry():
    names = models.available()
    for name in [
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "resnet10",
        "resnet_tiny",
        "simclr_v1_projection",
        "simclr_v2_projection",
        "mocov3_predictor",
        "linear_classifier",
    ]:
        assert name in names
    encoders = {"resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"}
    vits = {"vit_tiny", "vit_small", "vit_base"}
    assert set(models.ENCODER_NAMES) == encoders | vits | {"resnet_tiny"}
    assert list(models.ENCODER_NAMES) == sorted(models.ENCODER_NAMES)
    assert set(models.ENCODER_NAMES) <= set(names)
    for head in ["linear_classifier", "simclr_v2_projection", "mocov3_predictor"]:
        assert head not in models.ENCODER_NAMES
    # The CPU presets are gone: their sizes are options of the standard depths.
    for removed in ["resnet18_cpu", "resnet10_cpu"]:
        assert removed not in names
    with pytest.raises(ValueError, match=r"'resnet19'.*resnet152, resnet18, resnet34"):
        models.create("resnet19", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="stem"):
        models.create("resnet_tiny", stem="cifar", rngs=nnx.Rngs(0))


def _small_vit(drop_path_rate):
    return models.create(
        "vit_tiny", rngs=nnx.Rngs(0), width=32, depth=4, num_heads=2, patch_size=4,
        in_channels=1, drop_path_rate=drop_path_rate,
    )  # fmt: skip


def test_drop_path_drops_whole_branches_per_example_and_only_in_training():
    images = jax.random.normal(jax.random.key(0), (64, 8, 8, 1))
    variables = functional.split(_small_vit(0.5))
    plain = functional.split(_small_vit(0.0))
    keys = jax.random.split(jax.random.key(1), 64)
    evaluated, _ = functional.apply(*variables, images, train=False, rng=keys)
    reference, _ = functional.apply(*plain, images, train=False)
    np.testing.assert_allclose(evaluated, reference, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"drop_path_rate=0\.5 needs a PRNG key"):
        functional.apply(*variables, images, train=True)

    # The last block drops at the full rate 0.5: each example's branch is kept
    # (scaled by 1/keep) or zeroed, as its key says.
    block = _small_vit(0.5).blocks()[-1]
    assert block.drop_path_rate == 0.5
    branch = jnp.ones((64, 3, 5))
    dropped = block._drop_path(branch, keys, 0)
    per_example = np.asarray(dropped[:, 0, 0])
    assert set(np.unique(per_example)) == {0.0, 2.0}
    assert np.all(np.asarray(dropped) == per_example[:, None, None])
    assert 20 <= np.sum(per_example == 0.0) <= 44  # Binomial(64, 0.5): 4 sigma
    # The attention and MLP branches draw apart.
    other_branch = np.asarray(block._drop_path(branch, keys, 1))[:, 0, 0]
    assert not np.array_equal(other_branch == 0.0, per_example == 0.0)

    trained, _ = functional.apply(*variables, images, train=True, rng=keys)
    plain_trained, _ = functional.apply(*plain, images, train=True)
    assert np.abs(np.asarray(trained) - np.asarray(plain_trained)).max() > 1e-2


def test_drop_path_of_an_example_does_not_depend_on_the_rest_of_its_batch():
    # What makes 8 devices equal 1: halves of the batch with their own keys
    # give the rows of the whole batch.
    images = jax.random.normal(jax.random.key(0), (16, 8, 8, 1))
    keys = jax.random.split(jax.random.key(3), 16)
    variables = functional.split(_small_vit(0.3))
    whole, _ = functional.apply(*variables, images, train=True, rng=keys)
    halves = [
        functional.apply(*variables, images[part], train=True, rng=keys[part])[0]
        for part in (slice(0, 8), slice(8, 16))
    ]
    np.testing.assert_allclose(np.concatenate(halves), whole, rtol=1e-5, atol=1e-6)
    once, _ = functional.apply(*variables, images, train=True, rng=jax.random.key(3))
    again, _ = functional.apply(*variables, images, train=True, rng=jax.random.key(3))
    np.testing.assert_array_equal(once, again)  # one key: split over the batch
