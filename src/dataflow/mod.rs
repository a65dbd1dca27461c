//! The dataflow: one file per operator family, wired together by [`build`].
//!
//! Accepted events → preferences (short-term window, long-term horizon, blend) → item similarity
//! → scores → per-user top-k, with the popular pool filling short lists and giving users without
//! a list the popular items; and events → hot items per hopping window. Results leave as one
//! collection of `(ResultKey, ResultValue)`.

pub mod forget;
pub mod hot_items;
pub mod popular;
pub mod preference;
pub mod ranking;
pub mod recommend;
pub mod similarity;
pub mod slots;

use crate::event::{Event, Id};
pub use crate::event_time::{Coll, Time};
use crate::progress::StreamEnd;
use crate::results::{ResultKey, ResultValue};
use crate::spec::Pipeline;
use crate::window::Hopping;
pub use recommend::Control;

/// The hopping-window layout of a pipeline's hot items.
pub fn hopping(pipeline: &Pipeline) -> Option<Hopping> {
    pipeline.hot_items.as_ref().map(|hot| Hopping {
        size: hot.size.millis(),
        slide: hot.slide.millis(),
        lateness: pipeline.time.allowed_lateness.millis(),
        tick: pipeline.time.tick.millis(),
    })
}

/// Builds every result the pipeline asks for from its accepted events.
///
/// `control.forgets`, when given, are users to forget, each at the time of the request: their
/// events up to then are retracted from everything ([`forget`]). `control.restored` are users'
/// lists as they stood at a restored cut ([`Control`]). `end` is where a finite input ended, once
/// it has: recommendation updates after it are dropped.
pub fn build<'scope>(
    events: Coll<'scope, Event>,
    control: Control<'scope>,
    pipeline: &Pipeline,
    end: &StreamEnd,
) -> Coll<'scope, (ResultKey, ResultValue)> {
    build_sharing(events, control, pipeline, end, &mut Shared::default())
}

/// Parts of the dataflow that several pipelines built on the same events can share: the
/// similarity rows, which depend only on the events' touches, the long-term horizon, the tick
/// and the co-occurrence and similarity settings, never on weights, windows or blend.
#[derive(Default)]
pub struct Shared<'scope> {
    similarity: Vec<(String, similarity::RowUpserts<'scope>)>,
}

impl<'scope> Shared<'scope> {
    /// The rows for `pipeline`'s settings, built from `touches` unless a pipeline with the same
    /// settings built them already.
    fn similarity(
        &mut self,
        touches: impl FnOnce() -> Coll<'scope, (Id, (Id, u64))>,
        pipeline: &Pipeline,
        end: &StreamEnd,
    ) -> similarity::RowUpserts<'scope> {
        let spec = pipeline.recommend.as_ref().expect("only pipelines that recommend have similarity");
        let key = serde_json::json!([
            spec.long_term,
            spec.history,
            spec.co_occurrence,
            spec.pair_decay,
            spec.similarity,
            pipeline.time.tick
        ])
        .to_string();
        if let Some((_, rows)) = self.similarity.iter().find(|(k, _)| *k == key) {
            return rows.clone();
        }
        let pairing = similarity::Pairing::of(spec);
        let tick = pipeline.time.tick.millis();
        let rows = similarity::item_similarity(touches(), pairing, &spec.similarity, tick, end.clone());
        self.similarity.push((key, rows.clone()));
        rows
    }
}

/// [`build`], sharing what it can with the other pipelines built with the same `shared` on the
/// same `events` (the evaluator's variants).
pub fn build_sharing<'scope>(
    events: Coll<'scope, Event>,
    control: Control<'scope>,
    pipeline: &Pipeline,
    end: &StreamEnd,
    shared: &mut Shared<'scope>,
) -> Coll<'scope, (ResultKey, ResultValue)> {
    let tick = pipeline.time.tick.millis();
    let scope = events.scope();
    // Everything per event below (preference parts and their expiries, touches, popularity and
    // pane counts) runs on the worker that owns the event's user, not all on the reading worker.
    // Hot items alone need no spreading: panes are counted before they are exchanged.
    let forgets = control.forgets.clone();
    let events = if pipeline.recommend.is_some() || forgets.is_some() { spread_by_user(events) } else { events };
    let events = match &forgets {
        Some(forgets) => forget::forgettable(events, forgets.clone(), forget::Influence::of(pipeline)),
        None => events,
    };
    let mut results: Vec<Coll<'scope, (ResultKey, ResultValue)>> = Vec::new();
    if let (Some(spec), Some(hop)) = (&pipeline.hot_items, hopping(pipeline)) {
        let hot = hot_items::hot_items(events.clone(), spec, hop).map(|((window_end, category), list)| {
            (ResultKey::HotItems { window_end, category }, ResultValue::HotItems(list))
        });
        results.push(hot);
    }
    if let Some(spec) = &pipeline.recommend {
        let contributions = preference::contributions(events.clone(), spec, &pipeline.weights, tick, end.clone());
        let touched = contributions.clone();
        let touches = || touched.flat_map(|(user, part)| part.touch.map(|ts| (user, (part.item, ts))));
        let similar = shared.similarity(touches, pipeline, end);
        let settings = recommend::RecommendSettings {
            spec,
            explain: pipeline.explains(),
            tick,
            lateness: pipeline.time.allowed_lateness.millis(),
            end: end.clone(),
        };
        let pool = popular::popular_pool(events, popular::PoolSpec::of(spec, tick), end.clone());
        let new_users = popular::new_user_list(pool.clone(), spec.k);
        results.push(new_users.map(|list| (ResultKey::Popular, ResultValue::Recs(list))));
        let recs = recommend::recommendations(pool, contributions, similar, control, settings)
            .map(|(user, list)| (ResultKey::Recs(user), ResultValue::Recs(list)));
        results.push(recs);
    }
    differential_dataflow::collection::concatenate(scope, results)
}

/// The events, each moved to the worker its user hashes to.
pub fn spread_by_user<'scope>(events: Coll<'scope, Event>) -> Coll<'scope, Event> {
    use differential_dataflow::{AsCollection, Hashable};
    use timely::dataflow::operators::Exchange;
    events.inner.exchange(|(event, _, _): &(Event, Time, isize)| event.user.hashed()).as_collection()
}

/// Moves every update of `collection` to `round(datum, time)` (which must not be earlier),
/// releasing it when due: the collection as it was at the last multiple of a refresh cadence,
/// for example.
pub fn retime<'scope, D: Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static>(
    collection: Coll<'scope, D>,
    name: &str,
    round: impl Fn(&D, Time) -> Time + 'static,
    end: StreamEnd,
) -> Coll<'scope, D> {
    use crate::schedule::ReleaseWhenDue;
    use differential_dataflow::AsCollection;
    use timely::dataflow::operators::vec::Map;
    collection
        .inner
        .map(move |(datum, time, diff)| {
            let time = round(&datum, time);
            (datum, time, diff)
        })
        .as_collection()
        .release_when_due(name, end)
}
