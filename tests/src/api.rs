//! Talking to a controller's HTTPS API in tests: signing in, extra users, and reading
//! Server-Sent Events.

use outpost_api::client::Client;
use outpost_api::LoginResponse;
use outpost_controller::model::{Role, User};
use outpost_controller::store::audit::Actor;
use outpost_controller::store::users::NewUser;

use crate::procs::Controller;
use crate::world::World;

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery";

/// Signs in and returns a client carrying the token.
pub async fn login(ctl: &Controller, username: &str, password: &str) -> Client {
    let anon = ctl.api();
    let resp: LoginResponse = anon
        .post(
            "/api/v1/auth/login",
            &serde_json::json!({"username": username, "password": password}),
        )
        .await
        .unwrap_or_else(|e| panic!("login as {username}: {e}"));
    anon.with_token(resp.token)
}

/// A user of `role` with [`PASSWORD`], ready to sign in.
pub async fn user(w: &World, name: &str, role: Role) -> User {
    w.store
        .create_user(
            &NewUser {
                username: name.into(),
                email: format!("{name}@example.com"),
                password: PASSWORD.into(),
                role,
                must_change_password: false,
            },
            &Actor::system(),
        )
        .await
        .expect("user")
}

/// The job `id`, read through the API, once it has ended (success, failed or cancelled).
pub async fn job_ended(api: &Client, id: &str) -> serde_json::Value {
    crate::wait_for(
        "the job to end",
        std::time::Duration::from_secs(180),
        || async {
            let j: serde_json::Value = api.get(&format!("/api/v1/jobs/{id}")).await.ok()?;
            matches!(
                j["status"].as_str(),
                Some("success" | "failed" | "cancelled")
            )
            .then_some(j)
        },
    )
    .await
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// The longest [`read_events`] reads one stream: longer than any test's job takes, so that a
/// stream that never ends (nor says `stop`) fails its test rather than hanging it.
pub const EVENTS_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Reads events from a response body until `stop` says so or the stream ends; panics if
/// neither happens within [`EVENTS_DEADLINE`].
pub async fn read_events(
    resp: reqwest::Response,
    mut stop: impl FnMut(&SseEvent) -> bool,
) -> Vec<SseEvent> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    let deadline = tokio::time::Instant::now() + EVENTS_DEADLINE;
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, body.next()).await else {
            panic!(
                "the event stream neither ended nor gave the awaited event within {EVENTS_DEADLINE:?}; \
                 {} events read, the last {:?}",
                out.len(),
                out.last()
            );
        };
        let Some(chunk) = next else { break };
        let Ok(chunk) = chunk else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut ev = SseEvent {
                id: None,
                event: "message".into(),
                data: String::new(),
            };
            let mut any = false;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    ev.id = Some(v.trim().to_owned());
                    any = true;
                } else if let Some(v) = line.strip_prefix("event:") {
                    ev.event = v.trim().to_owned();
                    any = true;
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !ev.data.is_empty() {
                        ev.data.push('\n');
                    }
                    ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    any = true;
                }
            }
            if !any {
                continue; // a keep-alive comment
            }
            let done = stop(&ev);
            out.push(ev);
            if done {
                return out;
            }
        }
    }
    out
}
