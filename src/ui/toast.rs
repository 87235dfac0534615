use leptos::prelude::*;

/// Passing error messages in a corner, each saying what to do; they leave
/// by themselves or when dismissed.
#[derive(Clone, Copy)]
pub struct Toasts(RwSignal<Vec<(u32, String)>>, StoredValue<u32>);

impl Toasts {
    pub fn provide() -> Self {
        let toasts = Self(RwSignal::new(Vec::new()), StoredValue::new(0));
        provide_context(toasts);
        toasts
    }

    pub fn show(&self, message: impl Into<String>) {
        let id = self.1.get_value();
        self.1.set_value(id + 1);
        self.0.update(|t| t.push((id, message.into())));
        let list = self.0;
        set_timeout(
            move || list.update(|t| t.retain(|(i, _)| *i != id)),
            std::time::Duration::from_secs(8),
        );
    }
}

/// Shows an error as a toast, if there is a toast area on the page.
pub fn toast(message: impl Into<String>) {
    if let Some(toasts) = use_context::<Toasts>() {
        toasts.show(message);
    }
}

#[component]
pub fn ToastArea(toasts: Toasts) -> impl IntoView {
    let list = toasts.0;
    view! {
        <div class="toasts">
            {move || list.get().into_iter().map(|(id, text)| view! {
                <p class="toast" role="alert">
                    <span>{text}</span>
                    <button type="button" aria-label="Dismiss" on:click=move |_| list.update(|t| t.retain(|(i, _)| *i != id))>"×"</button>
                </p>
            }).collect_view()}
        </div>
    }
}
