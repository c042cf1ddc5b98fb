"""Shared test set-up: eight fake CPU devices, jaxcl's XLA:CPU defaults, shared fixtures.

The device count must be set before JAX initialises its backends, which is why
this happens at import time of the conftest, before any test module imports jax.
"""

import contextlib
import logging
import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
# The suite compiles hundreds of tiny programs and runs each a few times; most
# of XLA:CPU's compile time is LLVM's optimisation, which buys nothing at these
# sizes (the tiny MoCo v3 train step: 11.2 s to compile at the default level,
# 4.8 s at 0). Tests compare programs compiled alike, so their values and
# tolerances hold; the CLIs and the library keep XLA's default level.
if "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from jaxcl import xla_defaults

# The flags the CLIs set, so tests run the convolution emitters real runs do.
xla_defaults.apply_cpu_defaults()
# And their persistent compilation cache, in a directory of this test session
# (shared by the xdist workers and the processes tests start): many tests
# build the same tiny networks, and each Trainer would compile them again.
os.environ.setdefault(
    "JAXCL_TEST_COMPILATION_CACHE", tempfile.mkdtemp(prefix="jaxcl-test-xla-cache-")
)
xla_defaults.enable_compilation_cache(os.environ["JAXCL_TEST_COMPILATION_CACHE"])

import jax  # noqa: E402
import pytest  # noqa: E402

from jaxcl.config import default_config  # noqa: E402

NUM_FAKE_DEVICES = 8


@pytest.fixture(scope="session")
def mesh():
    """A one-axis data-parallel mesh named 'data' over the eight fake CPU devices."""
    devices = jax.devices()
    assert len(devices) == NUM_FAKE_DEVICES, f"expected 8 fake CPU devices, got {len(devices)}"
    return jax.make_mesh((NUM_FAKE_DEVICES,), ("data",))


def make_tiny_config(method_name="simclr", **overrides):
    """A tiny synthetic-data config for a few steps; dotted keys reach sections."""
    config = default_config()
    config.method = method_name
    config.model = "resnet_tiny"
    config.model_options = {"zero_init_residual": False}
    config.dataset = "synthetic"
    config.dataset_options = {
        "image_shape": (16, 16, 1),
        "num_classes": 4,
        "num_examples": {"train": 64, "test": 32},
    }
    config.image_size = 16
    config.augmentation = "fashion_mnist"
    config.global_batch_size = 16
    config.num_steps = 4
    config.warmup_epochs = 0.0
    config.learning_rate = 0.5
    config.projection_dim = 8
    config.mocov3.predictor_hidden_dim = 16
    config.mocov2.queue_size = 40  # not a multiple of the batch: the ring buffer wraps
    config.log_every_steps = 1
    config.checkpoint_every_steps = 2
    config.max_checkpoints_to_keep = 5
    config.progress_bar = False
    config.eval.run_at_end = False
    for key, value in overrides.items():
        *sections, name = key.split(".")
        target = config
        for section in sections:
            target = target[section]
        target[name] = value
    return config


@pytest.fixture
def tiny_config():
    """``make_tiny_config``: a factory of tiny synthetic-data configs."""
    return make_tiny_config


class _CompileCounter(logging.Handler):
    def __init__(self, name):
        super().__init__(logging.WARNING)
        self.name, self.count = name, 0

    def emit(self, record):
        if record.getMessage().startswith(f"Compiling jit({self.name})"):
            self.count += 1


@contextlib.contextmanager
def count_compiles(name):
    """Counts compilations of the jitted function ``name`` (JAX's public compile log)."""
    counter = _CompileCounter(name)
    logger = logging.getLogger("jax")
    logger.addHandler(counter)
    try:
        with jax.log_compiles(True):
            yield counter
    finally:
        logger.removeHandler(counter)


