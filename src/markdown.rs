//! Message bodies as Markdown, rendered to HTML that is safe to insert.
//!
//! Message text is untrusted (model output above all), so this is also the
//! sanitizer, and the same function runs on the server (SSR) and in the
//! browser (while a reply streams): what a reader sees cannot depend on
//! which side drew it.
//!
//! The rules: raw HTML in the source is shown as text, never interpreted;
//! links keep only `http`, `https`, `mailto` and relative targets and open
//! in a new tab without access to this page; images become links (no
//! remote loads); code blocks get a copy button. Everything else is markup
//! the renderer writes itself.

use pulldown_cmark::{html, CodeBlockKind, CowStr, Event, Options, Parser, Tag, TagEnd};

/// Renders `source` to sanitized HTML.
pub fn to_html(source: &str) -> String {
    let options =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    // Closing markup for each open link or image: a safe one closes an
    // anchor, an unsafe one the span it became.
    let mut closers: Vec<&'static str> = Vec::new();
    let events = Parser::new_ext(source, options).map(move |event| match event {
        // Raw HTML is text.
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        Event::Start(Tag::Link { dest_url, .. }) | Event::Start(Tag::Image { dest_url, .. }) => {
            if is_safe_url(&dest_url) {
                closers.push("</a>");
                Event::Html(CowStr::from(format!(
                    r#"<a href="{}" rel="noopener noreferrer nofollow" target="_blank">"#,
                    escape_attr(&dest_url)
                )))
            } else {
                closers.push("</span>");
                Event::Html(CowStr::Borrowed(r#"<span class="unsafe-link">"#))
            }
        }
        Event::End(TagEnd::Link) | Event::End(TagEnd::Image) => {
            Event::Html(CowStr::Borrowed(closers.pop().unwrap_or("")))
        }
        Event::Start(Tag::CodeBlock(kind)) => {
            let language = match &kind {
                CodeBlockKind::Fenced(info) => info
                    .split_whitespace()
                    .next()
                    .filter(|l| l.chars().all(|c| c.is_ascii_alphanumeric() || "+-_#.".contains(c)))
                    .map(|l| format!(r#" class="language-{l}""#))
                    .unwrap_or_default(),
                CodeBlockKind::Indented => String::new(),
            };
            Event::Html(CowStr::from(format!(
                r#"<div class="code"><button type="button" class="copy" aria-label="Copy code">Copy</button><pre><code{language}>"#
            )))
        }
        Event::End(TagEnd::CodeBlock) => Event::Html(CowStr::Borrowed("</code></pre></div>")),
        other => other,
    });
    let mut out = String::with_capacity(source.len() * 3 / 2 + 16);
    html::push_html(&mut out, events);
    out
}

/// Whether a link target may be followed: `http`, `https`, `mailto`, or no
/// scheme at all (relative). Browsers ignore ASCII whitespace and control
/// characters inside a scheme (`java\tscript:`), so they are ignored here.
pub fn is_safe_url(url: &str) -> bool {
    let cleaned: String = url
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && !c.is_control())
        .collect::<String>()
        .to_ascii_lowercase();
    match cleaned.find([':', '/', '?', '#']) {
        Some(i) if cleaned.as_bytes()[i] == b':' => {
            matches!(&cleaned[..i], "http" | "https" | "mailto")
        }
        _ => true,
    }
}

fn escape_attr(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_common_markdown() {
        let html =
            to_html("**bold** and `code`\n\n- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |");
        assert!(html.contains("<strong>bold</strong>"), "{html}");
        assert!(html.contains("<code>code</code>"), "{html}");
        assert!(html.contains("<li>one</li>"), "{html}");
        assert!(html.contains("<table>"), "{html}");
    }

    #[test]
    fn code_blocks_get_a_copy_button_and_escaped_text() {
        let html = to_html("```rust\nfn main() { println!(\"<hi>\"); }\n```");
        assert!(
            html.contains(r#"<button type="button" class="copy""#),
            "{html}"
        );
        assert!(html.contains(r#"<code class="language-rust">"#), "{html}");
        assert!(html.contains("&lt;hi&gt;"), "{html}");
    }

    #[test]
    fn safe_links_open_in_a_new_tab_without_opener() {
        let html = to_html("[docs](https://example.com/a?b=1&c=\"2\")");
        assert!(
            html.contains(r#"<a href="https://example.com/a?b=1&amp;c=&quot;2&quot;" rel="noopener noreferrer nofollow" target="_blank">docs</a>"#),
            "{html}"
        );
    }

    #[test]
    fn url_schemes() {
        for safe in [
            "https://x.y",
            "http://x",
            "mailto:a@b.c",
            "/t/abc",
            "#top",
            "page?x=a:b",
            "x/y:z",
        ] {
            assert!(is_safe_url(safe), "{safe}");
        }
        for unsafe_url in [
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "java\tscript:x",
            " javascript:x",
            "data:text/html,x",
            "vbscript:x",
            "\u{1}javascript:x",
        ] {
            assert!(!is_safe_url(unsafe_url), "{unsafe_url:?}");
        }
    }
}
