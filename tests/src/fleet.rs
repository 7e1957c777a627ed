//! A test fleet: each datacenter is a network namespace made by the test, with its own sshd
//! serving one "nearby server", and an uplink (a veth pair) to a bridge in the host namespace
//! where the controller listens. ansible reaches the server over real SSH with host key checking
//! on; the agent, started inside the namespace, reaches the controller only through its uplink,
//! so taking the uplink down cuts that datacenter off as a pulled cable would.
//!
//! Addresses: the bridge is 10.251.S.1/24 and datacenter i's uplink 10.251.S.(10+i), where S is
//! a slot this fleet holds alone (tests run side by side); datacenter i's server answers on
//! 10.252.S.(10+i), an address on the namespace's own loopback, so it stays reachable from the
//! bastion while the uplink is down, and from nowhere else.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use outpost_controller::model::Server;
use outpost_controller::store::audit::Actor;
use outpost_controller::store::servers::NewServer;

use crate::run_ok;
use crate::world::World;

const SLOTS: &str = "/tmp/outpost-fleet-slots";

/// Runs `ip` with `args`; panics with what it said when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("cannot run ip(8): {e}. Install iproute2 (apt-get install iproute2)")
    });
    assert!(
        out.status.success(),
        "`ip {}` failed: {}. The test fleet needs root and network namespaces (ip netns add).",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Holds one of 250 address slots alone, in a file made with O_EXCL; a slot whose holder died
/// (a killed test) is cleaned of its leftovers and taken.
fn take_slot() -> u8 {
    std::fs::create_dir_all(SLOTS).expect("slot directory");
    let me = std::process::id().to_string();
    for slot in 1..=250u8 {
        let path = Path::new(SLOTS).join(slot.to_string());
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path);
        match created {
            Ok(_) => {
                std::fs::write(&path, &me).expect("slot file");
                leftovers(slot);
                return slot;
            }
            Err(_) => {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok());
                if holder.is_some_and(|p| !pid_alive(p)) {
                    let _ = std::fs::remove_file(&path);
                    if std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .is_ok()
                    {
                        std::fs::write(&path, &me).expect("slot file");
                        leftovers(slot);
                        return slot;
                    }
                }
            }
        }
    }
    panic!("all 250 test fleet slots under {SLOTS} are taken");
}

/// Kills every process left in `netns` (all of them this fleet's: agents, sshd, ansible's
/// ssh masters), then deletes it; a namespace with processes in it would outlive `ip netns del`.
fn remove_netns(netns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", netns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2) on a process of our own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", netns]).status();
}

/// Removes what a dead holder of `slot` left: its namespaces, uplinks and bridge.
fn leftovers(slot: u8) {
    let prefix = format!("opf{slot}-");
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(name) = line.split_whitespace().next() {
                if name.starts_with(&prefix) {
                    remove_netns(name);
                }
            }
        }
    }
    if let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() {
        let host_end = format!("opf{slot}h");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split(':').nth(1).unwrap_or("").trim();
            let name = name.split('@').next().unwrap_or("");
            if name.starts_with(&host_end) {
                let _ = Command::new("ip").args(["link", "del", name]).status();
            }
        }
    }
    let _ = Command::new("ip")
        .args(["link", "del", &format!("opf{slot}br")])
        .stderr(Stdio::null())
        .status();
}

/// The fleet: a bridge, an SSH client key, the known_hosts of every server, and datacenters.
pub struct Fleet {
    slot: u8,
    bridge: String,
    pub dir: tempfile::TempDir,
    /// The client key ansible logs in with (ssh_key_path of every server).
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub datacenters: Vec<Datacenter>,
}

/// One datacenter: a namespace with an uplink and an sshd.
pub struct Datacenter {
    pub name: String,
    pub netns: String,
    /// The uplink's address inside the namespace.
    pub uplink: Ipv4Addr,
    /// The address of its server (where sshd listens).
    pub server_ip: Ipv4Addr,
    uplink_dev: String,
    sshd: Child,
    sshd_log: PathBuf,
}

