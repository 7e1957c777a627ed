//! Following jobs' logs live: one Server-Sent Events stream per job, resumed with
//! `Last-Event-ID` where it was after any dropped connection (a controller restart, a network
//! blip), until the job's `end` event. Lines of several jobs are prefixed by their server.
//! Lines are the hosts' own output: shown escaped for the terminal unless `raw` (see
//! [`crate::terminal`]); the server's name in a prefix always is.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use outpost_api::client::Client;
use outpost_api::{JobStatus, LogEnd, LogLineView};

use crate::terminal;

/// How long a follower keeps trying to reconnect before it gives up.
const GIVE_UP: Duration = Duration::from_secs(600);

/// Follows one job from after line `after` to its end; returns the outcome. `raw`: print the
/// lines as they are, escape sequences included.
pub async fn follow(
    client: &Client,
    job: &str,
    after: i32,
    prefix: Option<&str>,
    raw: bool,
) -> anyhow::Result<LogEnd> {
    let prefix = prefix.map(|p| terminal::escape(p).into_owned());
    let print = |content: &str| {
        let content = if raw {
            content.into()
        } else {
            terminal::escape(content)
        };
        match &prefix {
            Some(p) => println!("[{p}] {content}"),
            None => println!("{content}"),
        }
    };
    let mut last = after;
    let mut down_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(250);
    loop {
        match stream_once(client, job, &mut last, &print).await {
            Ok(Some(end)) => return Ok(end),
            Ok(None) => {}
            Err(Refused(e)) => return Err(e.into()),
            Err(Dropped(reason)) => {
                let since = *down_since.get_or_insert_with(Instant::now);
                if since.elapsed() > GIVE_UP {
                    anyhow::bail!("lost the log stream of job {job} for over 10 minutes: {reason}");
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        if last > after {
            down_since = None;
        }
    }
}

enum StreamError {
    /// The API said no (a 4xx): retrying will not help.
    Refused(outpost_api::client::ApiError),
    /// The connection went away: resume.
    Dropped(String),
}
use StreamError::{Dropped, Refused};

async fn stream_once(
    client: &Client,
    job: &str,
    last: &mut i32,
    print: &impl Fn(&str),
) -> Result<Option<LogEnd>, StreamError> {
    let resp = client
        .jobs()
        .log_stream(job, *last)
        .map_err(Refused)?
        .send()
        .await
        .map_err(|e| Dropped(e.to_string()))?;
    if resp.status().is_client_error() {
        return Err(Refused(outpost_api::client::refusal(resp).await));
    }
    if !resp.status().is_success() {
        return Err(Dropped(format!("HTTP {}", resp.status())));
    }
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Dropped(e.to_string()))?;
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut event, mut data) = ("message".to_owned(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            match event.as_str() {
                "line" => {
                    let Ok(l) = serde_json::from_str::<LogLineView>(&data) else {
                        continue;
                    };
                    if l.line_number <= *last {
                        continue;
                    }
                    print(&l.content);
                    *last = l.line_number;
                }
                "end" => {
                    return serde_json::from_str::<LogEnd>(&data)
                        .map(Some)
                        .map_err(|e| Dropped(e.to_string()));
                }
                _ => {}
            }
        }
    }
    Ok(None)
}

/// The exit code for a set of outcomes: 0 all succeeded, 1 any failed, 2 any cancelled.
pub fn exit_code(statuses: &[JobStatus]) -> u8 {
    if statuses.contains(&JobStatus::Failed) {
        1
    } else if statuses.contains(&JobStatus::Cancelled) {
        2
    } else if statuses.iter().all(|s| *s == JobStatus::Success) {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_worst_outcome() {
        use JobStatus::*;
        assert_eq!(exit_code(&[Success, Success]), 0);
        assert_eq!(exit_code(&[Success, Cancelled]), 2);
        assert_eq!(exit_code(&[Cancelled, Failed]), 1);
    }
}
