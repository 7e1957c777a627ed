//! A private MariaDB server for one test, on its own port and data directory, so the test may
//! stop and restart it without disturbing the shared server other tests use.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PrivateMariaDb {
    /// A loopback address of this server's own (see [`own_loopback`]).
    pub host: std::net::Ipv4Addr,
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Server options beyond the defaults (TLS, say).
    extra: Vec<String>,
    /// The TLS material, if any, kept as long as the server.
    certs: Option<tempfile::TempDir>,
}

/// MariaDB's own port: below the kernel's ephemeral range (32768 and up), so no socket bound to
/// port 0 — how every other test process listens — is ever given it.
const PORT: u16 = 3306;

/// A random address of 127.0.0.0/8 other than 127.0.0.1 (where the shared server listens):
/// with [`PORT`] it makes an address only this server binds, unlike a port picked by binding
/// port 0 and releasing it for mariadbd to bind later, which another process may take in
/// between. It stays this server's across a restart. Two private servers drawing the same
/// address (one chance in millions) is seen at start-up and drawn again.
pub(crate) fn own_loopback() -> std::net::Ipv4Addr {
    let b = *uuid::Uuid::new_v4().as_bytes();
    std::net::Ipv4Addr::new(127, b[0].max(1), b[1], b[2].clamp(1, 254))
}

/// In a certificate's list of names, stands for the server's own address ([`own_loopback`]),
/// which is drawn only when the server starts.
pub const OWN_ADDRESS: &str = "{own address}";

fn names_with(host: std::net::Ipv4Addr, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| match *n {
            OWN_ADDRESS => host.to_string(),
            n => n.to_owned(),
        })
        .collect()
}

impl PrivateMariaDb {
    /// Initialises a data directory and starts the server.
    pub fn start() -> PrivateMariaDb {
        PrivateMariaDb::start_with(Vec::new(), None)
    }

    /// A server started with these options beyond the defaults (`--log-bin`, `--server-id=2`…;
    /// a later option overrides a default, as `--log-bin` does `--skip-log-bin`).
    pub fn start_with_options(extra: &[&str]) -> PrivateMariaDb {
        PrivateMariaDb::start_with(extra.iter().map(|o| (*o).to_owned()).collect(), None)
    }

    /// A server that accepts only TLS over TCP, with a certificate for its own address,
    /// 127.0.0.1 and localhost, issued by a CA made here; returns the server and the CA's PEM path.
    pub fn start_tls() -> (PrivateMariaDb, PathBuf) {
        PrivateMariaDb::start_tls_for(&[OWN_ADDRESS, "127.0.0.1", "localhost"])
    }

    /// [`PrivateMariaDb::start_tls`] with a certificate for these names only (so that a
    /// client verifying the host name can be shown one it does not match).
    pub fn start_tls_for(names: &[&str]) -> (PrivateMariaDb, PathBuf) {
        let certs_dir = tempfile::tempdir().expect("certs dir");
        let certs = certs_dir.path().to_path_buf();
        let ca = outpost_protocol::pki::Ca::generate("test MariaDB CA", Duration::from_secs(86400))
            .expect("CA");
        // The certificate names the server's own address, which clients connect to.
        let host = own_loopback();
        let server = ca
            .issue_server(&names_with(host, names), Duration::from_secs(86400))
            .expect("server certificate");
        let write = |name: &str, pem: &str| {
            let path = certs.join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        let ca_path = write("ca.pem", &ca.cert_pem());
        let cert = write("server.pem", &server.cert_pem);
        let key = write("server.key", &server.key_pem);
        let mut db = PrivateMariaDb::start_with(
            vec![
                format!("--ssl-ca={}", ca_path.display()),
                format!("--ssl-cert={}", cert.display()),
                format!("--ssl-key={}", key.display()),
                "--require-secure-transport=ON".into(),
            ],
            Some(host),
        );
        db.certs = Some(certs_dir);
        (db, ca_path)
    }

    /// Starts a server with `extra` options on `host` (one its certificate names: kept), or on
    /// an address of its own drawn again if another server holds it.
    fn start_with(extra: Vec<String>, host: Option<std::net::Ipv4Addr>) -> PrivateMariaDb {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        let out = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args([
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .output()
            .expect("mariadb-install-db (apt-get install mariadb-server)");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut db = PrivateMariaDb {
            host: host.unwrap_or_else(own_loopback),
            port: PORT,
            dir,
            child: None,
            extra,
            certs: None,
        };
        let mut tries = 0;
        while let Err(taken) = db.try_spawn() {
            tries += 1;
            assert!(
                tries < 5 && host.is_none(),
                "private MariaDB cannot bind {}:{}: {taken}",
                db.host,
                db.port
            );
            db.host = own_loopback();
        }
        db.exec("CREATE DATABASE outpost CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci");
        db
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&mut self) {
        if let Err(taken) = self.try_spawn() {
            panic!(
                "private MariaDB cannot bind {}:{}: {taken}",
                self.host, self.port
            );
        }
    }

    /// Starts mariadbd and waits until it answers; `Err` (with its log) if its address was
    /// taken, panics on any other failure.
    fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("server.log"))
            .expect("log");
        let child = Command::new("/usr/sbin/mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.path("data").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--bind-address={}", self.host))
            .arg(format!("--socket={}", self.path("sock").display()))
            .arg(format!("--pid-file={}", self.path("pid").display()))
            .args([
                "--user=root",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=64M",
            ])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start mariadbd");
        self.child = Some(child);
        let start = Instant::now();
        while !self.ping() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    let log = std::fs::read_to_string(self.path("server.log")).unwrap_or_default();
                    if log.contains("Address already in use") {
                        return Err(log);
                    }
                    panic!("private MariaDB exited with {status} at start-up:\n{log}");
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "private MariaDB did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The admin client, over the server's own socket (allowed whatever TCP requires).
    fn client(&self) -> Command {
        let mut c = Command::new("mariadb");
        c.args([
            "-uroot",
            &format!("--socket={}", self.path("sock").display()),
        ]);
        c
    }

    fn ping(&self) -> bool {
        self.client()
            .args(["-e", "SELECT 1"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    pub fn exec(&self, sql: &str) {
        let out = self
            .client()
            .args(["-e", sql])
            .output()
            .expect("mariadb client");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// What `sql` prints, tab-separated without column names (`mariadb -N -B`).
    pub fn query(&self, sql: &str) -> String {
        let out = self
            .client()
            .args(["-N", "-B", "-e", sql])
            .output()
            .expect("mariadb client");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn url(&self) -> String {
        format!("mysql://root@{}:{}/outpost", self.host, self.port)
    }

    /// A clean shutdown (SIGTERM), waiting for the process to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
