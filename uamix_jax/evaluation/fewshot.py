"""N-way K-shot episodes on frozen embeddings: nearest prototype and logistic regression.

Defaults follow the few-shot literature (Chen et al., "A Closer Look at Few-shot
Classification", ICLR 2019): 600 episodes, 15 queries per class, mean accuracy with a 95%
confidence interval of 1.96 * std / sqrt(episodes).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression

from uamix_jax.evaluation.metrics import mean_and_ci95

CLASSIFIERS = ("prototype", "logreg")
# 'none': features as extracted (each classifier L2-normalises them). 'cl2n': SimpleShot's
# centring (Wang et al., 2019, "SimpleShot"): subtract a mean, then L2-normalise. SimpleShot
# uses the mean of a labelled base set; an episode here has only its support set, so the
# support mean is used (the queries are never looked at). It removes the component all clips
# share (e.g. the positional embedding in a mean of tokens), which otherwise makes every
# cosine similarity close to 1.
FEATURE_TRANSFORMS = ("none", "cl2n")


@dataclasses.dataclass(frozen=True)
class Episode:
    """Indices into the embedding table; labels are re-indexed to 0..n_way-1."""

    support: np.ndarray  # (n_way * k_shot,) int
    support_labels: np.ndarray
    query: np.ndarray  # (n_way * n_query,) int
    query_labels: np.ndarray
    classes: np.ndarray  # (n_way,) original class ids, in episode-label order


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def sample_episode(
    labels: np.ndarray, n_way: int, k_shot: int, n_query: int, rng: np.random.Generator
) -> Episode:
    """Draws n_way distinct classes, then k_shot + n_query distinct clips of each.

    Only classes with at least k_shot + n_query clips can be drawn, so support and query
    never share a clip and every class has exactly k_shot supports and n_query queries.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(
            f"sample_episode: episodes need single-label data, got labels of shape {labels.shape}"
        )
    classes, counts = np.unique(labels, return_counts=True)
    eligible = classes[counts >= k_shot + n_query]
    if eligible.size < n_way:
        raise ValueError(
            f"sample_episode: {n_way}-way {k_shot}-shot with {n_query} queries needs {n_way} "
            f"classes with >= {k_shot + n_query} clips each; only {eligible.size} of "
            f"{classes.size} classes have that"
        )
    chosen = rng.choice(eligible, size=n_way, replace=False)
    support, query = [], []
    for cls in chosen:
        picked = rng.choice(np.flatnonzero(labels == cls), size=k_shot + n_query, replace=False)
        support.append(picked[:k_shot])
        query.append(picked[k_shot:])
    episode_labels = np.arange(n_way)
    return Episode(
        support=np.concatenate(support),
        support_labels=np.repeat(episode_labels, k_shot),
        query=np.concatenate(query),
        query_labels=np.repeat(episode_labels, n_query),
        classes=chosen,
    )


def prototype_predict(
    support: np.ndarray, support_labels: np.ndarray, query: np.ndarray, n_way: int
) -> np.ndarray:
    """Nearest prototype by cosine similarity: features and class means are L2-normalised.

    Cosine (rather than raw euclidean) makes the prototype insensitive to the feature scale,
    which differs between a pretrained and a tuned encoder; on unit vectors the ranking is the
    same as euclidean distance to the normalised prototypes.
    """
    support, query = l2_normalize(support), l2_normalize(query)
    prototypes = np.stack([support[support_labels == c].mean(axis=0) for c in range(n_way)])
    return np.argmax(query @ l2_normalize(prototypes).T, axis=1)


def logreg_predict(
    support: np.ndarray, support_labels: np.ndarray, query: np.ndarray, n_way: int
) -> np.ndarray:
    """Multinomial logistic regression (scikit-learn, L-BFGS, C=1) on L2-normalised features.

    scikit-learn's convex solver runs to convergence on these tiny problems (n_way * k_shot
    rows) in milliseconds, with no step size or step count to tune, and is the classifier of
    Tian et al. (ECCV 2020), so numbers are comparable with that literature.
    """
    del n_way  # Implied by the labels; kept for a common classifier signature.
    classifier = fit_logistic_regression(l2_normalize(support), support_labels)
    return classifier.predict(l2_normalize(query))


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray) -> LogisticRegression:
    """LogisticRegression(C=1) fitted to few examples per class. scikit-learn warns when
    most rows have a class of their own, which 1-shot problems have by design."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The number of unique classes is greater than 50%")
        return LogisticRegression(C=1.0, max_iter=1000).fit(features, labels)


def centre_on_support(support: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CL2N with the support mean: both sets minus the support mean, then L2-normalised."""
    mean = np.asarray(support, np.float32).mean(axis=0, keepdims=True)
    return l2_normalize(support - mean), l2_normalize(query - mean)


_PREDICTORS: dict[str, Callable[..., np.ndarray]] = {
    "prototype": prototype_predict,
    "logreg": logreg_predict,
}


def evaluate_episodes(
    embeddings: np.ndarray,
    labels: np.ndarray,
    n_way: int = 5,
    k_shot: int = 5,
    n_query: int = 15,
    episodes: int = 600,
    seed: int = 0,
    classifier: str = "prototype",
    feature_transform: str = "none",
) -> dict:
    """Mean few-shot accuracy over random episodes, with its 95% confidence interval.

    Args:
      embeddings: (N, D) frozen features (pooled encoder output).
      labels: (N,) integer class ids.
      classifier: 'prototype' (cosine nearest class mean) or 'logreg'.
      feature_transform: 'none' or 'cl2n' (centre on the episode's support mean, then
        L2-normalise; see FEATURE_TRANSFORMS).
    Returns:
      {'mean', 'ci95', 'std'} accuracies as fractions in [0, 1], plus the episode settings.
    """
    if classifier not in _PREDICTORS:
        raise ValueError(
            f"evaluate_episodes: classifier must be one of {CLASSIFIERS}, got {classifier!r}"
        )
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] != np.shape(labels)[0]:
        raise ValueError(
            f"evaluate_episodes: expected embeddings (N, D) and labels (N,), "
            f"got {embeddings.shape} and {np.shape(labels)}"
        )
    if feature_transform not in FEATURE_TRANSFORMS:
        raise ValueError(
            f"evaluate_episodes: feature_transform must be one of {FEATURE_TRANSFORMS}, "
            f"got {feature_transform!r}"
        )
    predict = _PREDICTORS[classifier]
    rng = np.random.default_rng(seed)
    accuracies = np.empty(episodes)
    for i in range(episodes):
        episode = sample_episode(labels, n_way, k_shot, n_query, rng)
        support, query = embeddings[episode.support], embeddings[episode.query]
        if feature_transform == "cl2n":
            support, query = centre_on_support(support, query)
        predicted = predict(support, episode.support_labels, query, n_way)
        accuracies[i] = np.mean(predicted == episode.query_labels)
    mean, ci95 = mean_and_ci95(accuracies)
    return {
        "mean": mean,
        "ci95": ci95,
        "std": float(accuracies.std()),
        "episodes": episodes,
        "n_way": n_way,
        "k_shot": k_shot,
        "n_query": n_query,
        "classifier": classifier,
        "feature_transform": feature_transform,
    }
