//! Real controller and agent processes, started from the workspace's built binaries, with
//! their logs in files (printed when a test fails).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A built binary of the workspace: the debug build for tests (`scripts/test` builds them all
/// before the tests run), the release build for benchmarks (compiled without debug assertions).
pub fn bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    let (profile, build) = if cfg!(debug_assertions) {
        (
            "debug",
            "cargo build --workspace --bins (bash scripts/test does)",
        )
    } else {
        ("release", "cargo build --release --workspace --bins")
    };
    let path = target.join(profile).join(name);
    assert!(
        path.exists(),
        "{} is missing: run `{build}` first",
        path.display()
    );
    path
}

/// `outpost-controller ARGS` for a data directory, with the database URL in the environment
/// (never in argv, where `ps` shows it) and stdin closed.
pub fn controller_command(data: &Path, database_url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("outpost-controller"));
    cmd.args(args)
        .arg("--data-dir")
        .arg(data)
        .env("OUTPOST_DATABASE_URL", database_url)
        .stdin(Stdio::null());
    cmd
}

/// The address after `key` in a log line (`agents=127.0.0.1:41234`).
fn bound_addr(line: &str, key: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split(|c: char| c.is_whitespace() || c == ',')
        .next()?
        .trim_matches('"')
        .parse()
        .ok()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Settings of a controller under test (fast timers so tests do not wait on defaults).
#[derive(Debug, Clone)]
pub struct ControllerOpts {
    pub agent_grace_secs: u64,
    pub idle_timeout_ms: u64,
    pub sweep_interval_ms: u64,
    pub job_time_limit_secs: u32,
    pub max_running_per_server: u32,
    /// Where the agents' and the enrolment endpoints listen (a test fleet's bridge, say); port
    /// 0 either way.
    pub agents_ip: std::net::IpAddr,
    pub extra: Vec<String>,
}

impl ControllerOpts {
    /// Notices a silent agent within 3 s: for tests that cut the network and need the session
    /// to die. Others keep a margin so that a loaded machine does not drop sessions.
    pub fn fast_failure() -> ControllerOpts {
        ControllerOpts {
            idle_timeout_ms: 3000,
            ..ControllerOpts::default()
        }
    }
}

impl Default for ControllerOpts {
    fn default() -> Self {
        ControllerOpts {
            agent_grace_secs: 30,
            idle_timeout_ms: 10_000,
            sweep_interval_ms: 300,
            job_time_limit_secs: 600,
            max_running_per_server: 1,
            agents_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            extra: Vec::new(),
        }
    }
}

/// The SHA-256 fingerprint of the CA in a controller's data directory.
pub fn ca_fingerprint(data_dir: &Path) -> String {
    let pem = std::fs::read_to_string(data_dir.join("pki").join("ca.pem")).expect("CA certificate");
    let certs = outpost_protocol::pki::certs_from_pem(&pem).expect("CA PEM");
    outpost_protocol::pki::fingerprint(&certs[0])
}

/// An `outpost-controller serve` process.
pub struct Controller {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub agents: SocketAddr,
    pub enroll: SocketAddr,
    /// The HTTPS API (TCP).
    pub api: SocketAddr,
    pub id: String,
    pub opts: ControllerOpts,
    log: PathBuf,
    child: Option<Child>,
}

impl Controller {
    /// Creates the PKI in `data_dir` (once per cluster).
    pub fn init(data_dir: &Path, database_url: &str) {
        Controller::init_named(data_dir, database_url, &[]);
    }

    /// [`Controller::init`] with the names and addresses agents reach it by (its certificate's
    /// subject alternative names; none: the command's defaults).
    pub fn init_named(data_dir: &Path, database_url: &str, names: &[String]) {
        let mut cmd = Command::new(bin("outpost-controller"));
        cmd.args(["init", "--data-dir"])
            .arg(data_dir)
            .args(["--database-url", database_url]);
        for n in names {
            cmd.args(["--name", n]);
        }
        let out = cmd
            .env_remove("OUTPOST_ADMIN_PASSWORD")
            .output()
            .expect("run init");
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `serve` on loopback ports the kernel picks (port 0) and waits until it is ready;
    /// the bound addresses are read back from its "controller ready" line.
    pub fn start(
        data_dir: &Path,
        database_url: &str,
        id: &str,
        opts: ControllerOpts,
    ) -> Controller {
        let mut c = Controller {
            data_dir: data_dir.to_path_buf(),
            database_url: database_url.to_owned(),
            agents: SocketAddr::new(opts.agents_ip, 0),
            enroll: SocketAddr::new(opts.agents_ip, 0),
            api: SocketAddr::from(([127, 0, 0, 1], 0)),
            id: id.to_owned(),
            opts,
            log: data_dir.join(format!("controller-{id}.log")),
            child: None,
        };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        let ready = |log: &Path| {
            std::fs::read_to_string(log)
                .unwrap_or_default()
                .matches("controller ready")
                .count()
        };
        let before = ready(&self.log);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let o = &self.opts;
        let child = Command::new(bin("outpost-controller"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--database-url", &self.database_url])
            .args([
                "--listen",
                &self.agents.to_string(),
                "--enroll-listen",
                &self.enroll.to_string(),
                "--api-listen",
                &self.api.to_string(),
            ])
            .args(["--controller-id", &self.id])
            .args(["--agent-grace-secs", &o.agent_grace_secs.to_string()])
            .args(["--idle-timeout-ms", &o.idle_timeout_ms.to_string()])
            .args(["--sweep-interval-ms", &o.sweep_interval_ms.to_string()])
            .args(["--job-time-limit-secs", &o.job_time_limit_secs.to_string()])
            .args([
                "--max-running-per-server",
                &o.max_running_per_server.to_string(),
            ])
            .args(["--heartbeat-secs", "1"])
            .args(&o.extra)
            .env("OUTPOST_LOG", "info,outpost_controller=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn controller");
        self.child = Some(child);
        let start = Instant::now();
        while ready(&self.log) <= before {
            if let Some(s) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "controller exited with {s} during start-up:\n{}",
                    tail(&self.log, 40)
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "controller not ready in 60 s:\n{}",
                tail(&self.log, 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let line = std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("controller ready"))
            .nth(before)
            .map(str::to_owned)
            .unwrap_or_default();
        self.agents = bound_addr(&line, "agents=").unwrap_or(self.agents);
        self.enroll = bound_addr(&line, "enroll=").unwrap_or(self.enroll);
        self.api = bound_addr(&line, "api=").unwrap_or(self.api);
        assert!(
            self.agents.port() != 0 && self.enroll.port() != 0 && self.api.port() != 0,
            "no bound addresses in the ready line: {line}"
        );
    }

    /// The API's base URL.
    pub fn api_url(&self) -> String {
        format!("https://{}", self.api)
    }

    /// The Outpost CA certificate (PEM), which the API's certificate chains to.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("pki").join("ca.pem")).expect("CA certificate")
    }

    /// The SHA-256 fingerprint of this controller's CA (what `outpost login` pins).
    pub fn ca_fingerprint(&self) -> String {
        ca_fingerprint(&self.data_dir)
    }

    /// An API client trusting this controller's CA, without a token.
    pub fn api(&self) -> outpost_api::client::Client {
        outpost_api::client::Client::new(&self.api_url(), &self.ca_pem()).expect("API client")
    }

    /// A one-time enrolment token for an agent named `name` with `labels` (k=v).
    pub fn token(&self, name: &str, labels: &[&str]) -> String {
        let mut cmd = Command::new(bin("outpost-controller"));
        cmd.arg("token")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--database-url", &self.database_url, "--name", name]);
        for l in labels {
            cmd.args(["--label", l]);
        }
        let out = cmd.output().expect("run token");
        assert!(
            out.status.success(),
            "token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(&child, libc::SIGTERM);
        wait_exit(&mut child, Duration::from_secs(60)).unwrap_or_else(|| {
            let _ = child.kill();
            panic!(
                "controller did not stop on SIGTERM:\n{}",
                tail(&self.log, 40)
            )
        })
    }

    /// SIGKILL: no shutdown at all.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the ports it had (agents were given that address).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill it first");
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- controller {} log (tail) ---\n{}",
                self.id,
                tail(&self.log, 60)
            );
        }
        self.kill();
    }
}

/// Settings of an agent under test.
#[derive(Debug, Clone)]
pub struct AgentOpts {
    pub capacity: u32,
    pub ansible_playbook: Option<PathBuf>,
    pub idle_timeout_ms: u64,
    pub drain_timeout_secs: u64,
    pub kill_grace_secs: u64,
    pub max_backoff_secs: u64,
    /// Off for servers reached with a local connection; the test fleet turns it on.
    pub host_key_checking: bool,
    /// The network namespace to run in (a test fleet's datacenter).
    pub netns: Option<String>,
}

impl AgentOpts {
    /// Notices a silent controller within 3 s (see [`ControllerOpts::fast_failure`]).
    pub fn fast_failure() -> AgentOpts {
        AgentOpts {
            idle_timeout_ms: 3000,
            ..AgentOpts::default()
        }
    }
}

impl Default for AgentOpts {
    fn default() -> Self {
        AgentOpts {
            capacity: 4,
            ansible_playbook: None,
            idle_timeout_ms: 10_000,
            drain_timeout_secs: 60,
            kill_grace_secs: 3,
            max_backoff_secs: 2,
            host_key_checking: false,
            netns: None,
        }
    }
}

/// An `outpost-agent` with its own state directory.
pub struct Agent {
    pub name: String,
    pub state_dir: PathBuf,
    _dir: tempfile::TempDir,
    log: PathBuf,
    child: Option<Child>,
}

impl Agent {
    /// Enrols a new agent through the controller's enrolment endpoint.
    pub fn enroll(ctl: &Controller, name: &str, labels: &[&str]) -> Agent {
        let agent = Agent::new(name);
        let token = ctl.token(name, labels);
        let out = agent.try_enroll(ctl.enroll, &token, &["--connect", &ctl.agents.to_string()]);
        assert!(
            out.status.success(),
            "enrol failed: {}",
            crate::output_text(&out)
        );
        agent
    }

    /// An agent with an empty state directory.
    pub fn new(name: &str) -> Agent {
        let dir = tempfile::tempdir().expect("agent dir");
        Agent {
            name: name.to_owned(),
            log: dir.path().join("agent.log"),
            state_dir: dir.path().join("state"),
            _dir: dir,
            child: None,
        }
    }

    /// Runs `outpost-agent enroll` and returns its output, whatever happens.
    pub fn try_enroll(
        &self,
        enroll: SocketAddr,
        token: &str,
        extra: &[&str],
    ) -> std::process::Output {
        Command::new(bin("outpost-agent"))
            .arg("enroll")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(["--controller", &enroll.to_string()])
            // As the README says to: never on the command line.
            .env("OUTPOST_ENROLL_TOKEN", token)
            .args(extra)
            .output()
            .expect("run enroll")
    }

    /// Runs the service against `controllers` (HOST:PORT; a proxy's address, say).
    pub fn start(&mut self, controllers: &[SocketAddr], opts: &AgentOpts) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let list: Vec<String> = controllers.iter().map(|a| a.to_string()).collect();
        // `ip netns exec` execs the agent, so the child's pid is the agent's.
        let mut cmd = match &opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("outpost-agent"));
                c
            }
            None => Command::new(bin("outpost-agent")),
        };
        cmd.arg("run")
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(["--controller", &list.join(",")])
            .args(["--capacity", &opts.capacity.to_string()])
            .args(["--idle-timeout-ms", &opts.idle_timeout_ms.to_string()])
            .args(["--drain-timeout-secs", &opts.drain_timeout_secs.to_string()])
            .args(["--kill-grace-secs", &opts.kill_grace_secs.to_string()])
            .args(["--max-backoff-secs", &opts.max_backoff_secs.to_string()])
            .args(["--host-key-checking", &opts.host_key_checking.to_string()])
            .env("OUTPOST_LOG", "info,outpost_agent=debug")
            // A secret of the agent's own environment, which ansible must not see.
            .env("OUTPOST_TEST_SECRET", "leak-me-not")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(p) = &opts.ansible_playbook {
            cmd.arg("--ansible-playbook").arg(p);
        }
        self.child = Some(cmd.spawn().expect("spawn agent"));
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: the agent gets no chance to clean up (its jobs' processes live on, as they
    /// would on a real host, until the agent restarts).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills what the agent's jobs left running (test hygiene after `kill9`).
    pub fn reap_orphans(&self) {
        let Ok(dirs) = std::fs::read_dir(self.state_dir.join("spool")) else {
            return;
        };
        for d in dirs.flatten() {
            if let Some(job) = d
                .file_name()
                .to_str()
                .and_then(|n| uuid::Uuid::parse_str(n).ok())
            {
                outpost_agent::runner::kill_job(job, None);
            }
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(&child, libc::SIGTERM);
        wait_exit(&mut child, timeout).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("agent did not stop on SIGTERM:\n{}", tail(&self.log, 40))
        })
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_exit(self.child.as_mut()?, timeout);
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid()?, "VmHWM")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- agent {} log (tail) ---\n{}",
                self.name,
                tail(&self.log, 60)
            );
        }
        self.kill9();
    }
}

