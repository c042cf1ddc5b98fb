"""Label subsets: class-balanced, deterministic, nested, and read from SimCLR's files."""

import numpy as np
import pytest

from jaxcl.data import label_subsets


def _labels(counts=(50, 30, 20), seed=0):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return np.random.default_rng(seed).permutation(labels)


def test_fraction_keeps_each_class_in_proportion():
    labels = _labels((600, 300, 100))
    subset = label_subsets.class_balanced_subset(labels, fraction=0.1, seed=3)
    assert np.all(np.diff(subset) > 0)
    np.testing.assert_array_equal(np.bincount(labels[subset]), [60, 30, 10])


def test_one_percent_of_fashion_mnist_is_sixty_per_class():
    labels = np.repeat(np.arange(10), 6000)
    subset = label_subsets.class_balanced_subset(labels, fraction=0.01)
    np.testing.assert_array_equal(np.bincount(labels[subset]), [60] * 10)


def test_per_class_count_and_at_least_one_per_class():
    labels = _labels()
    subset = label_subsets.class_balanced_subset(labels, per_class=7)
    np.testing.assert_array_equal(np.bincount(labels[subset]), [7, 7, 7])
    tiny = label_subsets.class_balanced_subset(labels, fraction=0.001)
    np.testing.assert_array_equal(np.bincount(labels[tiny]), [1, 1, 1])


def test_same_seed_same_subset_other_seed_other_subset_and_fractions_nest():
    labels = _labels((500, 500))
    first = label_subsets.class_balanced_subset(labels, fraction=0.1, seed=1)
    np.testing.assert_array_equal(
        first, label_subsets.class_balanced_subset(labels.copy(), fraction=0.1, seed=1)
    )
    other = label_subsets.class_balanced_subset(labels, fraction=0.1, seed=2)
    assert len(np.intersect1d(first, other)) < len(first) // 2
    # 10% of a seed contains its 1%: each class's order is a fixed permutation.
    small = label_subsets.class_balanced_subset(labels, fraction=0.01, seed=1)
    assert np.isin(small, first).all()


def test_a_class_choice_does_not_depend_on_the_other_classes():
    labels = _labels((100, 100, 100))
    subset = label_subsets.class_balanced_subset(labels, per_class=5, seed=4)
    without_class_2 = np.where(labels == 2, -1, labels)  # unlabelled now
    reduced = label_subsets.class_balanced_subset(without_class_2, per_class=5, seed=4)
    np.testing.assert_array_equal(reduced, subset[labels[subset] != 2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give one of fraction and per_class"),
        ({"fraction": 0.1, "per_class": 3}, "give one of fraction and per_class"),
        ({"fraction": 0.0}, r"fraction=0.0 is not in \(0, 1\]"),
        ({"fraction": 1.5}, r"fraction=1.5 is not in \(0, 1\]"),
        ({"per_class": 0}, "per_class=0 is below 1"),
        ({"per_class": 31}, "class 1 has 30 examples, fewer than per_class=31"),
    ],
)
def test_bad_arguments_raise_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        label_subsets.class_balanced_subset(_labels(), **kwargs)


def test_subset_file_selects_the_listed_names(tmp_path):
    names = [f"train/n0{c}/n0{c}_{i}.JPEG".encode() for c in range(3) for i in range(4)]
    path = tmp_path / "1percent.txt"
    path.write_text("n02_3.JPEG\n\nn00_1.JPEG\n")
    np.testing.assert_array_equal(label_subsets.subset_from_file(path, names), [1, 11])
    path.write_text("n00_1.JPEG\nn09_9.JPEG\n")
    with pytest.raises(
        ValueError, match=r"1 of the 2 names in .* are not in the split \(first: n09_9"
    ):
        label_subsets.subset_from_file(path, names)


# ------------------------------------------------------------------ the pipeline

SYNTHETIC = {"image_shape": (8, 8, 1), "num_classes": 4, "num_examples": 64}


def _subset_iterator(indices, **overrides):
    from jaxcl.data import pipeline

    arguments = {"process_index": 0, "process_count": 1, "global_batch_size": 4, **overrides}
    return pipeline.make_train_iterator(
        "synthetic", preset="fashion_mnist", image_size=8, num_views=1, seed=5,
        dataset_options=SYNTHETIC, example_indices=indices, **arguments,
    )  # fmt: skip


def test_train_iterator_reads_only_the_subset_and_resumes_exactly():
    labels = np.arange(64) % 4  # the synthetic data set's labels
    subset = label_subsets.class_balanced_subset(labels, per_class=3, seed=0)  # 12 examples
    iterator = _subset_iterator(subset)
    assert iterator.steps_per_epoch == 3
    batches = [next(iterator) for _ in range(6)]  # two epochs
    for epoch in (batches[:3], batches[3:]):
        seen = np.concatenate([batch["index"] for batch in epoch])
        np.testing.assert_array_equal(np.sort(seen), subset)  # each member once an epoch
    assert not np.array_equal(batches[0]["index"], batches[3]["index"])  # a new order
    np.testing.assert_array_equal(batches[0]["label"], labels[batches[0]["index"]])
    resumed = next(_subset_iterator(subset, start_step=4))
    np.testing.assert_array_equal(resumed["views"], batches[4]["views"])
    halves = [next(_subset_iterator(subset, process_index=p, process_count=2)) for p in (0, 1)]
    np.testing.assert_array_equal(np.concatenate([h["index"] for h in halves]), batches[0]["index"])


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ([], "must be a non-empty 1-D integer array"),
        ([0, 64], "run from 0 to 64, outside the 64 examples of synthetic train"),
        ([3, 3, 5, 7], "repeats an example"),
    ],
)
def test_bad_example_indices_are_refused(indices, message):
    with pytest.raises(ValueError, match=message):
        _subset_iterator(np.asarray(indices, np.int64))
