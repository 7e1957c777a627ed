//! Places set aside on agents for launches that claim their job in their own transaction
//! ([`crate::lifecycle::Lifecycle::launch`]). A [`Reservation`] is a guard: the place counts in
//! the agent's load from the moment the scheduler grants it until the launch hands the claimed
//! job over ([`Reservation::claimed`]) or the guard is dropped — whatever stopped the launch
//! (a refused claim, an error, a caller gone away), the place comes back.

use tokio::sync::mpsc;

use super::{Event, LaunchReads};
use crate::lifecycle::Attempt;
use crate::model::{AgentId, Job, Playbook, Server};

/// A place on one session of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub agent: AgentId,
    pub(super) session: u64,
}

/// A place granted to a launch; given back when dropped unless its job was claimed on it.
#[derive(Debug)]
pub struct Reservation {
    place: Place,
    scheduler: Option<mpsc::UnboundedSender<Event>>,
}

impl Reservation {
    pub(super) fn new(place: Place, scheduler: mpsc::UnboundedSender<Event>) -> Reservation {
        Reservation {
            place,
            scheduler: Some(scheduler),
        }
    }

    pub fn agent(&self) -> AgentId {
        self.place.agent
    }

    /// The launch claimed `job` on this place: the scheduler hands it over, and the place stays
    /// taken until the job frees it. `playbook`: the job's, as the launch read it; `reads`:
    /// the other rows its assignment needs, when the launch read them.
    pub fn claimed(
        mut self,
        job: Job,
        server: Server,
        playbook: Option<Playbook>,
        reads: Option<LaunchReads>,
        attempt: Attempt,
    ) {
        if let Some(tx) = self.scheduler.take() {
            let _ = tx.send(Event::Claimed {
                place: self.place,
                job: Box::new(job),
                server: Box::new(server),
                playbook: playbook.map(Box::new),
                reads: reads.map(Box::new),
                attempt,
            });
        }
    }

    /// Gives the place back without a scheduler to tell (the scheduler itself, whose answer
    /// found no one waiting).
    pub(super) fn forget(mut self) -> Place {
        self.scheduler = None;
        self.place
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(tx) = self.scheduler.take() {
            let _ = tx.send(Event::Unreserve(self.place));
        }
    }
}
