//! Components only; state lives in `live` and data comes from `api`.

pub mod body;
pub mod composer;
pub mod home;
pub mod message;
pub mod search;
pub mod thread;
pub mod toast;
pub mod tool_calls;
pub mod viewer;
