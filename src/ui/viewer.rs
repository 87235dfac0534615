//! Who uses this page.

use leptos::prelude::RwSignal;

/// The name of whoever uses this page (shared by the composer, the reply
/// buttons and the tool-call cards, so Stop and a decision record who
/// pressed them).
#[derive(Clone, Copy)]
pub struct Viewer(pub RwSignal<String>);
