//! Who uses this page.

use leptos::prelude::RwSignal;

/// The name of whoever uses this page (shared by the composer, the reply
/// buttons and the tool-call cards, so Stop and a decision record who
/// pressed them).
#[derive(Clone, Copy)]
pub struct Viewer(pub RwSignal<String>);

/// Who may approve or deny a waiting tool call on this page: only the
/// person who asked (`tools.approver = "requester"`), or anyone in the
/// thread. `fixed_name` is true when the viewer's name is the account's or
/// the proxy's (not typed), so the page can tell them it is not theirs to
/// decide.
#[derive(Clone, Copy)]
pub struct Approvers {
    pub requester_only: bool,
    pub fixed_name: bool,
}
