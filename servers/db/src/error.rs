//! A database failure, carrying the protocol code a client is told.

use protocol::proto::ErrorCode;

/// A failure with the code a client is told.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", code.as_str_name())]
pub struct DbError {
    /// The documented code.
    pub code: ErrorCode,
    /// What went wrong, in the database's words where it has them.
    pub message: String,
}

impl DbError {
    /// An error of `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        DbError {
            code,
            message: message.into(),
        }
    }
}
