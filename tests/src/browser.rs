//! A headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`), for
//! the web UI's tests. Each browser has its own chromedriver on a port it chose itself and
//! its own profile; every page a test looks at can be saved as a screenshot under
//! `target/ui-screenshots/`, so that a person can see what the test saw.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};

const INSTALL_HINT: &str =
    "the web UI tests need Debian's chromium and chromium-driver: apt-get install chromium chromium-driver (bash scripts/test installs them)";

pub struct Browser {
    pub client: Client,
    base: String,
    test: String,
    shots: PathBuf,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// Where screenshots go: `target/ui-screenshots/` of the workspace.
pub fn screenshot_dir() -> PathBuf {
    crate::workspace_root()
        .join("target")
        .join("ui-screenshots")
}

/// Starts one chromedriver on a port it picks and reads that port back from its output; on
/// failure, says how it ended and everything it printed.
fn spawn_driver() -> Result<(Child, u16), String> {
    let mut driver = Command::new("chromedriver")
        .arg("--port=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start chromedriver ({e}): {INSTALL_HINT}"));
    let (tx, rx) = std::sync::mpsc::channel();
    let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stdout = driver
        .stdout
        .take()
        .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>);
    let stderr = driver
        .stderr
        .take()
        .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>);
    for (stream, name) in [(stdout, "out"), (stderr, "err")] {
        let Some(stream) = stream else { continue };
        let (tx, output) = (tx.clone(), output.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|p| p.trim_end_matches('.').trim().parse::<u16>().ok())
                {
                    let _ = tx.send(port);
                }
                if let Ok(mut out) = output.lock() {
                    if out.len() < 200 {
                        out.push(format!("  {name}: {line}"));
                    }
                }
            }
        });
    }
    drop(tx);
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(port) => Ok((driver, port)),
        Err(e) => {
            let _ = driver.kill();
            let status = driver.wait().map(|s| s.to_string()).unwrap_or_default();
            // The reader threads end with the process; give them a moment to hand over.
            std::thread::sleep(Duration::from_millis(200));
            let printed = output.lock().map(|o| o.join("\n")).unwrap_or_default();
            let how = match e {
                std::sync::mpsc::RecvTimeoutError::Timeout => "no port within 20 s",
                std::sync::mpsc::RecvTimeoutError::Disconnected => "its output closed first",
            };
            Err(format!(
                "- {how}; it ended with {status}; it printed:\n{printed}"
            ))
        }
    }
}

impl Browser {
    /// A fresh headless browser pointed at `base` (the controller's API URL), for `test`.
    pub async fn start(base: &str, test: &str) -> Browser {
        for tool in ["chromium", "chromedriver"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            assert!(found, "{tool} not found: {INSTALL_HINT}");
        }
        // chromedriver has been seen to exit at once now and then on a loaded machine (the
        // port never printed, the cause unknown because its output was dropped): a fresh one
        // is tried again, and if none starts the failure carries what each one printed.
        let mut attempts = Vec::new();
        let (driver, port) = loop {
            match spawn_driver() {
                Ok(started) => break started,
                Err(why) => {
                    attempts.push(why);
                    if attempts.len() == 3 {
                        panic!(
                            "chromedriver did not say its port in 3 attempts ({INSTALL_HINT}):\n{}",
                            attempts.join("\n")
                        );
                    }
                }
            }
        };
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert("acceptInsecureCerts".into(), serde_json::json!(true));
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--ignore-certificate-errors",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = tokio::time::timeout(Duration::from_secs(60), async {
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
        })
        .await
        .unwrap_or_else(|_| panic!("chromium did not start within 60 s: {INSTALL_HINT}"))
        .unwrap_or_else(|e| panic!("cannot open a browser session ({e}): {INSTALL_HINT}"));
        std::fs::create_dir_all(screenshot_dir()).expect("screenshot dir");
        Browser {
            client,
            base: base.trim_end_matches('/').to_owned(),
            test: test.to_owned(),
            shots: screenshot_dir(),
            driver,
            _profile: profile,
        }
    }

    /// Opens a path of the controller.
    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
    }

    /// The path (and query) the browser is on.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current url");
        let mut p = url.path().to_owned();
        if let Some(q) = url.query() {
            p.push('?');
            p.push_str(q);
        }
        p
    }

    /// Saves what the browser shows as `<test>-<name>.png`; returns the file.
    pub async fn shot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.shots.join(format!("{}-{name}.png", self.test));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    pub async fn find(&self, css: &str) -> Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element '{css}' in {}: {e}", self.test))
    }

    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_default()
    }

    /// The text of the first element matching `css`, if there is one.
    pub async fn text(&self, css: &str) -> Option<String> {
        let el = self.client.find(Locator::Css(css)).await.ok()?;
        el.text().await.ok()
    }

    /// Waits until the text of `css` satisfies `ok`, or panics after `timeout` with what it was.
    pub async fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let t = self.text(css).await;
            if let Some(t) = t.as_deref().filter(|t| ok(t)) {
                return t.to_owned();
            }
            if tokio::time::Instant::now() > deadline {
                let _ = self.shot("timeout").await;
                panic!("timed out after {timeout:?} waiting on '{css}'; it said {t:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs a script in the page and returns what it returns.
    pub async fn js(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Runs a script that calls its last argument with its result.
    pub async fn js_async(&self, script: &str) -> serde_json::Value {
        self.client
            .execute_async(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Signs in through the sign-in page.
    pub async fn sign_in(&self, username: &str, password: &str) {
        self.goto("/login").await;
        self.find("#username")
            .await
            .send_keys(username)
            .await
            .expect("type username");
        self.find("#password")
            .await
            .send_keys(password)
            .await
            .expect("type password");
        self.find("form button[type=submit]")
            .await
            .click()
            .await
            .expect("sign in");
        crate::wait_for(
            "the dashboard after signing in",
            Duration::from_secs(20),
            || async { (self.path().await == "/").then_some(()) },
        )
        .await;
    }

    /// Ends the browser session and its driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // A test that panicked left its browser behind: end what runs on this profile only.
        let _ = Command::new("pkill")
            .args(["-f", &self._profile.path().display().to_string()])
            .status();
    }
}
