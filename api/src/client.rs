//! A typed HTTPS client for the API. It trusts the CA it is given (the Outpost CA, or an
//! operator's own) and nothing else, speaks the bodies of [`crate::types`], and turns every
//! refusal into an [`ApiError`] that carries the server's code and sentence.
//!
//! Each resource has an accessor (`client.jobs().list(&query)`, `client.servers().get(id)`…)
//! whose paths are all built by [`Client::endpoint`]: every id or name a caller passes becomes
//! exactly one percent-encoded path segment, and queries are the serde types of
//! [`crate::types`], so no caller formats a URL by hand.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::credentials::*;
use crate::notifications::*;
use crate::schedules::*;
use crate::templates::*;
use crate::types::*;

#[derive(Debug, Error)]
pub enum ApiError {
    /// The server answered with an error body.
    #[error("{message} ({status} {code})")]
    Refused {
        status: u16,
        code: String,
        message: String,
        /// Seconds to wait, for 429.
        retry_after: Option<u64>,
    },
    #[error("cannot reach the controller at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("unexpected answer from the controller: {0}")]
    Unexpected(String),
    #[error("invalid CA certificate: {0}")]
    BadCa(String),
    /// The controller's address is not a URL a path can be added to.
    #[error("'{url}' is not a controller address: {reason}")]
    BadUrl { url: String, reason: String },
    /// An id or name that no URL path can carry as one segment: empty, `.` or `..` (URL
    /// parsers fold those away, so the request would reach another route).
    #[error("'{0}' is not an id or name the API can be asked about")]
    BadSegment(String),
}

impl ApiError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error code of a refusal (`not_found`, `forbidden`…).
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A client of one controller.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    /// `base` parsed once: every path is built onto it.
    base_url: Url,
    http: reqwest::Client,
    token: Option<String>,
    /// Sent as `User-Agent` (the controller's audit trail records it); none by default.
    user_agent: Option<String>,
}

