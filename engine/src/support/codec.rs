//! The binary encoding of checkpoint state: postcard (serde, compact, maintained), one place
//! so that the ingest state, the rules state and the checkpoint envelope always agree.

use serde::{Deserialize, Serialize};

/// Why state could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(#[from] postcard::Error);

/// Encodes `value`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_stdvec(value)?)
}

/// Decodes a value that [`encode`] wrote.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CodecError> {
    Ok(postcard::from_bytes(bytes)?)
}
