//! The crate's error, and the one place it maps to a gRPC status code.

use fargo_runtime::storage::StorageError;
use tonic::{Code, Status};

use crate::engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum ThumbError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooBig(String),
    #[error("{0}")]
    Internal(String),
}

impl ThumbError {
    pub fn code(&self) -> Code {
        match self {
            Self::BadRequest(_) | Self::TooBig(_) => Code::InvalidArgument,
            Self::Engine(e) => match e {
                EngineError::NotFound { .. } => Code::NotFound,
                EngineError::PastEnd { .. } => Code::OutOfRange,
                EngineError::Invalid { .. }
                | EngineError::NoVideo { .. }
                | EngineError::FrameTooLarge { .. }
                | EngineError::Unsupported { .. } => Code::InvalidArgument,
                EngineError::Unreachable { .. } => Code::Unavailable,
                EngineError::Cancelled => Code::Cancelled,
                EngineError::Internal { .. } => Code::Internal,
            },
            Self::Storage(e) => e.code(),
            Self::Internal(_) => Code::Internal,
        }
    }
}

impl From<ThumbError> for Status {
    fn from(e: ThumbError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}