/// The TLS configuration that trusts exactly the CAs in `ca_pem`.
pub fn tls_config(ca_pem: &str) -> Result<rustls::ClientConfig, ApiError> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| ApiError::BadCa(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| ApiError::BadCa(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ApiError::BadCa("no certificate in the PEM".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ApiError::BadCa(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Client {
    /// A client of `base` (`https://host:8443`) trusting the CAs in `ca_pem`.
    pub fn new(base: &str, ca_pem: &str) -> Result<Client, ApiError> {
        Client::with_tls(base, tls_config(ca_pem)?)
    }

    /// A client of `base` with a TLS configuration of the caller's (a pinned CA, say).
    pub fn with_tls(base: &str, tls: rustls::ClientConfig) -> Result<Client, ApiError> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            // The controller closes an HTTP/1 connection that waits for its next request longer
            // than its header timeout (10 s by default): let idle connections go well before
            // that, so a request is never sent on one the server is closing.
            .pool_idle_timeout(Duration::from_secs(4))
            .build()
            .map_err(|e| ApiError::Unexpected(e.to_string()))?;
        let base = base.trim_end_matches('/').to_owned();
        let base_url = Url::parse(&base).map_err(|e| ApiError::BadUrl {
            url: base.clone(),
            reason: e.to_string(),
        })?;
        if base_url.cannot_be_a_base() {
            return Err(ApiError::BadUrl {
                url: base,
                reason: "it cannot have a path".into(),
            });
        }
        Ok(Client {
            base,
            base_url,
            http,
            token: None,
            user_agent: None,
        })
    }

    /// The same client, sending `token` as its bearer token.
    pub fn with_token(&self, token: impl Into<String>) -> Client {
        Client {
            token: Some(token.into()),
            ..self.clone()
        }
    }

    /// The same client, naming itself `user_agent` (`outpost/0.1.0`) in every request.
    pub fn with_user_agent(&self, user_agent: impl Into<String>) -> Client {
        Client {
            user_agent: Some(user_agent.into()),
            ..self.clone()
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The URL of an API route: the base, [`crate::PREFIX`], then `segments`, each one
    /// percent-encoded as exactly one path segment (a `/`, `?`, `#` or `%` in a name stays part
    /// of the name).
    pub fn endpoint(&self, segments: &[&str]) -> Result<Url, ApiError> {
        let prefix = crate::PREFIX.split('/').filter(|s| !s.is_empty());
        self.url_of(prefix.chain(segments.iter().copied()))
    }

    /// The base URL with `segments` added, each percent-encoded as one path segment.
    fn url_of<'s>(&self, segments: impl IntoIterator<Item = &'s str>) -> Result<Url, ApiError> {
        let mut url = self.base_url.clone();
        {
            let mut path = url.path_segments_mut().map_err(|()| ApiError::BadUrl {
                url: self.base.clone(),
                reason: "it cannot have a path".into(),
            })?;
            path.pop_if_empty();
            for segment in segments {
                // `push` would silently drop `.` and `..`; an empty one would end the path.
                if matches!(segment, "" | "." | "..") {
                    return Err(ApiError::BadSegment(segment.to_owned()));
                }
                path.push(segment);
            }
        }
        Ok(url)
    }

    /// A request to an API route (see [`Client::endpoint`]).
    pub fn call(
        &self,
        method: Method,
        segments: &[&str],
    ) -> Result<reqwest::RequestBuilder, ApiError> {
        Ok(self.request_to(method, self.endpoint(segments)?))
    }

    /// A request to `path` as given (`/api/v1/…`, `/healthz`), with the bearer token if there
    /// is one: for what the typed accessors do not cover, such as tests probing odd paths.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.base);
        self.with_headers(self.http.request(method, url))
    }

    fn request_to(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.with_headers(self.http.request(method, url))
    }

    fn with_headers(&self, mut rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if let Some(ua) = &self.user_agent {
            rb = rb.header(reqwest::header::USER_AGENT, ua.as_str());
        }
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        rb
    }

    /// Sends a request and decodes a JSON answer, or the error body of a refusal.
    pub async fn send<T: DeserializeOwned>(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        self.send_raw(rb)
            .await?
            .json::<T>()
            .await
            .map_err(|e| ApiError::Unexpected(e.to_string()))
    }

    /// Sends a request and hands back a successful response unread (a download, say), or the
    /// error body of a refusal.
    pub async fn send_raw(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ApiError> {
        let resp = rb.send().await.map_err(|e| ApiError::Unreachable {
            url: self.base.clone(),
            detail: e.to_string(),
        })?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(refusal(resp).await)
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        self.send(self.request(Method::PATCH, path).json(body))
            .await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// Sends a request whose success has no body worth reading (a 204).
    async fn send_empty(&self, rb: reqwest::RequestBuilder) -> Result<(), ApiError> {
        self.send_raw(rb).await.map(drop)
    }

    /// `GET /healthz`: the process answers (outside the API prefix, and without a token).
    pub async fn health(&self) -> Result<Health, ApiError> {
        let url = self.url_of(["healthz"])?;
        self.send(self.request_to(Method::GET, url)).await
    }

    /// Signing in and out: `/auth`.
    pub fn auth(&self) -> Auth<'_> {
        Auth(self)
    }

    /// Accounts: `/users`.
    pub fn users(&self) -> Users<'_> {
        Users(self)
    }

    /// The inventory: `/servers`.
    pub fn servers(&self) -> Servers<'_> {
        Servers(self)
    }

    /// `/playbooks`.
    pub fn playbooks(&self) -> Playbooks<'_> {
        Playbooks(self)
    }

    /// `/projects`.
    pub fn projects(&self) -> Projects<'_> {
        Projects(self)
    }

    /// Stored secrets (admins only): `/credentials`.
    pub fn credentials(&self) -> Credentials<'_> {
        Credentials(self)
    }

    /// Schedules of job templates and their runs: `/schedules`.
    pub fn schedules(&self) -> Schedules<'_> {
        Schedules(self)
    }

    /// Blackout windows: `/blackouts`.
    pub fn blackouts(&self) -> Blackouts<'_> {
        Blackouts(self)
    }

    /// Job templates and their launches: `/templates`.
    pub fn templates(&self) -> Templates<'_> {
        Templates(self)
    }

    /// Notification channels, rules and the delivery log (admins only): `/notifications`.
    pub fn notifications(&self) -> Notifications<'_> {
        Notifications(self)
    }

    /// Jobs and their logs: `/jobs`.
    pub fn jobs(&self) -> Jobs<'_> {
        Jobs(self)
    }

    /// Runs, one per launch: `/runs`.
    pub fn runs(&self) -> Runs<'_> {
        Runs(self)
    }

    /// `/tickets`.
    pub fn tickets(&self) -> Tickets<'_> {
        Tickets(self)
    }

    /// Enrolled agents: `/agents`.
    pub fn agents(&self) -> Agents<'_> {
        Agents(self)
    }

    /// One-time enrolment tokens for new agents: `/enrollment-tokens`.
    pub fn enrollment_tokens(&self) -> EnrollmentTokens<'_> {
        EnrollmentTokens(self)
    }

    /// Install bundles for new agents: `/agent-bundles`.
    pub fn agent_bundles(&self) -> AgentBundles<'_> {
        AgentBundles(self)
    }

    /// The audit trail: `/audit`.
    pub fn audit(&self) -> Audit<'_> {
        Audit(self)
    }

    async fn get_at<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, ApiError> {
        self.send(self.call(Method::GET, segments)?).await
    }

    async fn list_at<Q: Serialize, T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &Q,
    ) -> Result<T, ApiError> {
        self.send(self.call(Method::GET, segments)?.query(query))
            .await
    }

    async fn send_at<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: &B,
    ) -> Result<T, ApiError> {
        self.send(self.call(method, segments)?.json(body)).await
    }
}

