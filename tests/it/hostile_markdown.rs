//! Whatever a user types or a model streams, rendering it neither panics nor
//! recurses without bound, its output passes the HTML allowlist unchanged,
//! rendering it as it streams gives the same HTML as rendering it whole, and
//! a thread holding it still serves its page.

use proptest::prelude::*;
use streamchat::markdown::{to_html, Blocks};

use crate::support::{spawn_app, FakeProvider, Scripted};

/// Inputs that broke or slowed the hand-written renderer, each near 8 KiB.
pub fn adversarial() -> Vec<(&'static str, String)> {
    vec![
        ("quotes nested 8,000 deep", ">".repeat(8000)),
        (
            "ideographic-space indent under a list",
            format!("- item\n{}", "\u{3000}x\n".repeat(1500)),
        ),
        (
            "no-break space before fences",
            "\u{a0}```\nx\n".repeat(1000),
        ),
        ("open emphasis runs", "*a ".repeat(2700)),
        (
            "lists nested 2,000 deep",
            (0..2000)
                .map(|i| format!("{}- x\n", "  ".repeat(i % 400)))
                .collect(),
        ),
        ("bullets on one line", "- ".repeat(4000)),
        ("open brackets", "[".repeat(8000)),
        ("bracket pairs", "[a](".repeat(2000)),
        ("backtick runs", "`a``".repeat(2000)),
        ("underscores", "_a_ __b".repeat(1100)),
        ("angle brackets", "<a <b <".repeat(1100)),
        (
            "table cells",
            format!("{}\n{}\n", "|a".repeat(2700), "|-".repeat(2700)),
        ),
        (
            "url parentheses",
            format!("https://e.com/{}", ")".repeat(8000)),
        ),
    ]
}

/// Tags and attributes the policy may write (ammonia's allowlist).
fn allowlist() -> ammonia::Builder<'static> {
    let mut b = ammonia::Builder::empty();
    b.add_tags([
        "p",
        "strong",
        "em",
        "del",
        "code",
        "pre",
        "a",
        "span",
        "ul",
        "ol",
        "li",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "blockquote",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "br",
        "div",
        "button",
        "input",
    ])
    .add_tag_attributes("a", ["href", "rel", "target"])
    .add_tag_attributes("ol", ["start"])
    .add_tag_attributes("button", ["type", "aria-label"])
    .add_tag_attributes("input", ["type", "disabled", "checked"])
    .add_generic_attributes(["class"])
    .url_schemes(["http", "https", "mailto"].into())
    .link_rel(None)
    .strip_comments(true);
    b
}

/// The allowlist leaves the HTML exactly as it is: nothing in it is outside.
fn assert_allowed(source: &str, html: &str) {
    let cleaned = allowlist().clean(html).to_string();
    assert_eq!(
        cleaned, html,
        "the allowlist changed the HTML of {source:?}"
    );
}

/// Renders `source` in pieces of `step` bytes, as a streaming reply does.
fn streamed(source: &str, step: usize) -> String {
    let mut blocks = Blocks::default();
    let mut html = String::new();
    let mut end = 0;
    while end < source.len() {
        end = (end + step).min(source.len());
        while !source.is_char_boundary(end) {
            end += 1;
        }
        blocks.extend(&source[..end], |b| html.push_str(&b));
    }
    html.push_str(&blocks.tail);
    html
}

/// Found by the property below: a table header line was taken for a new
/// block while its delimiter row was still being written; the whole text
/// is one paragraph.
#[test]
fn a_table_is_not_a_block_before_its_delimiter_row_is_complete() {
    let source = "**\t* \t`>>~~>|#- 1. javascript:alert(1)[[>1. 1. a- * [#|-|**\n|&amp;\n|-|\t";
    for step in 1..40 {
        assert_eq!(streamed(source, step), to_html(source), "step {step}");
    }
}

