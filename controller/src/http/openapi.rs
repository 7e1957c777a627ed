//! The OpenAPI document's own parts: its header and bearer scheme ([`ApiDoc`]), and
//! [`ErrorResponses`], which gives every operation the refusals it can answer, in the one error
//! shape ([`outpost_api::ErrorBody`]).
//!
//! The refusals that do not depend on what a handler does are derived here from the route
//! itself, once, rather than repeated in 40 annotations (where one forgotten would be a lie
//! the document tells): the access table ([`crate::service::access`]) says who is refused with 401 and
//! 403, a `{parameter}` in the path means 404, parameters mean 400, a body means
//! 400/413/415/422, and everything under `/api/v1` that reaches the database may answer 503.
//! What only a handler knows (409, 429, a specific 503) stays in its annotation; a response a
//! handler already lists is kept as it wrote it.

use axum::http::Method;
use outpost_api::ErrorBody;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Response};
use utoipa::{Modify, PartialSchema, ToSchema};

use crate::service::access::{self as roles, Access};

/// The document's header: title, description, and the bearer token every route needs unless
/// its operation says otherwise.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Outpost API",
        description = "Run Ansible across datacenters: servers, playbooks, projects (git repositories and archives, synced into revisions), credentials (secrets written once, never read back), templates, schedules and blackout windows, jobs and their logs, tickets, notifications (channels, routing rules, the delivery log), agents, users and the audit trail. Every refusal is `{\"error\", \"message\"}` (ErrorBody)."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// The `bearer` security scheme the document's `security` names.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Adds the standard error responses to every operation of a finished document (apply it after
/// the routes are merged: [`ApiDoc`]'s own modifiers run before there are any).
pub struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        // The responses below refer to ErrorBody by name: make sure the name resolves even if
        // no handler happened to mention it.
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .schemas
            .entry(ErrorBody::name().into_owned())
            .or_insert_with(ErrorBody::schema);
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, op) in operations_mut(item) {
                // A route without a rule never serves (the router refuses to start): nothing
                // to derive from, and the unit test below names it.
                if let Some(access) = roles::rule(&method, path) {
                    add_standard_errors(path, &method, access, op);
                }
            }
        }
    }
}

/// Every operation of a path, with its method.
pub fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = (Method, &mut Operation)> {
    [
        (Method::GET, item.get.as_mut()),
        (Method::PUT, item.put.as_mut()),
        (Method::POST, item.post.as_mut()),
        (Method::DELETE, item.delete.as_mut()),
        (Method::OPTIONS, item.options.as_mut()),
        (Method::HEAD, item.head.as_mut()),
        (Method::PATCH, item.patch.as_mut()),
        (Method::TRACE, item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
}

fn add_standard_errors(path: &str, method: &Method, access: Access, op: &mut Operation) {
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(error_response(description)));
    };
    // 401 and 403 come from the authorization layer (auth::authorize), which reads the table.
    if access != Access::Public {
        add(
            "401",
            "No bearer token (nor web session), or it is unknown, expired or revoked, or its account is deactivated: sign in with POST /api/v1/auth/login",
        );
    }
    // A change made with the web UI's session cookie needs its CSRF token, whatever the role.
    let csrf = access != Access::Public && !matches!(*method, Method::GET | Method::HEAD);
    match access {
        Access::Role(_) => add(
            "403",
            "The caller's role is too low for this route, their password must be changed first (`password_expired`), or a change made with the web session lacks its CSRF token",
        ),
        Access::SelfOrAdmin => add(
            "403",
            "Only the user named by the path, or an admin, may do this; the current password is wrong; or a change made with the web session lacks its CSRF token",
        ),
        Access::Session if csrf => add(
            "403",
            "A change made with the web session lacks its CSRF token (X-CSRF-Token)",
        ),
        Access::Session | Access::Public => {}
    }
    let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let has_body = op.request_body.is_some();
    // axum's extractors refuse values they cannot parse (error::From<*Rejection>).
    if has_params || has_body {
        add(
            "400",
            "The request is malformed: a body that is not JSON, or a path, query or header value of the wrong type",
        );
    }
    if path.contains('{') {
        add("404", "Nothing has the id in the path");
    }
    if has_body {
        add(
            "413",
            "The body is larger than this route accepts (1 MiB; playbooks 5 MiB)",
        );
        add(
            "415",
            "The body is not sent as JSON (Content-Type: application/json)",
        );
        add(
            "422",
            "The body is JSON but not a valid request: a field is missing, unknown, of the wrong type or out of range",
        );
    }
    // Every API route but the document itself reads the database (the authorization layer
    // looks the token up), and a database that does not answer is a 503 (error::From<StoreError>).
    if path.starts_with("/api/v1/") && path != "/api/v1/openapi.json" {
        add(
            "503",
            "The database is not reachable right now, or undid the request in a lock conflict; try again",
        );
    }
    // Public routes say so, rather than inheriting the document's bearer requirement (login
    // did: a client reading the document would send a token it cannot have yet).
    if access == Access::Public && op.security.is_none() {
        op.security = Some(vec![SecurityRequirement::default()]);
    }
}