/// `/auth`: see [`Client::auth`].
#[derive(Clone, Copy, Debug)]
pub struct Auth<'a>(&'a Client);

impl Auth<'_> {
    /// Signs in; the answer holds the bearer token, shown once.
    pub async fn login(&self, req: &LoginRequest) -> Result<LoginResponse, ApiError> {
        self.0.send_at(Method::POST, &["auth", "login"], req).await
    }

    /// Ends the client's token.
    pub async fn logout(&self) -> Result<(), ApiError> {
        self.0
            .send_empty(self.0.call(Method::POST, &["auth", "logout"])?)
            .await
    }

    /// Who the client's token belongs to.
    pub async fn whoami(&self) -> Result<Whoami, ApiError> {
        self.0.get_at(&["auth", "whoami"]).await
    }
}

/// `/users`: see [`Client::users`].
#[derive(Clone, Copy, Debug)]
pub struct Users<'a>(&'a Client);

impl Users<'_> {
    pub async fn list(&self, query: &UserQuery) -> Result<Page<UserView>, ApiError> {
        self.0.list_at(&["users"], query).await
    }

    pub async fn get(&self, id: i32) -> Result<UserView, ApiError> {
        self.0.get_at(&["users", &id.to_string()]).await
    }

    pub async fn create(&self, req: &NewUserRequest) -> Result<UserView, ApiError> {
        self.0.send_at(Method::POST, &["users"], req).await
    }

    pub async fn update(&self, id: i32, req: &UserPatchRequest) -> Result<UserView, ApiError> {
        self.0
            .send_at(Method::PATCH, &["users", &id.to_string()], req)
            .await
    }

    /// Sets a password: one's own (with the current one), or as an admin someone else's.
    pub async fn set_password(
        &self,
        id: i32,
        req: &PasswordChangeRequest,
    ) -> Result<UserView, ApiError> {
        self.0
            .send_at(Method::POST, &["users", &id.to_string(), "password"], req)
            .await
    }
}

/// `/servers`: see [`Client::servers`].
#[derive(Clone, Copy, Debug)]
pub struct Servers<'a>(&'a Client);

impl Servers<'_> {
    pub async fn list(&self, query: &ServerQuery) -> Result<Page<ServerView>, ApiError> {
        self.0.list_at(&["servers"], query).await
    }

    pub async fn get(&self, id: i32) -> Result<ServerView, ApiError> {
        self.0.get_at(&["servers", &id.to_string()]).await
    }

    pub async fn create(&self, req: &NewServerRequest) -> Result<ServerView, ApiError> {
        self.0.send_at(Method::POST, &["servers"], req).await
    }

    pub async fn update(&self, id: i32, req: &ServerPatchRequest) -> Result<ServerView, ApiError> {
        self.0
            .send_at(Method::PATCH, &["servers", &id.to_string()], req)
            .await
    }

    /// Deletes a server, or deactivates it when jobs refer to it.
    pub async fn delete(&self, id: i32) -> Result<DeleteResult, ApiError> {
        self.0
            .send(self.0.call(Method::DELETE, &["servers", &id.to_string()])?)
            .await
    }
}

/// `/playbooks`: see [`Client::playbooks`].
#[derive(Clone, Copy, Debug)]
pub struct Playbooks<'a>(&'a Client);

