//! The dead-letter sink: rejected and late records, with their reason, origin and raw bytes, to a
//! JSON-lines file or a Kafka topic.

use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::{probe, Probe};
use timely::dataflow::Stream;

use super::{Hold, Output};
use crate::event::DeadLetter;
use crate::event_time::Time;

/// Writes `dead_letters` to `output` on worker 0. `completed` is attached after it, so its
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
    let scope = dead_letters.scope();
    dead_letters
        .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_: &DeadLetter| 0u64),
            "Sink: DeadLetters",
            move |_capability, info| {
                let activator = scope.activator_for(info.address);
                move |(input, _frontier), _output| {
                    let Some(out) = output.as_mut().filter(|_| !failed) else {
                        // Not the writing worker, or failed: the hold stays where the failure left it.
                        input.for_each(|_, data| data.clear());
                        return;
                    };
                    let mut written = Ok(());
                    input.for_each(|batch, data| {
                        let time = batch.least().copied().unwrap_or_default();
                        hold.keep(&batch);
                        for dead in data.drain(..) {
                            if written.is_ok() {
                                written = out.destination.write(time, &dead);
                            }
                        }
                    });
                    let destination = out.destination.as_mut();
                    if let Err(e) = written.and_then(|()| destination.flush()) {
                        out.fail(&e);
                        failed = true;
                        return;
                    }
                    let unacknowledged = destination.unacknowledged();
                    if unacknowledged.is_some() {
                        activator.activate_after(std::time::Duration::from_millis(1));
                    }
                    hold.settle(unacknowledged);
                }
            },
        )
        .probe_with(completed);
}
