//! Which changes to a pipeline a checkpoint survives.
//!
//! A checkpoint holds state computed under the pipeline it was taken with. Restored under settings
//! that compute other results, that state would mix with the new settings' results, so restore
//! compares the two pipelines ([`check_compatible`]) and refuses the checkpoint when a setting
//! that changes results differs, naming each such key as the pipeline file writes it.
//!
//! Every setting counts as changing results unless [`HARMLESS`] lists it. The comparison walks
//! the two pipelines' serialised forms, so a setting added to the pipeline later is compared
//! without anyone having to remember this module; only a setting known to be harmless needs an
//! entry.
//!
//! Among the settings that count, some deserve a word:
//! - `source.path`: a file's resume point is a byte offset into the file it was taken from, which
//!   means nothing in another file. A restore that reads another path (`--input`) must put it in
//!   the pipeline it passes here.
//! - `source.kafka.topic`: offsets belong to one topic's partitions (their number is not a
//!   setting; a resume point naming a partition the topic lacks is refused when the source opens).
//! - `source.kafka.start`: partitions the checkpoint did not read start where it says.
//! - `source.kafka.options`: consumer properties can change what is read (`isolation.level`).
//! - `serve.explain` and `serve.forget`: they change what the dataflow keeps (explanations, the
//!   events a forget needs), so a checkpoint taken without them lacks state they need.

use std::collections::BTreeSet;

use serde_json::Value;
use thiserror::Error;

use crate::spec::Pipeline;

/// The settings whose change leaves every result as it was, each with the reason. A key stands
/// for itself and everything under it.
pub const HARMLESS: &[(&str, &str)] = &[
    ("name", "names the run in logs and metrics"),
    ("checkpoint", "where and how often checkpoints are taken, not what they hold"),
    ("output.path", "where results are written, not what they are"),
    ("output.dead_letter", "where rejected records are written"),
    ("output.status_interval_secs", "how often the status line is printed"),
    ("output.kafka_options", "how Kafka outputs are written"),
    ("output.max_rejected_share", "when a run gives up, not what it computes"),
    ("source.kafka.brokers", "where the topic is reached; the topic itself must stay"),
    ("source.kafka.group", "offsets come from the checkpoint; the group's are for monitoring"),
    ("source.synth.rate", "paces the generator; its events are the same at any rate"),
    ("serve.addr", "where the server listens"),
    ("serve.token", "who may post and forget"),
    ("serve.token_env", "who may post and forget"),
    ("serve.read_token", "who may read"),
    ("serve.read_token_env", "who may read"),
    ("serve.allow_unauthenticated", "who may post and forget"),
    ("serve.max_body_bytes", "a limit of the server"),
    ("serve.client_buffer", "a limit of the server"),
    ("serve.max_subscribers", "a limit of the server"),
    ("serve.max_queued_events", "a limit of the server"),
    ("serve.max_connections", "a limit of the server"),
    ("serve.header_timeout", "a limit of the server"),
    ("serve.progress_interval", "how often subscribers hear of progress"),
    ("serve.linger", "how long the server outlives a finite input"),
    ("serve.hot_windows", "how many closed hot-items windows the server keeps for queries"),
];

/// The pipeline a checkpoint was taken with and the one restoring it differ in settings that
/// change results.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "the checkpoint was taken with other settings that change results: {}; set them back, or start \
     without the checkpoint",
    .keys.join(", ")
)]
pub struct IncompatibleSettings {
    /// The differing settings, by key as the pipeline file writes it (`recommend.short_term.size`).
    pub keys: Vec<String>,
}

/// Whether a checkpoint taken with the pipeline `taken_with` can be restored by `restoring`: Ok
/// when they differ at most in [`HARMLESS`] settings, else every other differing setting.
pub fn check_compatible(taken_with: &Pipeline, restoring: &Pipeline) -> Result<(), IncompatibleSettings> {
    let mut keys = Vec::new();
    differing_keys("", Some(&results_settings(taken_with)), Some(&results_settings(restoring)), &mut keys);
    if keys.is_empty() {
        Ok(())
    } else {
        Err(IncompatibleSettings { keys })
    }
}

/// The settings of `pipeline` that count: its serialised form without the [`HARMLESS`] ones.
fn results_settings(pipeline: &Pipeline) -> Value {
    let mut settings = serde_json::to_value(pipeline).expect("a pipeline serialises");
    if settings["serve"].is_null() {
        // Without a server, lists keep no explanations (`Pipeline::explains`) and no user can be
        // forgotten: the same as a server with both off.
        settings["serve"] = serde_json::json!({ "explain": false, "forget": false });
    }
    for (key, _why) in HARMLESS {
        remove_key(&mut settings, key);
    }
    settings
}

/// Removes the dotted `key` from `settings`, if it is there.
fn remove_key(settings: &mut Value, key: &str) {
    let (parents, last) = match key.rsplit_once('.') {
        Some((parents, last)) => (Some(parents), last),
        None => (None, key),
    };
    let mut table = settings;
    for parent in parents.into_iter().flat_map(|parents| parents.split('.')) {
        match table.get_mut(parent) {
            Some(inner) => table = inner,
            None => return,
        }
    }
    if let Value::Object(entries) = table {
        entries.remove(last);
    }
}

