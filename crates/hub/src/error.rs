//! HTTP errors in the documented shape: `{"error":{"code","message","index"?}}`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use protocol::{ErrorCode, HttpError, HttpErrorBody};

/// An error answer of any route. Internal causes are logged, never echoed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Rejected { code: ErrorCode, message: String, index: Option<usize> },
    #[error("the event log is unavailable")]
    Unavailable(#[source] storage::Error),
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Rejected { code, message: message.into(), index: None }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    fn code(&self) -> ErrorCode {
        match self {
            Self::Rejected { code, .. } => *code,
            Self::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}

impl From<storage::Error> for ApiError {
    fn from(error: storage::Error) -> Self {
        Self::Unavailable(error)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let (message, index) = match self {
            Self::Rejected { message, index, .. } => (message.clone(), *index),
            Self::Unavailable(cause) => {
                tracing::error!(error = %cause, cause = ?std::error::Error::source(cause), "event log unavailable");
                ("the event log is unavailable; retry later".to_owned(), None)
            }
        };
        HttpResponse::build(self.status_code())
            .json(HttpErrorBody { error: HttpError { code: self.code(), message, index } })
    }
}