impl Playbooks<'_> {
    pub async fn list(&self, query: &PageQuery) -> Result<Page<PlaybookView>, ApiError> {
        self.0.list_at(&["playbooks"], query).await
    }

    /// One playbook, with its YAML.
    pub async fn get(&self, id: i32) -> Result<PlaybookView, ApiError> {
        self.0.get_at(&["playbooks", &id.to_string()]).await
    }

    pub async fn create(&self, req: &NewPlaybookRequest) -> Result<PlaybookView, ApiError> {
        self.0.send_at(Method::POST, &["playbooks"], req).await
    }

    pub async fn update(
        &self,
        id: i32,
        req: &PlaybookPatchRequest,
    ) -> Result<PlaybookView, ApiError> {
        self.0
            .send_at(Method::PATCH, &["playbooks", &id.to_string()], req)
            .await
    }
}

/// `/credentials`: see [`Client::credentials`].
#[derive(Clone, Copy, Debug)]
pub struct Credentials<'a>(&'a Client);

/// `/templates`: see [`Client::templates`]. A template is named by its id or its name.
#[derive(Clone, Copy, Debug)]
pub struct Templates<'a>(&'a Client);

impl Templates<'_> {
    pub async fn list(&self, query: &PageQuery) -> Result<Page<TemplateView>, ApiError> {
        self.0.list_at(&["templates"], query).await
    }

    pub async fn get(&self, key: &str) -> Result<TemplateView, ApiError> {
        self.0.get_at(&["templates", key]).await
    }

    pub async fn create(&self, spec: &TemplateSpec) -> Result<TemplateView, ApiError> {
        self.0.send_at(Method::POST, &["templates"], spec).await
    }

    /// Replaces the template whole.
    pub async fn update(&self, key: &str, spec: &TemplateSpec) -> Result<TemplateView, ApiError> {
        self.0.send_at(Method::PUT, &["templates", key], spec).await
    }

    pub async fn delete(&self, key: &str) -> Result<DeleteResult, ApiError> {
        self.0
            .send(self.0.call(Method::DELETE, &["templates", key])?)
            .await
    }

    /// Launches it: a 422 names each bad answer.
    pub async fn launch(
        &self,
        key: &str,
        req: &TemplateLaunchRequest,
    ) -> Result<LaunchResponse, ApiError> {
        self.0
            .send_at(Method::POST, &["templates", key, "launch"], req)
            .await
    }
}

impl Credentials<'_> {
    pub async fn list(&self, query: &PageQuery) -> Result<Page<CredentialView>, ApiError> {
        self.0.list_at(&["credentials"], query).await
    }

    /// One credential, with where it is attached.
    pub async fn get(&self, id: i32) -> Result<CredentialView, ApiError> {
        self.0.get_at(&["credentials", &id.to_string()]).await
    }

    pub async fn create(&self, req: &NewCredentialRequest) -> Result<CredentialView, ApiError> {
        self.0.send_at(Method::POST, &["credentials"], req).await
    }

    pub async fn update(
        &self,
        id: i32,
        req: &CredentialPatchRequest,
    ) -> Result<CredentialView, ApiError> {
        self.0
            .send_at(Method::PATCH, &["credentials", &id.to_string()], req)
            .await
    }

    /// Refused (409) while the credential is attached anywhere.
    pub async fn delete(&self, id: i32) -> Result<DeleteResult, ApiError> {
        self.0
            .send(
                self.0
                    .call(Method::DELETE, &["credentials", &id.to_string()])?,
            )
            .await
    }
}

/// `/notifications`: see [`Client::notifications`].
#[derive(Clone, Copy, Debug)]
pub struct Notifications<'a>(&'a Client);

