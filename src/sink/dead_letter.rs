//! The dead-letter sink: rejected and late records as JSON lines with their reason and raw text.

use std::io::Write;

use serde::Serialize;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::{probe, Probe};
use timely::dataflow::Stream;

use crate::dataflow::Time;
use crate::event::DeadLetter;

#[derive(Serialize)]
struct DeadLetterLine<'a> {
    reason: &'static str,
    detail: String,
    origin: &'a str,
    raw: &'a str,
}

/// Writes `dead_letters` to `out` on worker 0, one JSON object per line.
/// `completed` is attached after it, so its frontier covers written dead letters.
pub fn write_dead_letters(
    dead_letters: Stream<'_, Time, Vec<DeadLetter>>,
    mut out: Option<Box<dyn Write>>,
    completed: &probe::Handle<Time>,
) {
    dead_letters
        .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Exchange::new(|_: &DeadLetter| 0u64),
            "Sink: DeadLetters",
            move |_capability, _info| {
                move |(input, frontier), _output| {
                    let mut wrote = false;
                    input.for_each(|_time, data| {
                        let Some(out) = out.as_mut() else { return };
                        for dead in data.drain(..) {
                            let line = DeadLetterLine {
                                reason: dead.reason.code(),
                                detail: dead.reason.to_string(),
                                origin: &dead.origin,
                                raw: &dead.raw,
                            };
                            let written = serde_json::to_writer(&mut *out, &line)
                                .map_err(std::io::Error::from)
                                .and_then(|()| out.write_all(b"\n"));
                            if let Err(e) = written {
                                eprintln!("recflow: cannot write a dead letter: {e}");
                            }
                            wrote = true;
                        }
                    });
                    if let Some(out) = out.as_mut() {
                        if wrote || frontier.is_empty() {
                            let _ = out.flush();
                        }
                    }
                }
            },
        )
        .probe_with(completed);
}
