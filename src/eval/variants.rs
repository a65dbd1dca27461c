//! What an evaluation compares: the configured pipeline, the same pipeline with only its
//! short-term or only its long-term preference, two popularity baselines, two item-kNN baselines,
//! and any number of other pipeline files.
//!
//! The pipeline variants are real dataflows (one [`crate::dataflow::build`] each, fed by the
//! same ingested events); the baselines are kept by the evaluator from the same events, exactly
//! and independently of the dataflow.

use crate::spec::{Exclude, Pipeline};

/// How a model produces a user's list.
#[derive(Clone, Debug, PartialEq)]
pub enum Model {
    /// The recommendations of a dataflow built from this pipeline.
    Dataflow(Box<Pipeline>),
    /// The `k` items with the most events so far, excluded items skipped.
    GlobalPopularity,
    /// The `k` items with the most events in the last `popular_window`, excluded items skipped.
    WindowedPopularity,
    /// Item-kNN over all co-occurrences so far, seeded by the user's most recent items
    /// ([`super::knn`]); `recent` weights older seeds down.
    ItemKnn {
        /// Whether older seeds count less (`item-knn-recent`).
        recent: bool,
    },
}

/// One model in the comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    /// Its short name in the table, the CSV and the plot.
    pub name: String,
    /// What it is, in a few words.
    pub description: String,
    /// How it recommends.
    pub model: Model,
}

/// The variants for evaluating `pipeline` with lists of `k` items (the item-kNN baselines seeded
/// by `knn_seeds` recent items), plus `compare`, a list of
/// `(name, pipeline)` whose `[weights]` and `[recommend]` tables are evaluated on the same replay.
///
/// Every dataflow variant gets `pipeline`'s `[source]` and `[time]` (so all of them see the same
/// events at the same dataflow times), `k` as `recommend.k`, and no hot items. `pipeline` must
/// have a `[recommend]` table; so must each compared pipeline (the caller checks).
pub fn variants(pipeline: &Pipeline, k: usize, knn_seeds: usize, compare: &[(String, Pipeline)]) -> Vec<Variant> {
    let base = |weights_from: &Pipeline, alpha_beta: Option<(f64, f64)>| {
        let mut variant = pipeline.clone();
        variant.hot_items = None;
        variant.weights = weights_from.weights.clone();
        variant.recommend = weights_from.recommend.clone();
        if let Some(recommend) = variant.recommend.as_mut() {
            recommend.k = k;
            if let Some((alpha, beta)) = alpha_beta {
                recommend.alpha = alpha;
                recommend.beta = beta;
            }
        }
        Box::new(variant)
    };
    let (alpha, beta) = pipeline.recommend.as_ref().map_or((0.0, 0.0), |r| (r.alpha, r.beta));
    let window = pipeline.recommend.as_ref().map_or_else(String::new, |r| r.popular_window.to_string());
    let exclusion = match pipeline.recommend.as_ref().map(|r| r.exclude) {
        Some(Exclude::Seen) => ", seen items skipped",
        Some(Exclude::Bought) => ", bought items skipped",
        _ => "",
    };
    let mut variants = vec![
        Variant {
            name: "blend".into(),
            description: format!("the pipeline as configured (alpha {alpha}, beta {beta})"),
            model: Model::Dataflow(base(pipeline, None)),
        },
        Variant {
            name: "short-term".into(),
            description: "the pipeline with alpha 1, beta 0".into(),
            model: Model::Dataflow(base(pipeline, Some((1.0, 0.0)))),
        },
        Variant {
            name: "long-term".into(),
            description: "the pipeline with alpha 0, beta 1".into(),
            model: Model::Dataflow(base(pipeline, Some((0.0, 1.0)))),
        },
        Variant {
            name: "windowed-pop".into(),
            description: format!("most events in the last {window} (popular_window){exclusion}"),
            model: Model::WindowedPopularity,
        },
        Variant {
            name: "global-pop".into(),
            description: format!("most events since the start{exclusion}"),
            model: Model::GlobalPopularity,
        },
        Variant {
            name: "item-knn".into(),
            description: format!(
                "cosine over all co-occurrences so far, the user's {knn_seeds} most recent items as equal seeds, filled from global-pop{exclusion}"
            ),
            model: Model::ItemKnn { recent: false },
        },
        Variant {
            name: "item-knn-recent".into(),
            description: format!(
                "item-knn with the r-th most recent seed weighted {}^r{exclusion}",
                super::knn::RECENCY_DECAY
            ),
            model: Model::ItemKnn { recent: true },
        },
    ];
    for (name, other) in compare {
        variants.push(Variant {
            name: name.clone(),
            description: format!("pipeline {}: its [weights] and [recommend]", other.name),
            model: Model::Dataflow(base(other, None)),
        });
    }
    variants
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_change_only_the_blend() {
        let pipeline = Pipeline::from_toml(
            "[recommend]\nk = 5\nalpha = 0.6\nbeta = 0.4\n[hot_items]\n[source]\nkind = \"synth\"",
            "test",
        )
        .unwrap();
        let other =
            Pipeline::from_toml("[recommend]\nalpha = 0.1\n[weights]\nview = 2.0\n[time]\ntick = \"5s\"", "o").unwrap();
        let all = variants(&pipeline, 3, 10, &[("other".into(), other)]);
        let names: Vec<&str> = all.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            ["blend", "short-term", "long-term", "windowed-pop", "global-pop", "item-knn", "item-knn-recent", "other"]
        );
        let Model::Dataflow(blend) = &all[0].model else { panic!("blend is a dataflow") };
        let Model::Dataflow(short) = &all[1].model else { panic!("short-term is a dataflow") };
        let Model::Dataflow(compared) = &all[7].model else { panic!("compared is a dataflow") };
        let (b, s) = (blend.recommend.as_ref().unwrap(), short.recommend.as_ref().unwrap());
        assert_eq!((b.k, b.alpha, b.beta, s.alpha, s.beta), (3, 0.6, 0.4, 1.0, 0.0));
        assert!(blend.hot_items.is_none());
        // A compared pipeline brings its weights and recommendations, not its time settings.
        assert_eq!(compared.recommend.as_ref().unwrap().alpha, 0.1);
        assert_eq!(compared.weights.view, 2.0);
        assert_eq!(compared.time, pipeline.time);
    }
}
