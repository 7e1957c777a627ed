//! A typed HTTPS client for the API. It trusts the CA it is given (the Outpost CA, or an
//! operator's own) and nothing else, speaks the bodies of [`crate::types`], and turns every
//! refusal into an [`ApiError`] that carries the server's code and sentence.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::types::ErrorBody;

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
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
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

    /// A request to `path` (`/api/v1/…`), with the bearer token if there is one.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, format!("{}{path}", self.base));
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
