//! What a delivery carries: the JSON body (webhooks, and what the outbox stores), the chat
//! text and the email's subject and body made from it.
//!
//! Every piece of text may come from a caller or a managed host: the JSON is built by serde
//! (no string splicing); chat text escapes `&`, `<`, `>` (so `<!channel>` or `<@here>` stays
//! text, not a mention or a link); control characters (terminal escapes, CR/LF) are replaced,
//! so nothing becomes a header, an SMTP command or a fake second line in a subject.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{Event, NotificationEvent};
use crate::text::fit_chars;

/// The most characters of one text field in a payload (error lines are long).
const FIELD_CHARS: usize = 2000;
/// A subject line's most characters.
const SUBJECT_CHARS: usize = 200;
/// The most items one digest lists in full; the rest are counted.
pub const DIGEST_ITEMS: usize = 100;

/// Control characters (ESC, CR, LF, NUL…) become spaces, tabs too.
pub fn plain_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Like [`plain_line`] but keeps line breaks (a body may have several lines).
fn plain_text(s: &str) -> String {
    s.replace("\r\n", "\n")
        .chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect()
}

/// Text fit for a field: bounded, control characters out (line breaks kept when `multiline`).
fn field(s: &str, multiline: bool) -> String {
    let s = fit_chars(s, FIELD_CHARS);
    if multiline {
        plain_text(&s)
    } else {
        plain_line(&s)
    }
}

