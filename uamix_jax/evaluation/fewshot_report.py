"""Few-shot accuracy of the encoder before and after tuning (the demo's closing lines).

Prints the table and writes it (results.md) with a side-by-side t-SNE picture of both
encoders' features (tsne.png) into an output folder.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from uamix_jax.evaluation import compare, plots, suite
from uamix_jax.evaluation import embeddings as embeddings_lib

RESULTS_FILE, TSNE_FILE = "results.md", "tsne.png"


def before_after(
    fewshot: ml_collections.ConfigDict,
    data_config: ml_collections.ConfigDict,
    encoders: dict[str, tuple[Any, Any]],
    out_dir: str,
) -> dict[str, dict]:
    """Episodes on ``fewshot.split`` for each named ``(model, variables)``; prints a table.

    ``fewshot.classes`` (optional) restricts the episodes to those classes (e.g. classes held
    out of pretraining and tuning); ``fewshot.feature_transform`` (optional, 'none' or 'cl2n').
    Writes ``out_dir/results.md`` and ``out_dir/tsne.png``.
    Returns ``{name: {'prototype': {...}, 'logreg': {...}}}`` (``evaluate_episodes`` dicts).
    """
    data_config = data_config.copy_and_resolve_references()
    data_config.classes = tuple(fewshot.get("classes") or ())
    transform = fewshot.get("feature_transform", "none")
    features = {
        name: embeddings_lib.extract_split(model, variables, data_config, fewshot.split)
        for name, (model, variables) in encoders.items()
    }
    results = {
        name: suite.episode_accuracy(
            split,
            fewshot.n_way,
            fewshot.k_shot,
            fewshot.n_query,
            fewshot.episodes,
            fewshot.seed,
            transform,
        )
        for name, split in features.items()
    }
    classes = f", classes {list(data_config.classes)}" if data_config.classes else ""
    title = (
        f"few-shot accuracy on {data_config.name} {fewshot.split}{classes}, features "
        f"{transform} ({fewshot.n_way}-way {fewshot.k_shot}-shot, {fewshot.episodes} "
        "episodes, mean ± 95% CI)"
    )
    print(title + ":")
    for name, by_classifier in results.items():
        cells = ", ".join(
            f"{classifier} {100 * r['mean']:.1f} ± {100 * r['ci95']:.1f}%"
            for classifier, r in by_classifier.items()
        )
        print(f"  {name:>14}: {cells}")

    os.makedirs(out_dir, exist_ok=True)
    setting = f"{fewshot.n_way}way-{fewshot.k_shot}shot"
    table = compare.results_table(
        {
            name: {
                "fewshot": {f"{setting}/{classifier}": r for classifier, r in by_classifier.items()}
            }
            for name, by_classifier in results.items()
        }
    )
    results_path = os.path.join(out_dir, RESULTS_FILE)
    with open(results_path, "w") as file:
        file.write(f"# {title}\n\nPercent.\n\n{table}")
    # Every encoder saw the same clips in the same (id) order: one row selection serves all.
    first = next(iter(features.values()))
    rows, labels = compare.tsne_subset(
        first.labels, max_classes=20, max_points=1500, seed=fewshot.seed
    )
    tsne_path = plots.plot_tsne(
        {name: split.embeddings[rows] for name, split in features.items()},
        labels,
        os.path.join(out_dir, TSNE_FILE),
        compare.class_names(data_config),
        fewshot.seed,
    )
    print(f"wrote {results_path} and {tsne_path}")
    return results
