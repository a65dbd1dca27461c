//! Driving one worker's dataflow to the end of its input: `recflow run` and `recflow eval` build
//! different dataflows behind the same ingest operator, and step their workers the same way,
//! until every result up to where the stream's results are final is out.

use std::time::Duration;

use timely::dataflow::operators::probe;
use timely::worker::Worker;

use crate::event_time::Time;
use crate::progress::StreamEnd;

/// How long a worker with nothing to do parks before looking again.
const PARK: Duration = Duration::from_millis(50);

/// One worker's dataflow, from before it is built until it is dropped.
pub struct WorkerDriver {
    /// Passes a time once every result up to it is out: the sinks attach it after themselves.
    pub completed: probe::Handle<Time>,
    /// Where the stream ended, once every reader knows.
    pub end: StreamEnd,
    dataflow: usize,
}

/// How a driven dataflow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driven {
    /// Every result is out.
    Complete,
    /// The caller stopped it first (a fault elsewhere).
    Stopped,
}

impl WorkerDriver {
    /// A driver for the next dataflow `worker` builds: build it with [`Self::completed`] and
    /// [`Self::end`], then call [`Self::until_complete`].
    pub fn new(worker: &mut Worker) -> WorkerDriver {
        WorkerDriver {
            completed: probe::Handle::new(),
            end: StreamEnd::default(),
            dataflow: worker.next_dataflow_index(),
        }
    }

    /// Whether every result is out: the output frontier has passed the time by which the
    /// stream's results are final and the readers are done (expiries past the end of the data
    /// are not computed), or the dataflow has drained entirely.
    pub fn complete(&self) -> bool {
        self.completed.done()
            || (self.end.drained() && self.end.get().is_some_and(|ends| !self.completed.less_than(&ends.complete)))
    }

    /// Steps `worker` until the dataflow is complete, asking `stop` before each step whether to
    /// give up and calling `after_step` after each; then drops the dataflow.
    pub fn until_complete(
        self,
        worker: &mut Worker,
        mut stop: impl FnMut() -> bool,
        mut after_step: impl FnMut(),
    ) -> Driven {
        let mut driven = Driven::Complete;
        while !self.complete() {
            if stop() {
                driven = Driven::Stopped;
                break;
            }
            worker.step_or_park(Some(PARK));
            after_step();
        }
        worker.drop_dataflow(self.dataflow);
        driven
    }
}

/// Whether this process is the first of the run (the only one, unless `config` is a cluster):
/// the one that reads a single input, serves and reports.
pub fn is_first_process(config: &timely::Config) -> bool {
    match &config.communication {
        timely::CommunicationConfig::Cluster { process, .. } => *process == 0,
        _ => true,
    }
}