impl Fleet {
    /// A bridge in the host namespace and an SSH client key. Panics with the reason when
    /// namespaces cannot be made (not root, no iproute2, no sshd): the fleet tests do not fall
    /// back to anything.
    pub fn start() -> Fleet {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "/usr/sbin/sshd is missing: install openssh-server (bash scripts/test does)"
        );
        let slot = take_slot();
        let bridge = format!("opf{slot}br");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("10.251.{slot}.1/24"),
            "dev",
            &bridge,
        ]);
        ip(&["link", "set", &bridge, "up"]);
        let dir = tempfile::tempdir().expect("fleet dir");
        let key = dir.path().join("id_ed25519");
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "outpost-test", "-f"])
                .arg(&key),
            "ssh-keygen (install openssh-client)",
        );
        let pubkey = std::fs::read_to_string(key.with_extension("pub")).expect("public key");
        std::fs::write(dir.path().join("authorized_keys"), pubkey).expect("authorized_keys");
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(&known_hosts, "").expect("known_hosts");
        // sshd's privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        Fleet {
            slot,
            bridge,
            dir,
            key,
            known_hosts,
            datacenters: Vec::new(),
        }
    }

    /// The host end of every uplink: where the controller listens for this fleet's agents.
    pub fn host_ip(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 251, self.slot, 1))
    }

    /// Adds a datacenter named `name` (its namespace, uplink, sshd with a fresh host key that
    /// goes into known_hosts) and returns its index.
    pub fn add_datacenter(&mut self, name: &str) -> usize {
        let i = self.datacenters.len();
        let n = 10 + i as u8;
        let (slot, dir) = (self.slot, self.dir.path().join(name));
        std::fs::create_dir_all(&dir).expect("dc dir");
        let netns = format!("opf{slot}-{name}");
        let host_dev = format!("opf{slot}h{i}");
        let uplink_dev = format!("opf{slot}n{i}");
        let uplink = Ipv4Addr::new(10, 251, slot, n);
        let server_ip = Ipv4Addr::new(10, 252, slot, n);
        ip(&["netns", "add", &netns]);
        ip(&[
            "link",
            "add",
            &host_dev,
            "type",
            "veth",
            "peer",
            "name",
            &uplink_dev,
        ]);
        ip(&["link", "set", &host_dev, "master", &self.bridge]);
        ip(&["link", "set", &host_dev, "up"]);
        ip(&["link", "set", &uplink_dev, "netns", &netns]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{uplink}/24"),
            "dev",
            &uplink_dev,
        ]);
        ip(&["-n", &netns, "link", "set", &uplink_dev, "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{server_ip}/32"),
            "dev",
            "lo",
        ]);

        let host_key = dir.join("ssh_host_ed25519_key");
        run_ok(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&host_key),
            "ssh-keygen",
        );
        let host_pub = std::fs::read_to_string(host_key.with_extension("pub")).expect("host key");
        let mut kh = std::fs::read_to_string(&self.known_hosts).unwrap_or_default();
        kh.push_str(&format!("{server_ip} {host_pub}"));
        std::fs::write(&self.known_hosts, kh).expect("known_hosts");
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port 22\nListenAddress {server_ip}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nLogLevel VERBOSE\n\
                 MaxStartups 100\nMaxSessions 100\nSubsystem sftp internal-sftp\n",
                host_key.display(),
                dir.join("sshd.pid").display(),
                self.dir.path().join("authorized_keys").display(),
            ),
        )
        .expect("sshd_config");
        let sshd_log = dir.join("sshd.log");
        let log = std::fs::File::create(&sshd_log).expect("sshd log");
        let sshd = Command::new("ip")
            .args(["netns", "exec", &netns, "/usr/sbin/sshd", "-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let dc = Datacenter {
            name: name.to_owned(),
            netns,
            uplink,
            server_ip,
            uplink_dev,
            sshd,
            sshd_log,
        };
        crate::wait_blocking(
            &format!("sshd of {name} listening"),
            Duration::from_secs(20),
            || dc.sshd_log().contains("Server listening"),
        );
        self.datacenters.push(dc);
        i
    }

    pub fn dc(&self, name: &str) -> &Datacenter {
        self.datacenters
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no datacenter {name}"))
    }

    /// The host variables every fleet server gets: the interpreter on the target, the fleet's
    /// known_hosts with strict checking (never "accept whatever key answers"), and ssh control
    /// sockets of the fleet's own (ControlPersist masters of an earlier fleet on the same
    /// address would otherwise answer for this one's server).
    pub fn host_vars(&self) -> serde_json::Value {
        serde_json::json!({
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_control_path_dir": self.dir.path().join("cp").display().to_string(),
            "ansible_ssh_common_args": format!(
                "-o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
                self.known_hosts.display()
            ),
        })
    }

    /// Registers `dc`'s server as `hostname`, tagged `dc=<name>`, reached over SSH as root with
    /// the fleet's key.
    pub async fn register(&self, world: &World, dc: &str, hostname: &str) -> Server {
        let d = self.dc(dc);
        let mut s = NewServer::new(hostname, &d.server_ip.to_string(), "linux");
        s.ssh_port = 22;
        s.ssh_user = "root".into();
        s.ssh_key_path = Some(self.key.display().to_string());
        s.tags = Some(serde_json::json!({ "dc": dc }));
        s.environment = Some("staging".into());
        s.host_vars = Some(self.host_vars());
        world
            .store
            .create_server(&s, &Actor::user(world.admin.id))
            .await
            .expect("server")
    }

    /// The one-host inventory the agent writes for `server` (see the agent's runner), for
    /// running `ansible-playbook` directly against the same target.
    pub fn inventory(&self, server: &Server) -> serde_json::Value {
        self.ssh_inventory(
            &server.hostname,
            &server.ip_address,
            server.ssh_port,
            &server.ssh_user,
        )
    }

    /// A one-host inventory for `dc`'s sshd as `hostname`, reached as root with the fleet's
    /// key: the bastion an operator installs an agent on.
    pub fn bastion_inventory(&self, dc: &str, hostname: &str) -> serde_json::Value {
        self.ssh_inventory(hostname, &self.dc(dc).server_ip.to_string(), 22, "root")
    }

    fn ssh_inventory(&self, hostname: &str, ip: &str, port: i32, user: &str) -> serde_json::Value {
        let mut vars = serde_json::json!({
            "ansible_host": ip,
            "ansible_port": port,
            "ansible_user": user,
            "ansible_ssh_private_key_file": self.key.display().to_string(),
        });
        if let (Some(v), Some(h)) = (vars.as_object_mut(), self.host_vars().as_object()) {
            v.extend(h.clone());
        }
        serde_json::json!({ "all": { "hosts": { hostname: vars } } })
    }
}

