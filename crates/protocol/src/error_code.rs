//! Stable error codes, shared by WebSocket error frames and HTTP error bodies.

use serde::{Deserialize, Serialize};

/// The `code` of an error frame or HTTP error body. The set is part of the contract: clients branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnknownOp,
    /// HTTP only: a missing, malformed, badly signed or expired token (always the same answer).
    Unauthorized,
    Forbidden,
    /// HTTP only: what the request names does not exist (a revocation to lift).
    NotFound,
    TooLarge,
    RateLimited,
    LimitExceeded,
    /// HTTP only: the event log cannot be reached.
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnknownOp => "unknown_op",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::TooLarge => "too_large",
            Self::RateLimited => "rate_limited",
            Self::LimitExceeded => "limit_exceeded",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status an answer with this code carries.
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest | Self::UnknownOp => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::TooLarge => 413,
            Self::RateLimited | Self::LimitExceeded => 429,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every HTTP error: `{"error":{"code","message","index"?}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpErrorBody {
    pub error: HttpError,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpError {
    pub code: ErrorCode,
    pub message: String,
    /// The first bad event of a publish batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

impl HttpErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { error: HttpError { code, message: message.into(), index: None } }
    }
}
