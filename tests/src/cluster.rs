//! A controller process on a fresh database with its PKI, and a [`World`] on the same
//! database: the starting point of most whole-system tests.

use crate::fleet::Fleet;
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
        Cluster::start_named(backend, opts, &[]).await
    }

    /// [`Cluster::start`] with a controller certificate for these names (see
    /// [`Controller::init_named`]).
    pub async fn start_named(backend: Backend, opts: ControllerOpts, names: &[String]) -> Cluster {
        let db = TestDb::new(backend).await;
        let data = tempfile::tempdir().expect("data dir");
        let world = World::new(&db.url).await;
        Controller::init_named(data.path(), &db.url, names);
        let ctl = Controller::start(data.path(), &db.url, "ctl-a", opts);
        Cluster {
            world,
            ctl,
            data,
            db,
        }
    }

    /// A controller listening for agents on `fleet`'s bridge (start the fleet first; it must
    /// outlive the cluster's processes, so declare it before the cluster).
    pub async fn for_fleet(backend: Backend, fleet: &Fleet, opts: ControllerOpts) -> Cluster {
        let names = [
            "localhost".into(),
            "127.0.0.1".into(),
            fleet.host_ip().to_string(),
        ];
        Cluster::start_named(
            backend,
            ControllerOpts {
                agents_ip: fleet.host_ip(),
                ..opts
            },
            &names,
        )
        .await
    }

    /// Enrols the agent of datacenter `dc` (labelled `dc=<dc>`) and starts it inside the
    /// datacenter's namespace, with host key checking on, reaching the controller at
    /// `controller` (the controller's own address, or a relay's).
    pub fn fleet_agent(
        &self,
        fleet: &Fleet,
        dc: &str,
        controller: std::net::SocketAddr,
        opts: &AgentOpts,
    ) -> Agent {
        let mut a = Agent::enroll(&self.ctl, &format!("bastion-{dc}"), &[&format!("dc={dc}")]);
        a.start(
            &[controller],
            &AgentOpts {
                netns: Some(fleet.dc(dc).netns.clone()),
                host_key_checking: true,
                ..opts.clone()
            },
        );
        a
    }

    /// Enrols an agent and starts it against the controller.
    pub fn agent(&self, name: &str, labels: &[&str], opts: &AgentOpts) -> Agent {
        let mut a = Agent::enroll(&self.ctl, name, labels);
        a.start(&[self.ctl.agents], opts);
        a
    }
}
