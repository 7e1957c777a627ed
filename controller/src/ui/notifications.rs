//! For admins: /admin/notifications — the channels, each with a "send a test" button, the
//! routing rules (or, with none, the default priority routing in words), and the delivery log
//! with each delivery's attempts, status and last error. Channels and rules are made with the
//! API or `outpost notify`; a URL or secret is never rendered here.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect};
use axum::Extension;
use maud::html;
use outpost_api::DeliveryQuery;

use super::layout::{self, or_page, Area, PageResult};
use super::viewer::Viewer;
use crate::http::error::Path;
use crate::http::WebState;
use crate::model::ChannelId;
use crate::service;

/// GET /admin/notifications
pub async fn page(State(st): State<Arc<WebState>>, Extension(v): Extension<Viewer>) -> PageResult {
    let channels = or_page(service::notifications::list_channels(&st.core).await)?;
    let rules = or_page(service::notifications::list_rules(&st.core).await)?;
    let q = DeliveryQuery {
        limit: Some(100),
        ..Default::default()
    };
    let log = or_page(service::notifications::deliveries(&st.core, &q).await)?;
    let body = html! {
        section aria-labelledby="channels" {
            h2 #channels { "Channels" }
            @if channels.is_empty() {
                p { "No channels yet: add one with " code { "outpost notify channel add" } " or the API." }
            } @else {
                table {
                    thead { tr { th { "Name" } th { "Kind" } th { "On-call" } th { "Digest" } th { "Target" } th { "Secret" } th {} } }
                    tbody {
                        @for c in &channels {
                            tr data-channel=(c.name) {
                                td { (c.name) }
                                td { (c.kind.as_str()) }
                                td { (if c.on_call { "yes" } else { "no" }) }
                                td { (if c.digest { "yes" } else { "no" }) }
                                td {
                                    @if let Some(e) = &c.email { (e.to.join(", ")) " via " (e.host) ":" (e.port) }
                                    @else { (c.url.clone().unwrap_or_default()) }
                                }
                                td { (if c.secret_set { "set" } else { "none" }) }
                                td {
                                    form method="post" action=(format!("/admin/notifications/channels/{}/test", c.id)) {
                                        (layout::csrf(&v))
                                        button type="submit" { "Send a test" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="rules" {
            h2 #rules { "Routing rules" }
            @if rules.is_empty() {
                p { "No rules: the default routing applies — critical and high priority events go at once to the channels marked on-call, the others to the channels marked digest, batched." }
            } @else {
                table {
                    thead { tr { th { "Event" } th { "Environment" } th { "Min priority" } th { "Label" } th { "Channel" } th { "Mode" } } }
                    tbody {
                        @for r in &rules {
                            tr {
                                td { (r.event.as_str()) }
                                td { (r.environment.clone().unwrap_or_else(|| "any".into())) }
                                td { (r.min_priority.map(|p| p.as_str()).unwrap_or("any")) }
                                td { (r.routing_label.clone().unwrap_or_else(|| "any".into())) }
                                td { (r.channel) }
                                td { (r.mode.as_str()) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="log" {
            h2 #log { "Delivery log" }
            @if log.items.is_empty() {
                p { "Nothing sent yet." }
            } @else {
                table #deliveries {
                    thead { tr { th { "Created" } th { "Channel" } th { "Event" } th { "Summary" } th { "Status" } th { "Attempts" } th { "Last error" } th { "Delivery id" } } }
                    tbody {
                        @for d in &log.items {
                            tr data-delivery=(d.delivery_id) {
                                td { (layout::time(Some(d.created_at))) }
                                td { (d.channel) }
                                td { (d.event.as_str()) }
                                td { (d.summary) }
                                td.status { (d.status.as_str()) }
                                td { (d.attempts) }
                                td { (d.last_error.clone().unwrap_or_default()) }
                                td { code { (d.delivery_id) } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(&v, Area::Notifications, "Notifications", body).into_response())
}

/// POST /admin/notifications/channels/{id}/test
pub async fn test(
    State(st): State<Arc<WebState>>,
    Extension(v): Extension<Viewer>,
    Path(id): Path<ChannelId>,
) -> PageResult {
    or_page(service::notifications::test_channel(&st.core, &v.caller, id).await)?;
    Ok(Redirect::to("/admin/notifications#log").into_response())
}
