//! A private MariaDB server for one test, on its own port and data directory, so the test may
//! stop and restart it without disturbing the shared server other tests use.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PrivateMariaDb {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Server options beyond the defaults (TLS, say).
    extra: Vec<String>,
    /// The TLS material, if any, kept as long as the server.
    certs: Option<tempfile::TempDir>,
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl PrivateMariaDb {
    /// Initialises a data directory and starts the server.
    pub fn start() -> PrivateMariaDb {
        PrivateMariaDb::start_with(Vec::new())
    }

    /// A server that accepts only TLS over TCP, with a certificate for 127.0.0.1 and
    /// localhost issued by a CA made here; returns the server and the CA's PEM path.
    pub fn start_tls() -> (PrivateMariaDb, PathBuf) {
        PrivateMariaDb::start_tls_for(&["127.0.0.1", "localhost"])
    }

    /// [`PrivateMariaDb::start_tls`] with a certificate for these names only (so that a
    /// client verifying the host name can be shown one it does not match).
    pub fn start_tls_for(names: &[&str]) -> (PrivateMariaDb, PathBuf) {
        let certs_dir = tempfile::tempdir().expect("certs dir");
        let certs = certs_dir.path().to_path_buf();
        let ca = outpost_protocol::pki::Ca::generate("test MariaDB CA", Duration::from_secs(86400))
            .expect("CA");
        let server = ca
            .issue_server(
                &names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                Duration::from_secs(86400),
            )
            .expect("server certificate");
        let write = |name: &str, pem: &str| {
            let path = certs.join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        let ca_path = write("ca.pem", &ca.cert_pem());
        let cert = write("server.pem", &server.cert_pem);
        let key = write("server.key", &server.key_pem);
        let mut db = PrivateMariaDb::start_with(vec![
            format!("--ssl-ca={}", ca_path.display()),
            format!("--ssl-cert={}", cert.display()),
            format!("--ssl-key={}", key.display()),
            "--require-secure-transport=ON".into(),
        ]);
        db.certs = Some(certs_dir);
        (db, ca_path)
    }

    fn start_with(extra: Vec<String>) -> PrivateMariaDb {
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
            port: free_tcp_port(),
            dir,
            child: None,
            extra,
            certs: None,
        };
        db.spawn();
        db.exec("CREATE DATABASE outpost CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci");
        db
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("server.log"))
            .expect("log");
        let child = Command::new("/usr/sbin/mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", self.path("data").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
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
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "private MariaDB did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
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

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/outpost", self.port)
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
