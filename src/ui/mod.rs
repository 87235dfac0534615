//! Components only; state lives in `live` and data comes from `api`.

pub mod composer;
pub mod message;
pub mod thread;