impl Datacenter {
    /// `program` run inside this datacenter's namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns]).arg(program);
        c
    }

    /// Takes the uplink down: the controller and this datacenter's agent no longer hear each
    /// other; the server, on the namespace's loopback, stays reachable from the bastion.
    pub fn cut(&self) {
        ip(&["-n", &self.netns, "link", "set", &self.uplink_dev, "down"]);
    }

    /// Brings the uplink back (with its address and the route to the bridge).
    pub fn restore(&self) {
        ip(&["-n", &self.netns, "link", "set", &self.uplink_dev, "up"]);
    }

    pub fn sshd_log(&self) -> String {
        std::fs::read_to_string(&self.sshd_log).unwrap_or_default()
    }

    /// `ansible-playbook` run here by hand, as an operator would, with the environment the
    /// agent gives it; stdout and stderr as one stream, like the agent's log.
    pub fn ansible_playbook(
        &self,
        inventory: &serde_json::Value,
        playbook: &Path,
        extra_vars: &serde_json::Value,
    ) -> Output {
        let dir = tempfile::tempdir().expect("run dir");
        self.ansible_playbook_in(dir.path(), inventory, playbook, extra_vars)
    }

    /// [`ansible_playbook`](Self::ansible_playbook) run from `dir` (a checkout, where
    /// `playbook` may be a relative path), the inventory and variables kept outside it.
    pub fn ansible_playbook_in(
        &self,
        dir: &Path,
        inventory: &serde_json::Value,
        playbook: &Path,
        extra_vars: &serde_json::Value,
    ) -> Output {
        let files = tempfile::tempdir().expect("run files");
        let inv = files.path().join("inventory.yml");
        std::fs::write(&inv, inventory.to_string()).expect("inventory");
        let extra = files.path().join("extra_vars.json");
        std::fs::write(&extra, extra_vars.to_string()).expect("extra vars");
        let script = format!(
            "exec ansible-playbook -i '{}' -e '@{}' '{}' 2>&1",
            inv.display(),
            extra.display(),
            playbook.display()
        );
        self.command("sh")
            .args(["-c", &script])
            .current_dir(dir)
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("PYTHONUNBUFFERED", "1")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
            .env("ANSIBLE_HOST_KEY_CHECKING", "True")
            .output()
            .expect("run ansible-playbook")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for dc in &mut self.datacenters {
            if std::thread::panicking() {
                let log = dc.sshd_log();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                eprintln!(
                    "--- sshd of {} (tail) ---\n{}",
                    dc.name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            let _ = dc.sshd.kill();
            let _ = dc.sshd.wait();
            remove_netns(&dc.netns);
        }
        leftovers(self.slot);
        let _ = std::fs::remove_file(Path::new(SLOTS).join(self.slot.to_string()));
    }
}
