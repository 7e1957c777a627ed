//! A file sent as a download: its length, name and `no-store`, streamed from an open file. The
//! API's bundle route and the web UI's bundle form answer with the same response.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use tokio_util::io::ReaderStream;

use super::error::ApiError;
use crate::service::agents::Bundle;

/// The install bundle as a `201 Created` gzip attachment.
pub fn bundle(bundle: Bundle) -> Result<Response, ApiError> {
    let body = Body::from_stream(ReaderStream::new(tokio::fs::File::from_std(bundle.file)));
    Response::builder()
        .status(StatusCode::CREATED)
        .header(header::CONTENT_TYPE, "application/gzip")
        .header(header::CONTENT_LENGTH, bundle.len)
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}\"", bundle.file_name),
        )
        .header(header::CACHE_CONTROL, "no-store")
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}