/// A memory figure of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`, …), for tests and benches.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| {
            l.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// An enrolled agent's session driven by hand, past the controller's Welcome: for tests that
/// play an agent breaking the rules (a flood, an overlong line) with its real credentials.
pub struct HandSession {
    /// Kept: dropping it would close the connection.
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    pub session: outpost_protocol::codec::FramedStream<quinn::RecvStream, quinn::SendStream>,
}

impl HandSession {
    /// Connects as `agent` (enrolled, not running) to `ctl`'s agent port, says Hello with
    /// capacity 1 and no labels, and waits for the Welcome.
    pub async fn open(ctl: &Controller, agent: &Agent) -> HandSession {
        use outpost_protocol::message::{Down, Hello, Up};
        let state = outpost_agent::state::StateDir::new(&agent.state_dir);
        let (chain, key, ca) = state.credentials().expect("credentials");
        let cfg = outpost_protocol::tls::agent_client_config(
            &ca,
            chain,
            key,
            outpost_protocol::tls::Timers::default(),
        )
        .expect("client config");
        let endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("endpoint");
        let conn = endpoint
            .connect_with(cfg, ctl.agents, "localhost")
            .expect("connect")
            .await
            .expect("handshake");
        let (send, recv) = conn.open_bi().await.expect("session stream");
        let mut session = outpost_protocol::codec::FramedStream::new(recv, send);
        session
            .send(&Up::Hello(Hello {
                protocol_version: outpost_protocol::PROTOCOL_VERSION,
                agent_version: agent.name.clone(),
                hostname: agent.name.clone(),
                labels: vec![],
                capacity: 1,
                ansible_version: "none".into(),
                running: vec![],
                capabilities: vec![],
            }))
            .await
            .expect("Hello");
        let Some(Down::Welcome(_)) = session.recv::<Down>().await.expect("an answer") else {
            panic!("no Welcome for {}", agent.name)
        };
        HandSession {
            endpoint,
            conn,
            session,
        }
    }
}
