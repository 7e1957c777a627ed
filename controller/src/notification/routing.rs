//! Which channels an event goes to, and how: a pure function of the event, the rules and the
//! channels' on-call / digest marks.
//!
//! With no rules configured, the default rule set is the seed's priority routing: critical
//! and high → every channel marked on-call, at once; medium and low → every channel marked
//! digest, batched. Once any rule exists, only rules route.

use crate::model::TicketPriority;

use super::{DeliveryMode, Event, NotificationEvent};

/// A rule as routing reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub event: NotificationEvent,
    pub environment: Option<String>,
    pub min_priority: Option<TicketPriority>,
    /// (key, value) of a server tag / agent label.
    pub label: Option<(String, String)>,
    pub channel: i32,
    pub mode: DeliveryMode,
}

/// A channel's marks for the default rule set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    pub channel: i32,
    pub on_call: bool,
    pub digest: bool,
}

/// Parses a routing label `key=value`.
pub fn parse_label(s: &str) -> Option<(String, String)> {
    let (k, v) = s.split_once('=')?;
    let (k, v) = (k.trim(), v.trim());
    (!k.is_empty() && !v.is_empty()).then(|| (k.to_owned(), v.to_owned()))
}

fn matches(rule: &Rule, e: &Event) -> bool {
    let kind =
        rule.event == e.kind || (rule.event == NotificationEvent::TicketOpened && e.opened_ticket);
    let env = match &rule.environment {
        None => true,
        Some(want) => e
            .environment
            .as_deref()
            .is_some_and(|have| have.eq_ignore_ascii_case(want)),
    };
    let priority = rule.min_priority.is_none_or(|p| e.priority >= p);
    let label = match &rule.label {
        None => true,
        Some((k, v)) => e.labels.get(k) == Some(v),
    };
    kind && env && priority && label
}

/// The channels `event` goes to, each once (immediate wins over digest), in channel order.
pub fn route(event: &Event, rules: &[Rule], channels: &[Marks]) -> Vec<(i32, DeliveryMode)> {
    let mut out: Vec<(i32, DeliveryMode)> = Vec::new();
    let mut add =
        |channel: i32, mode: DeliveryMode| match out.iter_mut().find(|(c, _)| *c == channel) {
            Some(slot) if mode == DeliveryMode::Immediate => slot.1 = mode,
            Some(_) => {}
            None => out.push((channel, mode)),
        };
    if rules.is_empty() {
        let urgent = event.priority >= TicketPriority::High;
        for c in channels {
            if urgent && c.on_call {
                add(c.channel, DeliveryMode::Immediate);
            } else if !urgent && c.digest {
                add(c.channel, DeliveryMode::Digest);
            }
        }
    } else {
        for r in rules.iter().filter(|r| matches(r, event)) {
            add(r.channel, r.mode);
        }
    }
    out.sort_by_key(|(c, _)| *c);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(priority: TicketPriority, env: &str) -> Event {
        let mut e = Event::new(NotificationEvent::JobFailed, priority, "x".into());
        e.environment = Some(env.into());
        e.opened_ticket = true;
        e.labels.insert("dc".into(), "fra1".into());
        e
    }

    const CHANNELS: &[Marks] = &[
        Marks {
            channel: 1,
            on_call: true,
            digest: false,
        },
        Marks {
            channel: 2,
            on_call: false,
            digest: true,
        },
        Marks {
            channel: 3,
            on_call: true,
            digest: true,
        },
    ];

    #[test]
    fn default_rules_send_urgent_to_on_call_and_the_rest_to_the_digest() {
        let high = route(&failed(TicketPriority::High, "production"), &[], CHANNELS);
        assert_eq!(
            high,
            vec![(1, DeliveryMode::Immediate), (3, DeliveryMode::Immediate)]
        );
        let crit = route(
            &failed(TicketPriority::Critical, "production"),
            &[],
            CHANNELS,
        );
        assert_eq!(crit, high);
        let low = route(&failed(TicketPriority::Low, "dev"), &[], CHANNELS);
        assert_eq!(
            low,
            vec![(2, DeliveryMode::Digest), (3, DeliveryMode::Digest)]
        );
        let medium = route(&failed(TicketPriority::Medium, "staging"), &[], CHANNELS);
        assert_eq!(medium, low);
    }

    fn rule(event: NotificationEvent, channel: i32, mode: DeliveryMode) -> Rule {
        Rule {
            event,
            environment: None,
            min_priority: None,
            label: None,
            channel,
            mode,
        }
    }

    #[test]
    fn rules_filter_by_environment_priority_and_label() {
        let mut r = rule(NotificationEvent::JobFailed, 7, DeliveryMode::Immediate);
        r.environment = Some("Production".into());
        r.min_priority = Some(TicketPriority::High);
        r.label = parse_label("dc=fra1");
        let rules = [r.clone()];
        assert_eq!(
            route(
                &failed(TicketPriority::High, "production"),
                &rules,
                CHANNELS
            ),
            vec![(7, DeliveryMode::Immediate)]
        );
        assert!(route(
            &failed(TicketPriority::Medium, "production"),
            &rules,
            CHANNELS
        )
        .is_empty());
        assert!(route(&failed(TicketPriority::High, "staging"), &rules, CHANNELS).is_empty());
        let mut other_dc = failed(TicketPriority::High, "production");
        other_dc.labels.insert("dc".into(), "ams1".into());
        assert!(route(&other_dc, &rules, CHANNELS).is_empty());
        // Rules exist: the default set no longer routes anything.
        let recovered = Event::new(
            NotificationEvent::JobRecovered,
            TicketPriority::High,
            "x".into(),
        );
        assert!(route(&recovered, &rules, CHANNELS).is_empty());
    }

    #[test]
    fn a_ticket_rule_matches_the_ticket_a_failure_opens_and_a_channel_gets_it_once() {
        let mut t = rule(NotificationEvent::TicketOpened, 4, DeliveryMode::Digest);
        t.min_priority = Some(TicketPriority::Medium);
        let rules = [
            t,
            rule(NotificationEvent::JobFailed, 4, DeliveryMode::Immediate),
        ];
        assert_eq!(
            route(
                &failed(TicketPriority::High, "production"),
                &rules,
                CHANNELS
            ),
            vec![(4, DeliveryMode::Immediate)]
        );
        let mut no_ticket = failed(TicketPriority::High, "production");
        no_ticket.opened_ticket = false;
        no_ticket.kind = NotificationEvent::AgentOffline;
        assert!(route(&no_ticket, &rules, CHANNELS).is_empty());
    }

    #[test]
    fn labels_parse_as_key_equals_value() {
        assert_eq!(
            parse_label(" dc = fra1 "),
            Some(("dc".into(), "fra1".into()))
        );
        assert_eq!(parse_label("dc"), None);
        assert_eq!(parse_label("=x"), None);
    }
}
