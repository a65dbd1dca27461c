//! The JSON-lines changelog sink (standard output or a file).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::{probe, Probe};

use super::changelog::Changelog;
use crate::dataflow::window::Hopping;
use crate::dataflow::{Coll, Time};
use crate::metrics::Metrics;
use crate::results::{ResultKey, ResultValue};
use crate::source::StreamEnd;

/// Opens an output destination: `-` is standard output, `stderr` standard error, else a file.
pub fn open_destination(path: &str) -> std::io::Result<Box<dyn Write>> {
    Ok(match path {
        "-" | "stdout" => Box::new(std::io::BufWriter::with_capacity(1 << 16, std::io::stdout())),
        "stderr" => Box::new(std::io::stderr()),
        path => Box::new(std::io::BufWriter::with_capacity(1 << 16, std::fs::File::create(path)?)),
    })
}

/// Writes the changelog of `results` to `out` on worker 0, and attaches `completed` after it.
#[allow(clippy::too_many_arguments)]
pub fn write_changelog(
    results: Coll<'_, (ResultKey, ResultValue)>,
    out: Option<Box<dyn Write>>,
    hopping: Option<Hopping>,
    unit: u64,
    end: StreamEnd,
    metrics: Arc<Metrics>,
    completed: &probe::Handle<Time>,
) {
    let mut changelog = Changelog::new(hopping, unit);
    let mut changelog_out = out;
    let mut pending: BTreeMap<Time, Vec<(ResultKey, ResultValue, isize)>> = BTreeMap::new();
    let mut line = Vec::with_capacity(1024);
    results
        .inner
        .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_: &((ResultKey, ResultValue), Time, isize)| 0u64),
            "Sink: Changelog",
            move |_capability, _info| {
                move |(input, frontier), _output| {
                    input.for_each(|_time, data| {
                        for ((key, value), time, diff) in data.drain(..) {
                            pending.entry(time).or_default().push((key, value, diff));
                        }
                    });
                    let Some(out) = changelog_out.as_mut() else {
                        pending.clear();
                        return;
                    };
                    let mut wrote = false;
                    let mut failed = None;
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (time, updates) = entry.remove_entry();
                        for record in changelog.apply(time, updates, end.get().map(|ends| ends.results)) {
                            line.clear();
                            serde_json::to_writer(&mut line, &record).expect("changelog records serialize");
                            line.push(b'\n');
                            if let Err(e) = out.write_all(&line) {
                                failed = Some(e);
                                break;
                            }
                            metrics.output_records.fetch_add(1, Ordering::Relaxed);
                            wrote = true;
                        }
                    }
                    if failed.is_none() && (wrote || frontier.is_empty()) {
                        failed = out.flush().err();
                    }
                    if let Some(e) = failed {
                        // Report once and stop writing; results keep being maintained.
                        eprintln!("recflow: cannot write the changelog, no further records will be written: {e}");
                        changelog_out = None;
                    }
                }
            },
        )
        .probe_with(completed);
}
