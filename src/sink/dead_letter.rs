//! The dead-letter sink: rejected and late records, with their reason, origin and raw bytes, to a
//! JSON-lines file or a Kafka topic.

use std::collections::BTreeMap;

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::{probe, Probe};
use timely::dataflow::Stream;
use timely::progress::frontier::MutableAntichain;

use super::{Destination, Hold, Output, SinkError};
use crate::event::DeadLetter;
use crate::event_time::Time;

/// Writes `dead_letters` to `output` on worker 0, each time's once the input frontier has passed
/// it, in a fixed order (per file by line, per Kafka partition by offset), so that every run
/// with the same input writes the same dead letters in the same order whatever the number of
/// workers, which a restored run continuing an output relies on. `completed` is attached after it, so its
/// frontier covers written (and, for Kafka, acknowledged) dead letters. When the destination
/// fails, the failure is reported as the run's fatal fault and the frontier stays where it was.
pub fn write_dead_letters(
    dead_letters: Stream<'_, Time, Vec<DeadLetter>>,
    output: Option<Output<DeadLetter>>,
    completed: &probe::Handle<Time>,
) {
    let mut output = output;
    let mut hold = Hold::default();
    let mut failed = false;
    // Dead letters of times not yet complete; none are when a checkpoint is taken (every
    // frontier has passed what was read before it), so a checkpoint need not keep them.
    let mut pending: BTreeMap<Time, Vec<DeadLetter>> = BTreeMap::new();
    let scope = dead_letters.scope();
    dead_letters
        .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_: &DeadLetter| 0u64),
            "Sink: DeadLetters",
            move |_capability, info| {
                let activator = scope.activator_for(info.address);
                move |(input, frontier), _output| {
                    let Some(out) = output.as_mut().filter(|_| !failed) else {
                        // Not the writing worker, or failed: the hold stays where the failure left it.
                        input.for_each(|_, data| data.clear());
                        return;
                    };
                    input.for_each(|batch, data| {
                        let time = batch.least().copied().unwrap_or_default();
                        hold.keep(&batch);
                        pending.entry(time).or_default().append(data);
                    });
                    let destination = out.destination.as_mut();
                    if let Err(e) = write_complete(&mut pending, frontier, destination) {
                        out.fail(&e);
                        failed = true;
                        return;
                    }
                    let unacknowledged = destination.unacknowledged();
                    if unacknowledged.is_some() {
                        activator.activate_after(std::time::Duration::from_millis(1));
                    }
                    hold.settle(unacknowledged.into_iter().chain(pending.keys().next().copied()).min());
                }
            },
        )
        .probe_with(completed);
}

/// Writes the dead letters of every time the input `frontier` has passed, in time order and
/// within a time in [`reading_order`], and flushes.
fn write_complete(
    pending: &mut BTreeMap<Time, Vec<DeadLetter>>,
    frontier: &MutableAntichain<Time>,
    destination: &mut dyn Destination<DeadLetter>,
) -> Result<(), SinkError> {
    while let Some(entry) = pending.first_entry() {
        if frontier.less_equal(entry.key()) {
            break;
        }
        let (time, mut dead_letters) = entry.remove_entry();
        dead_letters.sort_unstable_by(|a, b| reading_order(a).cmp(&reading_order(b)));
        for dead in &dead_letters {
            destination.write(time, dead)?;
        }
    }
    destination.flush()
}

/// The order dead letters of one time are written in: the order they were read in for each file
/// or Kafka partition (`file:PATH:LINE`, `kafka:TOPIC/PARTITION:OFFSET`, by the name and then the
/// number after the last colon), then by origin and raw bytes. Readers on several workers hand
/// them over in any order; this one is the same on every run.
fn reading_order(dead: &DeadLetter) -> (&str, Option<u64>, &str, &[u8]) {
    let (name, number) = match dead.origin.rsplit_once(':') {
        Some((name, number)) => (name, number.parse().ok()),
        None => (dead.origin.as_str(), None),
    };
    (name, number, dead.origin.as_str(), &dead.raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RejectReason;

    #[test]
    fn dead_letters_are_in_reading_order_per_file_and_partition() {
        let dead = |origin: &str| {
            DeadLetter::new(RejectReason::Malformed(String::new()), origin.to_string(), origin.as_bytes().to_vec())
        };
        let mut letters: Vec<DeadLetter> =
            ["kafka:t/1:7", "file:a.csv:10", "kafka:t/0:12", "file:a.csv:9", "kafka:t/0:3", "file:a.csv:100", "http"]
                .map(dead)
                .to_vec();
        letters.sort_by(|a, b| reading_order(a).cmp(&reading_order(b)));
        let origins: Vec<&str> = letters.iter().map(|d| d.origin.as_str()).collect();
        assert_eq!(
            origins,
            ["file:a.csv:9", "file:a.csv:10", "file:a.csv:100", "http", "kafka:t/0:3", "kafka:t/0:12", "kafka:t/1:7"]
        );
    }
}
