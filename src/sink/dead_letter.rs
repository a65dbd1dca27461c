//! The dead-letter sink: rejected and late records, with their reason, origin and raw bytes, to a
//! JSON-lines file or a Kafka topic.

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::{probe, Probe};
use timely::dataflow::Stream;

use super::{Destination, Hold};
use crate::dataflow::Time;
use crate::event::DeadLetter;

/// Writes `dead_letters` to `destination` on worker 0. `completed` is attached after it, so its
/// frontier covers written (and, for Kafka, acknowledged) dead letters.
pub fn write_dead_letters(
    dead_letters: Stream<'_, Time, Vec<DeadLetter>>,
    destination: Option<Box<dyn Destination<DeadLetter>>>,
    completed: &probe::Handle<Time>,
) {
    let mut destination = destination;
    let mut hold = Hold::default();
    let scope = dead_letters.scope();
    dead_letters
        .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_: &DeadLetter| 0u64),
            "Sink: DeadLetters",
            move |_capability, info| {
                let activator = scope.activator_for(info.address);
                move |(input, _frontier), _output| {
                    let mut wrote = false;
                    input.for_each(|batch, data| {
                        let Some(out) = destination.as_mut() else { return };
                        let time = batch.least().copied().unwrap_or_default();
                        hold.keep(&batch);
                        for dead in data.drain(..) {
                            if let Err(e) = out.write(time, &dead) {
                                eprintln!("recflow: cannot write a dead letter: {e}");
                            }
                            wrote = true;
                        }
                    });
                    let Some(out) = destination.as_mut() else { return };
                    if wrote {
                        if let Err(e) = out.flush() {
                            eprintln!("recflow: cannot write dead letters: {e}");
                        }
                    }
                    let unacknowledged = out.unacknowledged();
                    if unacknowledged.is_some() {
                        activator.activate_after(std::time::Duration::from_millis(1));
                    }
                    hold.settle(unacknowledged);
                }
            },
        )
        .probe_with(completed);
}