impl Notifications<'_> {
    pub async fn channels(&self) -> Result<Vec<ChannelView>, ApiError> {
        self.0.get_at(&["notifications", "channels"]).await
    }

    pub async fn channel(&self, id: i32) -> Result<ChannelView, ApiError> {
        self.0
            .get_at(&["notifications", "channels", &id.to_string()])
            .await
    }

    pub async fn create_channel(&self, req: &NewChannelRequest) -> Result<ChannelView, ApiError> {
        self.0
            .send_at(Method::POST, &["notifications", "channels"], req)
            .await
    }

    pub async fn update_channel(
        &self,
        id: i32,
        req: &ChannelPatchRequest,
    ) -> Result<ChannelView, ApiError> {
        self.0
            .send_at(
                Method::PATCH,
                &["notifications", "channels", &id.to_string()],
                req,
            )
            .await
    }

    pub async fn delete_channel(&self, id: i32) -> Result<DeleteResult, ApiError> {
        self.0
            .send(self.0.call(
                Method::DELETE,
                &["notifications", "channels", &id.to_string()],
            )?)
            .await
    }

    /// Queues a test notification to the channel.
    pub async fn test_channel(&self, id: i32) -> Result<TestQueued, ApiError> {
        self.0
            .send(self.0.call(
                Method::POST,
                &["notifications", "channels", &id.to_string(), "test"],
            )?)
            .await
    }

    pub async fn rules(&self) -> Result<Vec<RuleView>, ApiError> {
        self.0.get_at(&["notifications", "rules"]).await
    }

    pub async fn create_rule(&self, req: &NewRuleRequest) -> Result<RuleView, ApiError> {
        self.0
            .send_at(Method::POST, &["notifications", "rules"], req)
            .await
    }

    pub async fn delete_rule(&self, id: i32) -> Result<DeleteResult, ApiError> {
        self.0
            .send(
                self.0
                    .call(Method::DELETE, &["notifications", "rules", &id.to_string()])?,
            )
            .await
    }

    /// The delivery log, newest first.
    pub async fn deliveries(&self, query: &DeliveryQuery) -> Result<Page<DeliveryView>, ApiError> {
        self.0
            .list_at(&["notifications", "deliveries"], query)
            .await
    }
}

/// `/schedules`: see [`Client::schedules`]. A schedule is named by its id or its name.
#[derive(Clone, Copy, Debug)]
pub struct Schedules<'a>(&'a Client);

impl Schedules<'_> {
    pub async fn list(&self, query: &PageQuery) -> Result<Page<ScheduleView>, ApiError> {
        self.0.list_at(&["schedules"], query).await
    }

    pub async fn get(&self, id_or_name: &str) -> Result<ScheduleView, ApiError> {
        self.0.get_at(&["schedules", id_or_name]).await
    }

    pub async fn create(&self, req: &NewScheduleRequest) -> Result<ScheduleView, ApiError> {
        self.0.send_at(Method::POST, &["schedules"], req).await
    }

    /// Changes a schedule; `enabled` alone enables or disables it.
    pub async fn update(
        &self,
        id_or_name: &str,
        req: &SchedulePatchRequest,
    ) -> Result<ScheduleView, ApiError> {
        self.0
            .send_at(Method::PATCH, &["schedules", id_or_name], req)
            .await
    }

    pub async fn delete(&self, id_or_name: &str) -> Result<DeleteResult, ApiError> {
        self.0
            .send(self.0.call(Method::DELETE, &["schedules", id_or_name])?)
            .await
    }

    /// The runs of a schedule, newest slot first.
    pub async fn runs(
        &self,
        id_or_name: &str,
        query: &PageQuery,
    ) -> Result<Page<ScheduleRunView>, ApiError> {
        self.0
            .list_at(&["schedules", id_or_name, "runs"], query)
            .await
    }

    /// The next five runs of a cron expression in a time zone, without saving anything.
    pub async fn preview(&self, req: &PreviewRequest) -> Result<PreviewResponse, ApiError> {
        self.0
            .send_at(Method::POST, &["schedules", "preview"], req)
            .await
    }
}

/// `/blackouts`: see [`Client::blackouts`].
#[derive(Clone, Copy, Debug)]
pub struct Blackouts<'a>(&'a Client);

impl Blackouts<'_> {
    pub async fn list(&self, query: &PageQuery) -> Result<Page<BlackoutView>, ApiError> {
        self.0.list_at(&["blackouts"], query).await
    }

    pub async fn create(&self, req: &NewBlackoutRequest) -> Result<BlackoutView, ApiError> {
        self.0.send_at(Method::POST, &["blackouts"], req).await
    }

    pub async fn delete(&self, id_or_name: &str) -> Result<DeleteResult, ApiError> {
        self.0
            .send(self.0.call(Method::DELETE, &["blackouts", id_or_name])?)
            .await
    }
}

/// `/projects`: see [`Client::projects`].
#[derive(Clone, Copy, Debug)]
pub struct Projects<'a>(&'a Client);