/// Appends to `keys` the keys under `path` whose values differ between `before` and `after`: the
/// deepest key where they differ (a table present on one side only is one key).
fn differing_keys(path: &str, before: Option<&Value>, after: Option<&Value>, keys: &mut Vec<String>) {
    match (before, after) {
        (Some(Value::Object(before)), Some(Value::Object(after))) => {
            let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
            for name in names {
                differing_keys(&child_key(path, name), before.get(name), after.get(name), keys);
            }
        }
        (before, after) if before != after => keys.push(path.to_string()),
        _ => {}
    }
}

/// `name` under the dotted `path`, quoted unless it is a bare TOML key (an option such as
/// `"fetch.wait.max.ms"` contains dots).
fn child_key(path: &str, name: &str) -> String {
    let bare = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let name = if bare { name.to_string() } else { format!("{name:?}") };
    if path.is_empty() {
        name
    } else {
        format!("{path}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;
    use crate::spec::{ServeSpec, ShortTermWindow, SourceKind, Span};

    /// Every key of `settings`, each table's keys included.
    fn all_keys(path: &str, settings: &Map<String, Value>, keys: &mut BTreeSet<String>) {
        for (name, value) in settings {
            let key = child_key(path, name);
            if let Value::Object(inner) = value {
                all_keys(&key, inner, keys);
            }
            keys.insert(key);
        }
    }

    fn pipeline() -> Pipeline {
        let text = r#"
            [source]
            kind = "file"
            path = "events.csv"
            [recommend]
            short_term = { kind = "sliding", size = "30m" }
            [hot_items]
            size = "1h"
            slide = "10m"
            [serve]
            addr = "127.0.0.1:8080"
        "#;
        Pipeline::from_toml(text, "test").unwrap()
    }

    fn refused_keys(taken_with: &Pipeline, restoring: &Pipeline) -> Vec<String> {
        check_compatible(taken_with, restoring).expect_err("the change is refused").keys
    }

    #[test]
    fn a_changed_window_size_is_refused_by_its_key() {
        let mut restoring = pipeline();
        restoring.recommend.as_mut().unwrap().short_term = ShortTermWindow::Sliding { size: Span(3_600_000) };
        let error = check_compatible(&pipeline(), &restoring).unwrap_err();
        assert_eq!(error.keys, ["recommend.short_term.size"]);
        assert!(error.to_string().contains("recommend.short_term.size"), "{error}");
    }

    #[test]
    fn a_changed_server_address_and_output_path_are_accepted() {
        let mut restoring = pipeline();
        restoring.serve.as_mut().unwrap().addr = "0.0.0.0:9000".into();
        restoring.output.path = "elsewhere.jsonl".into();
        restoring.output.status_interval_secs = 60;
        restoring.name = "renamed".into();
        assert_eq!(check_compatible(&pipeline(), &restoring), Ok(()));
    }

    #[test]
    fn every_changed_setting_is_named() {
        let mut restoring = pipeline();
        restoring.hot_items.as_mut().unwrap().size = Span(7_200_000);
        restoring.weights.buy = 9.0;
        restoring.serve.as_mut().unwrap().addr = "0.0.0.0:9000".into();
        assert_eq!(refused_keys(&pipeline(), &restoring), ["hot_items.size", "weights.buy"]);
    }

    #[test]
    fn the_source_must_stay_the_one_read() {
        let mut restoring = pipeline();
        restoring.source.path = Some("other.csv".into());
        assert_eq!(refused_keys(&pipeline(), &restoring), ["source.path"]);
        restoring.source.kind = SourceKind::Kafka;
        restoring.source.kafka.topic = "events".into();
        assert_eq!(refused_keys(&pipeline(), &restoring), ["source.kafka.topic", "source.kind", "source.path"]);
        restoring.source.kafka.options.insert("fetch.wait.max.ms".into(), "50".into());
        assert!(refused_keys(&pipeline(), &restoring).contains(&r#"source.kafka.options."fetch.wait.max.ms""#.into()));
    }

    #[test]
    fn sections_added_or_removed_are_named_whole() {
        let mut restoring = pipeline();
        restoring.hot_items = None;
        assert_eq!(refused_keys(&pipeline(), &restoring), ["hot_items"]);
    }

    #[test]
    fn a_server_may_come_or_go_unless_it_explains_or_forgets() {
        let without_server = Pipeline { serve: None, ..pipeline() };
        let quiet_server = ServeSpec { explain: false, forget: false, ..ServeSpec::default() };
        let with_quiet_server = Pipeline { serve: Some(quiet_server), ..pipeline() };
        assert_eq!(check_compatible(&without_server, &with_quiet_server), Ok(()));
        assert_eq!(check_compatible(&with_quiet_server, &without_server), Ok(()));
        assert_eq!(refused_keys(&without_server, &pipeline()), ["serve.explain", "serve.forget"]);
    }

    #[test]
    fn every_harmless_key_is_a_setting() {
        let settings = serde_json::to_value(pipeline()).unwrap();
        let mut keys = BTreeSet::new();
        all_keys("", settings.as_object().unwrap(), &mut keys);
        for (key, _why) in HARMLESS {
            assert!(keys.contains(*key), "HARMLESS names `{key}`, which the pipeline does not have");
        }
    }
}
