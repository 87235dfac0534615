//! Token estimates for replies whose provider sent no usage (stopped early,
//! or a provider without usage), with OpenAI's o200k tokenizer.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

/// The tokenizer, loaded on first need (about a second of CPU, ~50 MB held
/// from then on; callers are on blocking threads). It is not loaded at
/// start-up: an instance whose provider reports usage never needs it.
fn tokenizer() -> &'static CoreBPE {
    static BPE: OnceLock<CoreBPE> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::o200k_base().expect("the o200k tokenizer loads"))
}

/// [`count`] for several texts, off the runtime's threads (the tokenizer may
/// still be loading, and long texts take a while).
pub async fn count_blocking(texts: Vec<String>) -> Vec<i64> {
    tokio::task::spawn_blocking(move || texts.iter().map(|t| count(t)).collect())
        .await
        .unwrap_or_default()
}

/// Tokens in `text` by the o200k tokenizer.
pub fn count(text: &str) -> i64 {
    if text.is_empty() {
        return 0;
    }
    tokenizer().encode_with_special_tokens(text).len() as i64
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_real_tokens() {
        assert_eq!(super::count(""), 0);
        let n = super::count("Hello, world! This is a test of the tokenizer.");
        assert!((8..=14).contains(&n), "{n}");
    }
}