impl Projects<'_> {
    pub async fn list(&self, query: &PageQuery) -> Result<Page<ProjectView>, ApiError> {
        self.0.list_at(&["projects"], query).await
    }

    /// One project, with its playbooks.
    pub async fn get(&self, id: i32) -> Result<ProjectView, ApiError> {
        self.0.get_at(&["projects", &id.to_string()]).await
    }

    pub async fn create(&self, req: &NewProjectRequest) -> Result<ProjectView, ApiError> {
        self.0.send_at(Method::POST, &["projects"], req).await
    }

    pub async fn update(
        &self,
        id: i32,
        req: &ProjectPatchRequest,
    ) -> Result<ProjectView, ApiError> {
        self.0
            .send_at(Method::PATCH, &["projects", &id.to_string()], req)
            .await
    }

    pub async fn delete(&self, id: i32) -> Result<DeleteResult, ApiError> {
        self.0
            .send(
                self.0
                    .call(Method::DELETE, &["projects", &id.to_string()])?,
            )
            .await
    }

    /// Starts a sync (202: the project, syncing); follow it with [`Projects::get`].
    pub async fn sync(&self, id: i32) -> Result<ProjectView, ApiError> {
        self.0
            .send(
                self.0
                    .call(Method::POST, &["projects", &id.to_string(), "sync"])?,
            )
            .await
    }

    /// Uploads a `.tar.gz` or `.tar` of the tree and syncs from it (the answer comes when the
    /// sync has ended: the project, `ok` or `failed`).
    pub async fn upload(&self, id: i32, archive: Vec<u8>) -> Result<ProjectView, ApiError> {
        self.0
            .send(
                self.0
                    .call(Method::POST, &["projects", &id.to_string(), "archive"])?
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(archive),
            )
            .await
    }

    pub async fn revisions(
        &self,
        id: i32,
        query: &PageQuery,
    ) -> Result<Page<RevisionView>, ApiError> {
        self.0
            .list_at(&["projects", &id.to_string(), "revisions"], query)
            .await
    }

    pub async fn files(
        &self,
        id: i32,
        query: &ProjectFilesQuery,
    ) -> Result<ProjectFilesView, ApiError> {
        self.0
            .list_at(&["projects", &id.to_string(), "files"], query)
            .await
    }
}

/// `/jobs`: see [`Client::jobs`]. Jobs are named by their uuid.
#[derive(Clone, Copy, Debug)]
pub struct Runs<'a>(&'a Client);

impl Runs<'_> {
    pub async fn list(&self, query: &crate::RunQuery) -> Result<Page<crate::RunView>, ApiError> {
        self.0.list_at(&["runs"], query).await
    }

    /// Which task ended how on how many servers of the run, per datacenter.
    pub async fn results(
        &self,
        id: &str,
        query: &crate::ResultsQuery,
    ) -> Result<crate::RunResults, ApiError> {
        self.0.list_at(&["runs", id, "results"], query).await
    }

    pub async fn get(&self, id: &str) -> Result<crate::RunDetail, ApiError> {
        self.0.get_at(&["runs", id]).await
    }

    pub async fn cancel(&self, id: &str) -> Result<crate::RunActionResponse, ApiError> {
        self.0
            .send(self.0.call(Method::POST, &["runs", id, "cancel"])?)
            .await
    }

    /// Lets the next wave of a paused rollout start.
    pub async fn approve(&self, id: &str) -> Result<crate::RunActionResponse, ApiError> {
        self.0
            .send(self.0.call(Method::POST, &["runs", id, "approve"])?)
            .await
    }

    /// A new run on the failed (or failed and unreachable) servers of this one.
    pub async fn relaunch(
        &self,
        id: &str,
        req: &crate::RelaunchRequest,
    ) -> Result<crate::RunView, ApiError> {
        self.0
            .send_at(Method::POST, &["runs", id, "relaunch"], req)
            .await
    }
}

pub struct Jobs<'a>(&'a Client);

impl Jobs<'_> {
    pub async fn list(&self, query: &JobQuery) -> Result<Page<JobView>, ApiError> {
        self.0.list_at(&["jobs"], query).await
    }

    pub async fn get(&self, id: &str) -> Result<JobView, ApiError> {
        self.0.get_at(&["jobs", id]).await
    }

    /// Launches a playbook: one job per server.
    pub async fn launch(&self, req: &LaunchRequest) -> Result<LaunchResponse, ApiError> {
        self.0.send_at(Method::POST, &["jobs"], req).await
    }

    pub async fn cancel(&self, id: &str) -> Result<CancelResponse, ApiError> {
        self.0
            .send(self.0.call(Method::POST, &["jobs", id, "cancel"])?)
            .await
    }

    /// One page of a job's log.
    pub async fn logs(&self, id: &str, query: &LogQuery) -> Result<LogPage, ApiError> {
        self.0.list_at(&["jobs", id, "logs"], query).await
    }

    /// A job's recap and per-task results.
    pub async fn results(
        &self,
        id: &str,
        query: &crate::ResultsQuery,
    ) -> Result<crate::JobResults, ApiError> {
        self.0.list_at(&["jobs", id, "results"], query).await
    }

    /// The request for a job's live log (Server-Sent Events) from after line `after`, for the
    /// caller to send and read: whether a failure is worth a retry is the caller's to decide.
    pub fn log_stream(&self, id: &str, after: i32) -> Result<reqwest::RequestBuilder, ApiError> {
        Ok(self
            .0
            .call(Method::GET, &["jobs", id, "logs", "stream"])?
            .header("Last-Event-ID", after.to_string()))
    }
}