# The fast tier, ``pytest -m "not slow"``, leaves out these tests (each took more
# than ~5 s on the 2-core machine); CI runs everything. Tests marked slow in
# their own module stay slow.
SLOW_TESTS = (
    "test_augment.py::test_preset_shapes_dtypes_ranges",
    "test_augmented_probe.py::test_a_head_resumed_after_a_crash_ends_where_an_uninterrupted_one_does",
    "test_augmented_probe.py::test_eight_devices_train_the_same_head_as_one",
    "test_augmented_probe.py::test_evaluation_reports_the_protocol",
    "test_bench.py::test_first_step_benchmark_runs_the_training_loop_without_host_syncs",
    "test_bench.py::test_gpu_benchmark_runs_at_toy_sizes_on_cpu",
    "test_device_augment.py::test_eight_devices_equal_one_device_with_device_augmentation",
    "test_device_augment.py::test_resume_is_bitwise_exact_with_device_augmentation",
    "test_device_augment.py::test_device_views_follow_the_distribution_of_the_tf_data_preset",
    "test_blockwise.py::TestEqualsDense::test_bfloat16_inputs",
    "test_blockwise.py::TestEqualsDense::test_sizes_and_blocks",
    "test_blockwise.py::TestEqualsDense::test_temperatures",
    "test_blockwise.py::TestNumerics::test_extreme_inputs_are_finite",
    "test_blockwise.py::test_memory_is_linear_in_the_batch",
    "test_blockwise.py::test_sharded_equals_single_device",
    "test_data.py::test_fashion_mnist_builder",
    "test_evaluation.py::test_evaluation_on_eight_devices_matches_one_device",
    "test_evaluation.py::test_knn_monitor_scores_the_eval_subsets",
    "test_evaluation.py::test_training_crops_and_evaluation_images_have_their_own_sides",
    "test_evaluation.py::test_linear_probe_on_eight_devices_matches_one_device",
    "test_evaluation.py::test_stream_features_memory_grows_with_features_not_pixels",
    "test_export.py::test_exported_encoder_reproduces_load_encoder",
    "test_export.py::test_load_encoder_needs_no_dataset",
    "test_gcs_workdir.py::test_gs_workdir_holds_every_output_and_resumes",
    "test_image_folder.py::test_image_folder_trains_and_evaluates",
    "test_image_folder.py::test_unlabelled_folder_pretrains_but_refuses_the_probes",
    "test_losses.py::TestAgainstNumpy::test_sup_con_anchor_without_positive_gives_no_nan",
    "test_losses.py::TestNumerics::test_zero_embeddings_are_finite",
    "test_losses.py::TestProperties::test_finite_for_large_and_constant_inputs",
    "test_losses.py::TestProperties::test_permutation_and_scale_invariance",
    "test_losses.py::TestShardedEqualsSingleDevice::test_sup_con",
    "test_models.py::test_bfloat16_compute_keeps_float32_params_stats_and_features",
    "test_models.py::test_global_batch_norm_under_shard_map_equals_full_batch",
    "test_models.py::test_output_shapes_of_built_models",
    "test_models.py::test_output_shapes_of_every_depth_and_stem",
    "test_models.py::test_param_counts_match_torchvision_without_fc",
    "test_models.py::test_running_statistics_use_momentum_0_9",
    "test_models.py::test_small_stem_quarter_width_for_fashion_mnist",
    "test_models.py::test_zero_init_residual_makes_blocks_their_shortcut",
    "test_multiprocess.py::test_losses_match_one_process",
    "test_multiprocess.py::test_only_process_zero_reports",
    "test_multiprocess.py::test_two_process_checkpoint_restores_on_other_device_count",
    "test_reliability.py::test_every_preset_gives_finite_views_of_edge_images",
    "test_reliability.py::test_fuzzed_losses_and_gradients_are_finite",
    "test_reliability.py::test_nonfinite_loss_raises_naming_the_step_and_keeps_the_last_good_checkpoint",
    "test_reliability.py::test_nonfinite_loss_skip_drops_the_update_and_counts_it",
    "test_reliability.py::test_sigkill_then_rerun_resumes_to_identical_parameters",
    "test_reliability.py::test_sigterm_saves_the_current_step_and_exits",
    "test_reliability.py::test_training_resumes_past_a_damaged_checkpoint_and_sets_it_aside",
    "test_tfds_by_name.py::test_a_prepared_dataset_reads_without_its_builder_code",
    "test_tfds_by_name.py::test_a_tfds_dataset_by_name_trains_and_evaluates",
    "test_theory.py::test_alignment_and_uniformity_track_accuracy_on_synthetic_clusters",
    "test_theory.py::test_alpha_weights_sum_to_one_and_rebuild_alpha_cl",
    "test_theory.py::test_labels_help_in_domain_and_hurt_transfer",
    "test_theory.py::test_relu_units_specialise_to_generative_features_and_linear_units_do_not",
    "test_train.py::test_config_smoke_variant",
    "test_transfer.py::test_transfer_cli_scores_the_encoder_on_the_other_dataset",
    "test_train.py::test_eight_devices_equal_one_device",
    "test_train.py::test_loop_reads_the_device_only_at_log_and_checkpoint_steps",
    "test_train.py::test_metrics_and_load_encoder",
    "test_train.py::test_mocov2_queue_holds_the_gathered_momentum_keys_in_order",
    "test_train.py::test_resume_is_exact",
    "test_train.py::test_training_decreases_loss_and_does_not_retrace",
    "test_workdir_identity.py::test_another_run_is_refused_and_nothing_is_written",
    "test_workdir_identity.py::test_cli_refusal_is_one_line_exit_2_and_leaves_the_run_intact",
    "test_workdir_identity.py::test_differences_are_dotted_keys_with_both_values",
    "test_workdir_identity.py::test_fork_continues_the_checkpoint_and_keeps_the_earlier_config",
    "test_workdir_identity.py::test_longer_run_and_eval_settings_resume",
    "test_xla_defaults.py::test_compilation_cache_is_written_then_reused",
)


# The longest files run first: pytest-xdist (-n 2 --dist loadfile
# --no-loadscope-reorder, see pyproject.toml) hands out files in collection
# order, and a long file that starts last leaves one core idle while it runs
# alone. (xdist's own reordering, by number of tests, put the two-test pod
# rehearsal last.) Longest first by their measured totals.
LONGEST_FILES = (
    "test_rehearsal.py",
    "test_train.py",
    "test_gcs_workdir.py",
    "test_reliability.py",
    "test_multiprocess.py",
    "test_losses.py",
    "test_models.py",
    "test_evaluation.py",
)


def _file_rank(item) -> int:
    name = item.nodeid.split("::")[0].rsplit("/", 1)[-1]
    return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)


def pytest_collection_modifyitems(config, items):
    items.sort(key=_file_rank)  # stable: the order within each file is kept
    for item in items:
        name = item.nodeid.split("[")[0]
        if name.startswith("tests/"):
            name = name[len("tests/") :]
        if name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
