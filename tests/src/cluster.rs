//! A controller process on a fresh database with its PKI, and a [`World`] on the same
//! database: the starting point of most whole-system tests.

use crate::procs::{Agent, AgentOpts, Controller, ControllerOpts};
use crate::world::World;
use crate::{Backend, TestDb};

pub struct Cluster {
    pub world: World,
    pub ctl: Controller,
    pub data: tempfile::TempDir,
    // Dropped last: the processes must be gone before the database is.
    pub db: TestDb,
}

impl Cluster {
    pub async fn start(backend: Backend, opts: ControllerOpts) -> Cluster {
        let db = TestDb::new(backend).await;
        let data = tempfile::tempdir().expect("data dir");
        let world = World::new(&db.url).await;
        Controller::init(data.path(), &db.url);
        let ctl = Controller::start(data.path(), &db.url, "ctl-a", opts);
        Cluster {
            world,
            ctl,
            data,
            db,
        }
    }

    /// Enrols an agent and starts it against the controller.
    pub fn agent(&self, name: &str, labels: &[&str], opts: &AgentOpts) -> Agent {
        let mut a = Agent::enroll(&self.ctl, name, labels);
        a.start(&[self.ctl.agents], opts);
        a
    }
}
