//! The edge: what faces browsers and operators. The event stream (SSE) and
//! its listener, the home page's live thread list, access (who is asking),
//! the sign-in pages, security headers, export, health and metrics endpoints.

pub mod access;
pub mod account_pages;
pub mod close_delimited;
pub mod connections;
pub mod export;
pub mod health;
pub mod limits;
pub mod member_pages;
pub mod oidc_pages;
pub mod passkey_pages;
pub mod plain_html;
pub mod security;
pub mod sse;
pub mod sse_listener;
pub mod thread_list;