/// A response carrying [`ErrorBody`] as JSON.
fn error_response(description: &str) -> Response {
    let mut r = Response::new(description);
    r.content.insert(
        "application/json".into(),
        Content::new(Some(Ref::from_schema_name(ErrorBody::name()))),
    );
    r
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const ERROR_REF: &str = "#/components/schemas/ErrorBody";

    /// The served document, as JSON (what clients and fuzzers read).
    fn document() -> Value {
        let (_, doc) = super::super::routes();
        serde_json::to_value(&doc).expect("the document serializes")
    }

    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths").iter() {
            for (method, op) in item.as_object().expect("path item") {
                if [
                    "get", "put", "post", "delete", "patch", "head", "options", "trace",
                ]
                .contains(&method.as_str())
                {
                    out.push((method.to_uppercase(), path.clone(), op.clone()));
                }
            }
        }
        out
    }

    /// Whether an operation needs a token: its own `security`, else the document's, holds a
    /// requirement that names a scheme (`{}` means "no token needed").
    fn secured(doc: &Value, op: &Value) -> bool {
        let security = op.get("security").unwrap_or(&doc["security"]);
        security.as_array().is_some_and(|reqs| {
            !reqs.is_empty() && reqs.iter().all(|r| r != &Value::Object(Default::default()))
        })
    }

    #[test]
    fn every_operation_lists_the_refusals_it_can_answer() {
        let doc = document();
        let ops = operations(&doc);
        assert!(ops.len() >= 40, "only {} operations", ops.len());
        for (method, path, op) in &ops {
            let responses = op["responses"].as_object().expect("responses");
            let has = |s: &str| responses.contains_key(s);
            let m = Method::from_bytes(method.as_bytes()).expect("method");
            let access = roles::rule(&m, path)
                .unwrap_or_else(|| panic!("{method} {path} has no rule in service/access.rs"));
            assert_eq!(
                secured(&doc, op),
                access != Access::Public,
                "{method} {path}: the document's security disagrees with the access table"
            );
            if secured(&doc, op) {
                assert!(has("401"), "{method} {path}: secured but no 401");
            }
            if matches!(access, Access::Role(_) | Access::SelfOrAdmin) {
                assert!(has("403"), "{method} {path}: role-checked but no 403");
            }
            if path.contains('{') {
                assert!(has("404"), "{method} {path}: a path parameter but no 404");
            }
            if op.get("requestBody").is_some() {
                for s in ["400", "413", "415", "422"] {
                    assert!(has(s), "{method} {path}: a body but no {s}");
                }
            }
            for (status, resp) in responses {
                if status.starts_with('2') {
                    continue;
                }
                // The readiness probe's 503 is its report (which checks failed), not a refusal.
                if path == "/readyz" && status == "503" {
                    assert_eq!(
                        resp["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Health"
                    );
                    continue;
                }
                assert_eq!(
                    resp["content"]["application/json"]["schema"]["$ref"], ERROR_REF,
                    "{method} {path} {status}: not an ErrorBody: {resp}"
                );
            }
        }
        let schema = &doc["components"]["schemas"]["ErrorBody"];
        let mut required: Vec<&str> = schema["required"]
            .as_array()
            .expect("ErrorBody's required fields")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        required.sort_unstable();
        assert_eq!(required, ["error", "message"]);
    }

    #[test]
    fn handlers_keep_their_own_responses() {
        let doc = document();
        let login = &doc["paths"]["/api/v1/auth/login"]["post"];
        // Login is public: it says so instead of inheriting the bearer requirement…
        assert_eq!(login["security"], serde_json::json!([{}]));
        // …and its own 401 and 429 stay as the handler wrote them.
        assert!(login["responses"]["401"].is_object());
        assert!(login["responses"]["429"].is_object());
        let bundle = &doc["paths"]["/api/v1/agent-bundles"]["post"]["responses"]["503"];
        assert_eq!(
            bundle["description"], "The controller has no agent binary to bundle",
            "a handler's own description is kept"
        );
        // Probes without a database answer nothing but what they list.
        let healthz = doc["paths"]["/healthz"]["get"]["responses"]
            .as_object()
            .expect("healthz responses");
        assert_eq!(healthz.keys().collect::<Vec<_>>(), ["200"]);
    }
}
