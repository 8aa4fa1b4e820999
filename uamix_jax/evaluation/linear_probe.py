"""K-labelled-examples-per-class linear probes on the full label set, repeated over seeds."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from uamix_jax.evaluation.fewshot import fit_logistic_regression, l2_normalize
from uamix_jax.evaluation.metrics import accuracy, mean_and_ci95, mean_average_precision


def is_multilabel(labels: np.ndarray) -> bool:
    """Multi-hot (N, C) labels (AudioSet) rather than integer class ids (N,)."""
    return np.ndim(labels) == 2


def sample_k_per_class(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of k examples of every class (all of them where a class has fewer).

    For multi-hot labels a clip counts for each class it is positive for, so the union
    holds at least k positives of every class that has k.
    """
    labels = np.asarray(labels)
    positives_per_class = (
        [np.flatnonzero(labels[:, c] > 0.5) for c in range(labels.shape[1])]
        if is_multilabel(labels)
        else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    )
    chosen = [
        rng.choice(rows, size=min(k, rows.size), replace=False)
        for rows in positives_per_class
        if rows.size
    ]
    return np.unique(np.concatenate(chosen))


def fit_and_score(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray
) -> float:
    """Logistic regression on L2-normalised features; accuracy, or mAP for multi-hot labels.

    Multi-label data gets one binary classifier per class (one-vs-rest), as AudioSet
    classes are not exclusive.
    """
    train_x, test_x = l2_normalize(train_x), l2_normalize(test_x)
    if is_multilabel(train_y):
        classifier = OneVsRestClassifier(LogisticRegression(C=1.0, max_iter=1000))
        # Classes with no sampled positive can only be predicted as absent; sklearn warns.
        classifier.fit(train_x, (train_y > 0.5).astype(np.int32))
        return mean_average_precision(classifier.decision_function(test_x), test_y)
    classifier = fit_logistic_regression(train_x, train_y)
    # Probabilities are (N, classes) even for two classes (decision_function is then 1-D);
    # a test class never seen in training keeps probability 0.
    probabilities = np.zeros((test_x.shape[0], int(max(train_y.max(), test_y.max())) + 1))
    probabilities[:, classifier.classes_] = classifier.predict_proba(test_x)
    return accuracy(probabilities, test_y)


def kshot_probe(
    train_embeddings: np.ndarray,
    train_labels: np.ndarray,
    test_embeddings: np.ndarray,
    test_labels: np.ndarray,
    k: int,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
) -> dict:
    """Probe trained on k examples per class of the train split, scored on the whole test split.

    Returns {'mean', 'ci95', 'std', 'per_seed', 'metric'}, the metric being 'accuracy' or
    'mAP' (fractions in [0, 1]); the CI is over the seeds, each drawing its own k examples.
    """
    metric = "mAP" if is_multilabel(train_labels) else "accuracy"
    per_seed = []
    for seed in seeds:
        rows = sample_k_per_class(train_labels, k, np.random.default_rng(seed))
        per_seed.append(
            fit_and_score(
                train_embeddings[rows], np.asarray(train_labels)[rows], test_embeddings, test_labels
            )
        )
    mean, ci95 = mean_and_ci95(np.array(per_seed))
    return {
        "mean": mean,
        "ci95": ci95,
        "std": float(np.std(per_seed)),
        "per_seed": per_seed,
        "metric": metric,
        "k": k,
    }