/// The JSON body of a delivery of `event`.
pub fn build(event: &Event, delivery_id: &str, at: DateTime<Utc>) -> Value {
    let job = event.job.as_ref().map(|j| {
        json!({
            "id": j.id, "playbook": field(&j.playbook, false), "server": field(&j.server, false),
            "status": j.status, "error": j.error.as_deref().map(|e| field(e, true)),
        })
    });
    let ticket = event
        .ticket
        .as_ref()
        .map(|t| json!({"id": t.id, "title": field(&t.title, false), "priority": t.priority}));
    let agent = event
        .agent
        .as_ref()
        .map(|a| json!({"id": a.id, "name": field(&a.name, false)}));
    json!({
        "delivery_id": delivery_id,
        "event": event.kind,
        "summary": field(&event.summary, false),
        "priority": event.priority,
        "environment": event.environment.as_deref().map(|e| field(e, false)),
        "job": job,
        "ticket": ticket,
        "agent": agent,
        "link": event.link,
        "at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// The body of a digest: the items' bodies (each as stored), at most [`DIGEST_ITEMS`].
pub fn digest(items: &[Value], delivery_id: &str, at: DateTime<Utc>) -> Value {
    let shown: Vec<&Value> = items.iter().take(DIGEST_ITEMS).collect();
    json!({
        "delivery_id": delivery_id,
        "event": NotificationEvent::Digest,
        "summary": format!("{} notification(s)", items.len()),
        "count": items.len(),
        "items": shown,
        "at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// The body of a channel's "send a test".
pub fn test(channel: &str, delivery_id: &str, at: DateTime<Utc>) -> Value {
    json!({
        "delivery_id": delivery_id,
        "event": NotificationEvent::Test,
        "summary": format!("Test notification for channel {}", field(channel, false)),
        "at": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// The one-line summary a stored body carries.
pub fn summary_of(body: &Value) -> String {
    body.get("summary")
        .and_then(Value::as_str)
        .map(plain_line)
        .unwrap_or_default()
}

/// Escapes text for Slack's mrkdwn (Mattermost reads it the same): `&`, `<`, `>` are the
/// only characters that make links and mentions.
pub fn slack_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

fn line_of(body: &Value) -> String {
    let s = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
    let mut line = format!("[{}] {}", s("priority"), summary_of(body));
    if let Some(link) = body
        .get("link")
        .and_then(Value::as_str)
        .filter(|l| !l.is_empty())
    {
        line.push_str(&format!(" ({})", plain_line(link)));
    }
    line
}

/// The text of a chat message (the `text` of `{"text": …}`), escaped.
pub fn chat_text(body: &Value) -> String {
    let text = match body.get("items").and_then(Value::as_array) {
        Some(items) => {
            let mut t = format!("Outpost digest: {}", summary_of(body));
            for i in items {
                t.push_str("\n• ");
                t.push_str(&line_of(i));
            }
            t
        }
        None => {
            let mut t = format!("Outpost: {}", line_of(body));
            if let Some(err) = body.pointer("/job/error").and_then(Value::as_str) {
                t.push('\n');
                t.push_str(&plain_text(err));
            }
            t
        }
    };
    slack_escape(&text)
}

/// An email's subject: one line, bounded.
pub fn subject(body: &Value) -> String {
    let s = format!("[Outpost] {}", summary_of(body));
    fit_chars(&plain_line(&s), SUBJECT_CHARS).into_owned()
}

/// An email's plain-text body: the lines, then the JSON for machines.
pub fn email_text(body: &Value) -> String {
    let mut t = String::new();
    match body.get("items").and_then(Value::as_array) {
        Some(items) => {
            for i in items {
                t.push_str(&line_of(i));
                t.push('\n');
            }
        }
        None => {
            t.push_str(&line_of(body));
            t.push('\n');
            if let Some(err) = body.pointer("/job/error").and_then(Value::as_str) {
                t.push('\n');
                t.push_str(&plain_text(err));
                t.push('\n');
            }
        }
    }
    t.push_str("\n-- \n");
    t.push_str(&serde_json::to_string_pretty(body).unwrap_or_default());
    t.push('\n');
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TicketPriority;
    use crate::notification::{JobRef, TicketRef};

    fn hostile() -> Event {
        let mut e = Event::new(
            NotificationEvent::JobFailed,
            TicketPriority::High,
            "site.yml failed on <!channel> web1\r\nBcc: victim@example.com\x1b[31m".into(),
        );
        e.environment = Some("production".into());
        e.job = Some(JobRef {
            id: "6b0c".into(),
            playbook: "site.yml".into(),
            server: "web1 <@here> & <http://evil|click>".into(),
            status: "failed".into(),
            error: Some("fatal: boom <@here> & co\r\n\x1b]0;title\x07 <script>".into()),
        });
        e.ticket = Some(TicketRef {
            id: "t1".into(),
            title: "t".into(),
            priority: TicketPriority::High,
        });
        e.link = "/jobs/6b0c".into();
        e
    }

    #[test]
    fn the_body_carries_ids_names_and_the_link_with_text_as_data() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let b = build(&hostile(), "d-1", at);
        assert_eq!(b["delivery_id"], "d-1");
        assert_eq!(b["event"], "job_failed");
        assert_eq!(b["priority"], "high");
        assert_eq!(b["environment"], "production");
        assert_eq!(b["job"]["id"], "6b0c");
        assert_eq!(b["ticket"]["id"], "t1");
        assert_eq!(b["link"], "/jobs/6b0c");
        let summary = b["summary"].as_str().unwrap();
        assert!(!summary.contains('\r') && !summary.contains('\n') && !summary.contains('\x1b'));
        let err = b["job"]["error"].as_str().unwrap();
        assert!(!err.contains('\x1b') && !err.contains('\x07') && !err.contains('\r'));
    }

    #[test]
    fn chat_text_cannot_mention_or_link() {
        let b = build(&hostile(), "d-1", Utc::now());
        let t = chat_text(&b);
        assert!(!t.contains('<') && !t.contains('>'), "{t}");
        assert!(
            t.contains("&lt;!channel&gt;") && t.contains("&lt;@here&gt;"),
            "{t}"
        );
        assert!(t.contains("&amp;"));
        let d = digest(&[b.clone(), b], "d-2", Utc::now());
        let t = chat_text(&d);
        assert!(
            !t.contains('<') && t.contains("Outpost digest: 2 notification(s)"),
            "{t}"
        );
    }

    #[test]
    fn subjects_are_one_bounded_line() {
        let b = build(&hostile(), "d-1", Utc::now());
        let s = subject(&b);
        assert!(!s.contains('\r') && !s.contains('\n'), "{s:?}");
        assert!(s.starts_with("[Outpost] site.yml failed"));
        let long = Event::new(
            NotificationEvent::AgentOffline,
            TicketPriority::Low,
            "x".repeat(5000),
        );
        assert!(subject(&build(&long, "d", Utc::now())).chars().count() <= SUBJECT_CHARS);
        let text = email_text(&b);
        assert!(!text.contains('\x1b') && !text.contains('\r'));
    }

    #[test]
    fn digests_list_their_items_within_a_bound() {
        let one = build(&hostile(), "d", Utc::now());
        let many = vec![one; DIGEST_ITEMS + 5];
        let d = digest(&many, "d-9", Utc::now());
        assert_eq!(d["count"], DIGEST_ITEMS + 5);
        assert_eq!(d["items"].as_array().unwrap().len(), DIGEST_ITEMS);
    }
}