/// `/tickets`: see [`Client::tickets`]. Tickets are named by their uuid.
#[derive(Clone, Copy, Debug)]
pub struct Tickets<'a>(&'a Client);

impl Tickets<'_> {
    pub async fn list(&self, query: &TicketQuery) -> Result<Page<TicketView>, ApiError> {
        self.0.list_at(&["tickets"], query).await
    }

    pub async fn get(&self, id: &str) -> Result<TicketView, ApiError> {
        self.0.get_at(&["tickets", id]).await
    }

    pub async fn create(&self, req: &NewTicketRequest) -> Result<TicketView, ApiError> {
        self.0.send_at(Method::POST, &["tickets"], req).await
    }

    pub async fn update(&self, id: &str, req: &TicketPatchRequest) -> Result<TicketView, ApiError> {
        self.0.send_at(Method::PATCH, &["tickets", id], req).await
    }
}

/// `/agents`: see [`Client::agents`].
#[derive(Clone, Copy, Debug)]
pub struct Agents<'a>(&'a Client);

impl Agents<'_> {
    pub async fn list(&self, query: &PageQuery) -> Result<Page<AgentView>, ApiError> {
        self.0.list_at(&["agents"], query).await
    }

    pub async fn get(&self, id: i32) -> Result<AgentView, ApiError> {
        self.0.get_at(&["agents", &id.to_string()]).await
    }

    /// Revokes an agent: it is dropped and can never connect again.
    pub async fn revoke(&self, id: i32) -> Result<AgentView, ApiError> {
        self.0
            .send(
                self.0
                    .call(Method::POST, &["agents", &id.to_string(), "revoke"])?,
            )
            .await
    }
}

/// `/enrollment-tokens`: see [`Client::enrollment_tokens`].
#[derive(Clone, Copy, Debug)]
pub struct EnrollmentTokens<'a>(&'a Client);

impl EnrollmentTokens<'_> {
    pub async fn list(&self, query: &PageQuery) -> Result<Page<EnrollmentTokenView>, ApiError> {
        self.0.list_at(&["enrollment-tokens"], query).await
    }

    /// Makes a one-time token; the answer holds it, shown only now.
    pub async fn create(
        &self,
        req: &NewEnrollmentTokenRequest,
    ) -> Result<EnrollmentTokenCreated, ApiError> {
        self.0
            .send_at(Method::POST, &["enrollment-tokens"], req)
            .await
    }

    pub async fn delete(&self, id: i32) -> Result<(), ApiError> {
        self.0
            .send_empty(
                self.0
                    .call(Method::DELETE, &["enrollment-tokens", &id.to_string()])?,
            )
            .await
    }
}

/// `/agent-bundles`: see [`Client::agent_bundles`].
#[derive(Clone, Copy, Debug)]
pub struct AgentBundles<'a>(&'a Client);

impl AgentBundles<'_> {
    /// Makes an install bundle; the response is the tar.gz, unread, for the caller to stream
    /// where it belongs.
    pub async fn create(&self, req: &NewAgentBundleRequest) -> Result<reqwest::Response, ApiError> {
        self.0
            .send_raw(self.0.call(Method::POST, &["agent-bundles"])?.json(req))
            .await
    }
}

/// `/audit`: see [`Client::audit`].
#[derive(Clone, Copy, Debug)]
pub struct Audit<'a>(&'a Client);

impl Audit<'_> {
    pub async fn list(&self, query: &AuditQuery) -> Result<Page<AuditView>, ApiError> {
        self.0.list_at(&["audit"], query).await
    }
}

