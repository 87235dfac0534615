use leptos::prelude::*;
use leptos::server_fn::codec::GetUrl;

use crate::{error::AppError, search::SearchResults};

/// Full-text search, newest first: over every listed thread, or (`thread`)
/// within one thread, listed or not. `before` is the cursor of an older
/// page. A GET (`/api/search?q=...`), so results are linkable; 404 while
/// search is turned off.
#[server(endpoint = "search", input = GetUrl)]
pub async fn search(
    #[server(default)] q: String,
    #[server(default)] thread: Option<String>,
    #[server(default)] before: Option<i64>,
) -> Result<SearchResults, AppError> {
    use super::respond;
    use crate::search::{terms, PAGE_HITS};
    use crate::server::store::SearchScope;
    let state = respond::state();
    let result = async {
        if !state.config.search.enabled {
            return Err(AppError::NotFound(
                "Search is turned off on this server.".into(),
            ));
        }
        let scope = match &thread {
            Some(id) => {
                respond::member(&state, id).await?;
                SearchScope::Thread(id)
            }
            None => SearchScope::Listed,
        };
        let terms = terms(&q);
        let mut found = state
            .store
            .search(&terms, scope, before, PAGE_HITS + 1)
            .await?;
        let next_before = (found.len() as i64 > PAGE_HITS).then(|| {
            found.truncate(PAGE_HITS as usize);
            found.last().map_or(0, |m| m.id)
        });
        Ok(SearchResults {
            hits: found.into_iter().map(|m| m.into_hit(&terms)).collect(),
            next_before,
        })
    }
    .await;
    respond::finish(result)
}
