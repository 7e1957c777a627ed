//! The MariaDB/MySQL client programs a backup runs (`mariadb-dump` or `mysqldump`, `mariadb` or
//! `mysql`), given the connection through a 0600 option file so that the password never
//! appears in a process's arguments.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use zeroize::Zeroizing;

use super::BackupError;

/// Where a MySQL database is, as the client programs are told.
pub(super) struct Connection {
    host: String,
    port: u16,
    user: String,
    password: Zeroizing<String>,
    pub(super) database: String,
    ssl_mode: Option<String>,
    ssl_ca: Option<String>,
    socket: Option<String>,
}

impl Connection {
    /// Reads `mysql://user:pass@host:port/db?ssl-mode=…&ssl-ca=…` (the controller's own URL).
    /// The database name must be a plain identifier: it is written into a `CREATE DATABASE`.
    pub(super) fn from_url(database_url: &str) -> Result<Connection, BackupError> {
        let redacted = crate::store::redact_url(database_url);
        let bad = |why: &str| BackupError::BadUrl(format!("{redacted}: {why}"));
        let url = url::Url::parse(database_url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "mysql" | "mariadb") {
            return Err(bad("not a mysql:// URL"));
        }
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| bad("the user or password is not valid UTF-8"))
        };
        let database = url.path().trim_start_matches('/').to_owned();
        if database.is_empty()
            || database.len() > 64
            || !database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        {
            return Err(bad(
                "the database name must be letters, digits, '_' or '$' (at most 64)",
            ));
        }
        let mut conn = Connection {
            host: url.host_str().unwrap_or("localhost").to_owned(),
            port: url.port().unwrap_or(3306),
            user: decode(url.username())?,
            password: Zeroizing::new(decode(url.password().unwrap_or(""))?),
            database,
            ssl_mode: None,
            ssl_ca: None,
            socket: None,
        };
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "ssl-mode" | "sslmode" => conn.ssl_mode = Some(v.to_ascii_uppercase()),
                "ssl-ca" | "sslca" => conn.ssl_ca = Some(v.into_owned()),
                "socket" => conn.socket = Some(v.into_owned()),
                _ => {}
            }
        }
        Ok(conn)
    }

    /// The `[client]` option file (mode 0600, removed when dropped). Options MySQL's clients
    /// lack are `loose-`, so either family reads the file.
    fn option_file(&self) -> Result<tempfile::NamedTempFile, BackupError> {
        let mut text = Zeroizing::new(String::from("[client]\n"));
        let mut set = |k: &str, v: &str| {
            text.push_str(k);
            text.push_str("=\"");
            text.push_str(&quote(v));
            text.push_str("\"\n");
        };
        set("host", &self.host);
        set("port", &self.port.to_string());
        set("user", &self.user);
        set("password", &self.password);
        if let Some(s) = &self.socket {
            set("socket", s);
        }
        if let Some(ca) = &self.ssl_ca {
            set("ssl-ca", ca);
        }
        match self.ssl_mode.as_deref() {
            Some("DISABLED") => text.push_str("loose-skip-ssl\nloose-ssl-mode=DISABLED\n"),
            Some("REQUIRED") => text.push_str("loose-ssl\nloose-ssl-mode=REQUIRED\n"),
            Some("VERIFY_CA") | Some("VERIFY_IDENTITY") => {
                text.push_str("loose-ssl\nloose-ssl-verify-server-cert\n");
            }
            _ => {}
        }
        // tempfile creates the file 0600.
        let mut f = tempfile::Builder::new()
            .prefix("outpost-client-")
            .tempfile()
            .map_err(|e| BackupError::io("a client option file", e))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.flush())
            .map_err(|e| BackupError::io("a client option file", e))?;
        Ok(f)
    }

    /// Runs `program` (the first of `names` on PATH) with the option file, `args`, and
    /// `stdin`/`stdout` as given; fails with what it said on stderr.
    fn run(
        &self,
        names: &'static [&'static str],
        args: &[&str],
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<Vec<u8>, BackupError> {
        let program = find(names)?;
        let options = self.option_file()?;
        // --defaults-extra-file must come first.
        let out = Command::new(&program)
            .arg(format!(
                "--defaults-extra-file={}",
                options.path().display()
            ))
            .args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| BackupError::io("the MySQL client", e))?;
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stderr);
            let said = crate::text::fit_chars(said.trim(), 2000);
            return Err(BackupError::Client {
                program: program.display().to_string(),
                detail: said.into_owned(),
            });
        }
        Ok(out.stdout)
    }

    /// Dumps the database, consistently (one transaction), into `out`.
    pub(super) fn dump(&self, out: File) -> Result<(), BackupError> {
        self.run(
            &["mariadb-dump", "mysqldump"],
            &[
                "--single-transaction",
                "--quick",
                "--triggers",
                "--hex-blob",
                "--no-tablespaces",
                "--default-character-set=utf8mb4",
                "--",
                &self.database,
            ],
            Stdio::null(),
            Stdio::from(out),
        )
        .map(drop)
    }

    /// Feeds a dump to the database.
    pub(super) fn load(&self, dump: File) -> Result<(), BackupError> {
        self.run(
            &["mariadb", "mysql"],
            &["--default-character-set=utf8mb4", "--", &self.database],
            Stdio::from(dump),
            Stdio::null(),
        )
        .map(drop)
    }

    /// Runs one statement without a default database and returns its first column.
    pub(super) fn query(&self, sql: &str) -> Result<String, BackupError> {
        let out = self.run(
            &["mariadb", "mysql"],
            &["-N", "-B", "-e", sql],
            Stdio::null(),
            Stdio::piped(),
        )?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }
}

/// The first of `names` found on PATH.
fn find(names: &'static [&'static str]) -> Result<PathBuf, BackupError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(BackupError::ToolMissing(names.join(" or ")))
}

/// An option-file value between double quotes: backslash escapes as the client reads them.
fn quote(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_the_connection_and_refuse_odd_database_names() {
        let c = Connection::from_url("mysql://op%40x:p%22w%5C@db.example:3307/outpost_1?ssl-mode=verify_ca&ssl-ca=/etc/ca.pem").unwrap();
        assert_eq!(c.user, "op@x");
        assert_eq!(c.password.as_str(), "p\"w\\");
        assert_eq!((c.host.as_str(), c.port), ("db.example", 3307));
        assert_eq!(c.ssl_mode.as_deref(), Some("VERIFY_CA"));
        assert!(Connection::from_url("mysql://root@h/bad`name").is_err());
        assert!(Connection::from_url("mysql://root@h/").is_err());
        assert!(Connection::from_url("sqlite:///x.db").is_err());
    }

    #[test]
    fn option_values_are_quoted_so_a_password_cannot_add_an_option() {
        assert_eq!(quote("a\"b\\c\nhost=evil"), "a\\\"b\\\\c\\nhost=evil");
        let c = Connection::from_url("mysql://u:a%0Ahost%3Devil@h/db").unwrap();
        let f = c.option_file().unwrap();
        let text = std::fs::read_to_string(f.path()).unwrap();
        assert_eq!(text.lines().filter(|l| l.starts_with("host=")).count(), 1);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(f.path()).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
