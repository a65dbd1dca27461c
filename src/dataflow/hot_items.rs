//! Windowed hot items (the Flink HotItems job): hopping windows of `size` every `slide`, aligned to
//! the epoch; per window (and optionally per category) the `top_n` items by event count, ties
//! broken by item asc.
//!
//! Each event is counted once, in its slide-long pane, and panes are combined into windows: pane
//! updates of one batch consolidate before they fan out to the `size / slide` windows holding the
//! pane. A window's counts are delayed to its end, so its list appears once the frontier passes
//! the end (late events within the allowed lateness update it), and retracted at its purge time so
//! state stays bounded. The top-N runs in two stages: per (window, item shard), then per window
//! over the shards' candidates, so the heavy stage spreads over all workers.

use differential_dataflow::Hashable;

use super::window::Hopping;
use super::Coll;
use crate::event::{Event, Id, Millis};
use crate::spec::HotItemsSpec;

/// Item shards of the first top-N stage (fixed, so results do not depend on the worker count).
const ITEM_SHARDS: u64 = 64;

/// A hot-items list's key: the window's end and, for per-category lists, the category.
pub type HotWindow = (Millis, Option<Id>);

/// `((window_end, category), list)` for every window with events; `category` is `None` unless
/// the lists are per category.
pub fn hot_items<'scope>(
    events: Coll<'scope, Event>,
    spec: &HotItemsSpec,
    hop: Hopping,
) -> Coll<'scope, (HotWindow, Vec<(Id, i64)>)> {
    let actions = spec.actions.clone();
    let per_category = spec.per_category;
    let top_n = spec.top_n;
    events
        .filter(move |event| actions.contains(&event.action))
        .join_function(move |event: Event| {
            // Every event of a pane waits for the pane's end, so a batch's updates consolidate.
            let category = if per_category { event.category } else { None };
            let pane_end = hop.pane_end(event.ts);
            Some(((pane_end, category, event.item), pane_end, 1))
        })
        .consolidate_stream()
        .join_function(move |(pane_end, category, item): (Millis, Option<Id>, Id)| {
            let shard = item.hashed() % ITEM_SHARDS;
            hop.window_ends(pane_end).flat_map(move |end| {
                let key = ((end, category.clone(), shard), item.clone());
                [(key.clone(), hop.fire_time(end), 1), (key, hop.purge_time(end), -1)]
            })
        })
        .reduce_named("HotItemsPerShard", move |_window, counted, output: &mut Vec<((i64, Id), isize)>| {
            output.extend(top_by_count(counted, top_n).into_iter().map(|(item, count)| ((-count, item), 1)));
        })
        .map(|((end, category, _shard), ranked)| ((end, category), ranked))
        .reduce_named("HotItems", move |_window, ranked, output: &mut Vec<(Vec<(Id, i64)>, isize)>| {
            let list: Vec<(Id, i64)> =
                ranked.iter().take(top_n).map(|((negated, item), _)| (item.clone(), -negated)).collect();
            output.push((list, 1));
        })
}

/// The `n` items with the highest counts (the counts are the accumulated differences), count desc
/// then item asc.
fn top_by_count(counted: &[(&Id, isize)], n: usize) -> Vec<(Id, i64)> {
    let mut best: Vec<(i64, &Id)> =
        counted.iter().filter(|(_, c)| *c > 0).map(|(item, c)| (-(*c as i64), *item)).collect();
    if best.len() > n {
        best.select_nth_unstable(n - 1);
        best.truncate(n);
    }
    best.sort();
    best.into_iter().map(|(negated, item)| (item.clone(), -negated)).collect()
}
