//! Why a service refused or failed, in the domain's words: the API turns each kind into a
//! status and a stable code, the web UI into a page. The store's errors are sorted here once,
//! so neither port looks inside them.

use crate::store::replica::{Miss, ReadError};
use crate::store::StoreError;

/// What kind of refusal or failure, which is what a caller decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed (not its values: those are [`Kind::Unprocessable`]).
    BadRequest,
    /// No caller, or an unknown one.
    Unauthorized,
    /// The caller may not do this.
    Forbidden,
    NotFound,
    /// The state of something named forbids it (a name taken, a job already final).
    Conflict,
    /// More than a limit allows.
    TooLarge,
    /// Values the rules refuse.
    Unprocessable,
    /// Too many attempts: try again after this many seconds.
    TooMany {
        retry_after: u64,
    },
    /// The database cannot be reached now, or undid the request in a lock conflict: the
    /// same request may pass if tried again.
    Unavailable,
    /// A fault of the controller's own; the message is safe to show, the detail is logged.
    Internal,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    pub kind: Kind,
    pub message: String,
    /// Each bad field with why, when one request has several (a survey's answers).
    pub fields: Vec<outpost_api::FieldError>,
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

impl ServiceError {
    pub fn new(kind: Kind, message: impl Into<String>) -> ServiceError {
        ServiceError {
            kind,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// Values the rules refuse, field by field: the message names them all.
    pub fn fields(fields: Vec<outpost_api::FieldError>) -> ServiceError {
        let named: Vec<String> = fields
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect();
        ServiceError {
            kind: Kind::Unprocessable,
            message: named.join("; "),
            fields,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ServiceError {
        ServiceError::new(Kind::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ServiceError {
        ServiceError::new(Kind::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> ServiceError {
        ServiceError::new(Kind::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> ServiceError {
        ServiceError::new(Kind::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> ServiceError {
        ServiceError::new(Kind::Conflict, message)
    }

    pub fn too_large(message: impl Into<String>) -> ServiceError {
        ServiceError::new(Kind::TooLarge, message)
    }

    pub fn unprocessable(message: impl Into<String>) -> ServiceError {
        ServiceError::new(Kind::Unprocessable, message)
    }

    pub fn too_many(message: impl Into<String>, retry_after: u64) -> ServiceError {
        ServiceError::new(
            Kind::TooMany {
                retry_after: retry_after.max(1),
            },
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> ServiceError {
        ServiceError::new(Kind::Internal, message)
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> ServiceError {
        match &e {
            StoreError::NotFound(_) => ServiceError::not_found(e.to_string()),
            StoreError::Conflict(_) | StoreError::InUse { .. } | StoreError::WrongState { .. } => {
                ServiceError::conflict(e.to_string())
            }
            StoreError::Invalid { .. } => ServiceError::unprocessable(e.to_string()),
            _ if e.is_unavailable() => ServiceError::new(
                Kind::Unavailable,
                "the database is not reachable right now; try again",
            ),
            // Its transaction was rolled back, and the same request may well pass at once.
            _ if e.is_conflict() => {
                tracing::warn!(error = %e, "a lock conflict undid a request's transaction");
                ServiceError::new(
                    Kind::Unavailable,
                    "the request met a concurrent change and was undone; try again",
                )
            }
            _ => {
                // Logged here, not sent: it may name tables or values.
                tracing::error!(error = %e, "store error behind a request");
                ServiceError::internal("the controller could not complete the request; see its log")
            }
        }
    }
}

/// A read of a service failed on the read replica: the primary is asked again when the replica
/// may be at fault or behind (see [`crate::store::Store::read`]).
impl ReadError for ServiceError {
    fn miss(&self) -> Option<Miss> {
        match self.kind {
            Kind::NotFound => Some(Miss::Row),
            Kind::Unavailable | Kind::Internal => Some(Miss::Replica),
            _ => None,
        }
    }
}