#[test]
fn adversarial_inputs_render_safely() {
    for (name, source) in adversarial() {
        // Deep inputs run on a small stack: no recursion per nesting level.
        let html = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn({
                let source = source.clone();
                move || to_html(&source)
            })
            .unwrap()
            .join()
            .unwrap_or_else(|_| panic!("{name}: rendering panicked"));
        assert_allowed(name, &html);
    }
}

/// Markdown-like text built from the syntax that stresses a parser.
fn markdownish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(">".to_owned()),
        Just("- ".to_owned()),
        Just("1. ".to_owned()),
        Just("* ".to_owned()),
        Just("*".to_owned()),
        Just("**".to_owned()),
        Just("_".to_owned()),
        Just("~~".to_owned()),
        Just("`".to_owned()),
        Just("```".to_owned()),
        Just("[".to_owned()),
        Just("](".to_owned()),
        Just(")".to_owned()),
        Just("![".to_owned()),
        Just("<".to_owned()),
        Just("<script>".to_owned()),
        Just("&amp;".to_owned()),
        Just("|".to_owned()),
        Just("|-|".to_owned()),
        Just("#".to_owned()),
        Just("\n".to_owned()),
        Just("\n\n".to_owned()),
        Just("    ".to_owned()),
        Just("\t".to_owned()),
        Just("\\".to_owned()),
        Just("[ ] ".to_owned()),
        Just("http://e.com/x".to_owned()),
        Just("javascript:alert(1)".to_owned()),
        // Every Unicode space, as indentation or anywhere.
        prop::sample::select(vec![
            "\u{a0}", "\u{1680}", "\u{2000}", "\u{2001}", "\u{2002}", "\u{2003}", "\u{2004}",
            "\u{2005}", "\u{2006}", "\u{2007}", "\u{2008}", "\u{2009}", "\u{200a}", "\u{2028}",
            "\u{2029}", "\u{202f}", "\u{205f}", "\u{3000}", "\u{feff}", "\u{85}", "\u{b}", "\u{c}",
            "\r", "\0",
        ])
        .prop_map(str::to_owned),
        "[a-z ]{1,6}",
        "\\PC{1,3}",
    ];
    prop::collection::vec(piece, 0..120).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn any_markdownish_text_renders_inside_the_allowlist(source in markdownish()) {
        let html = to_html(&source);
        assert_allowed(&source, &html);
    }

    #[test]
    fn streamed_rendering_equals_whole_rendering(source in markdownish(), step in 1usize..40) {
        prop_assert_eq!(streamed(&source, step), to_html(&source));
    }

    #[test]
    fn deep_repetition_neither_panics_nor_overflows(
        unit in prop::sample::select(vec![">", "- ", "* ", "1. ", "[", "*", "_", "`", "  - ", "> - ", "\u{3000}- "]),
        depth in 1usize..10_000,
    ) {
        let source = format!("{}x", unit.repeat(depth));
        let html = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || to_html(&source))
            .unwrap()
            .join();
        prop_assert!(html.is_ok(), "{unit:?} x {depth} panicked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_holding_any_of_them_serves_its_page() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["ok"])).await).await;
    for (name, source) in adversarial() {
        let body: String = source.chars().take(8000).collect();
        let body = match body.len() {
            n if n > 8 * 1024 => body[..body.floor_char_boundary(8 * 1024)].to_owned(),
            _ => body,
        };
        let response = app
            .post_raw(&[("thread", "lobby"), ("author", "Mallory"), ("body", &body)])
            .await;
        assert!(
            response.status().is_success(),
            "{name}: post {}",
            response.status()
        );
        let page = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            app.http.get(format!("{}/t/lobby", app.url)).send(),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: the page did not answer"))
        .unwrap_or_else(|e| panic!("{name}: the server died: {e}"));
        assert_eq!(page.status().as_u16(), 200, "{name}");
        page.text().await.expect("a whole page");
    }
}
