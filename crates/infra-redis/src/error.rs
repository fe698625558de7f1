//! Driver errors, translated once into the ports' vocabulary.

use domain::ports::{QueueError, StoreError};
use fred::error::{Error, ErrorKind};

/// A reply that does not convert (bad UTF-8, an unexpected shape) is a corrupt value; anything else means
/// Redis could not be reached or refused the command.
pub(crate) fn store_err(e: Error) -> StoreError {
    match e.kind() {
        ErrorKind::Parse => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

pub(crate) fn queue_err(e: Error) -> QueueError {
    match e.kind() {
        ErrorKind::Parse => QueueError::Corrupt(e.to_string()),
        _ => QueueError::Unavailable(e.to_string()),
    }
}