/// The error of a refused request, from its body when it has one.
pub async fn refusal(resp: reqwest::Response) -> ApiError {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => ApiError::Refused {
            status: status.as_u16(),
            code: body.error,
            message: body.message,
            retry_after,
        },
        Err(_) => ApiError::Refused {
            status: status.as_u16(),
            code: status
                .canonical_reason()
                .unwrap_or("error")
                .to_lowercase()
                .replace(' ', "_"),
            message: if text.is_empty() {
                status.to_string()
            } else {
                text.chars().take(500).collect()
            },
            retry_after,
        },
    }
}

/// Whether a status is a success (for callers reading raw responses).
pub fn is_success(status: StatusCode) -> bool {
    status.is_success()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TLS configuration trusting nothing: these clients are never connected.
    fn no_trust() -> rustls::ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    }

    /// A client whose URLs alone are looked at.
    fn offline(base: &str) -> Client {
        Client::with_tls(base, no_trust()).expect("a client")
    }

    /// What a server (axum's `Path`) reads back from one segment.
    fn decoded(segment: &str) -> String {
        percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .expect("UTF-8")
            .into_owned()
    }

    #[test]
    fn a_name_is_one_percent_encoded_segment_that_round_trips() {
        let c = offline("https://ctl.example.com:8443/");
        let name = "web 1/../a?b=c#frag%2F%zz\\é–名";
        let url = c.endpoint(&["servers", name, "logs"]).expect("a URL");
        assert_eq!(url.query(), None, "{url}");
        assert_eq!(url.fragment(), None, "{url}");
        let raw: Vec<&str> = url.path_segments().expect("segments").collect();
        assert_eq!(raw.len(), 5, "{url}");
        assert_eq!(&raw[..3], &["api", "v1", "servers"]);
        assert_eq!(raw[4], "logs");
        assert!(raw[3].is_ascii(), "{}", raw[3]);
        for c in ['/', '?', '#', ' ', '\\'] {
            assert!(!raw[3].contains(c), "{c:?} left bare in {}", raw[3]);
        }
        assert_eq!(decoded(raw[3]), name);
        // The URL as sent (a string, parsed again by the HTTP stack) keeps that shape.
        let again = Url::parse(url.as_str()).expect("parses again");
        assert_eq!(again, url);
    }

    #[test]
    fn segments_a_url_parser_would_fold_away_are_refused() {
        let c = offline("https://ctl.example.com:8443");
        for bad in ["", ".", ".."] {
            assert!(
                matches!(c.endpoint(&["jobs", bad]), Err(ApiError::BadSegment(s)) if s == bad),
                "{bad:?}"
            );
        }
        // Dots inside a name, or escaped ones, are just text.
        let url = c.endpoint(&["jobs", "...", "%2e%2e"]).expect("a URL");
        assert_eq!(url.path(), "/api/v1/jobs/.../%252e%252e");
    }

    #[test]
    fn a_base_with_a_path_keeps_it() {
        let c = offline("https://ctl.example.com/outpost/");
        let url = c.endpoint(&["jobs"]).expect("a URL");
        assert_eq!(url.as_str(), "https://ctl.example.com/outpost/api/v1/jobs");
        assert_eq!(
            c.url_of(["healthz"]).expect("a URL").as_str(),
            "https://ctl.example.com/outpost/healthz"
        );
        assert!(matches!(
            Client::with_tls("not a url", no_trust()),
            Err(ApiError::BadUrl { .. })
        ));
    }

    #[test]
    fn queries_are_serialised_by_serde_and_round_trip() {
        let c = offline("https://ctl.example.com:8443");
        let query = ServerQuery {
            environment: Some("prod&env=x#y z".into()),
            tag: Some("dc=fra1".into()),
            active: Some(true),
            limit: Some(1000),
            offset: None,
        };
        let req = c
            .call(Method::GET, &["servers"])
            .expect("a request")
            .query(&query)
            .build()
            .expect("builds");
        let pairs: Vec<(String, String)> = req.url().query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            [
                ("environment".into(), "prod&env=x#y z".into()),
                ("tag".into(), "dc=fra1".into()),
                ("active".into(), "true".into()),
                ("limit".into(), "1000".into()),
            ]
        );
        let jobs = JobQuery {
            status: Some(crate::JobStatus::Running),
            ..Default::default()
        };
        let req = c
            .call(Method::GET, &["jobs"])
            .expect("a request")
            .query(&jobs)
            .build()
            .expect("builds");
        assert_eq!(req.url().query(), Some("status=running"));
    }
}
