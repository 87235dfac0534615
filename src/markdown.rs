//! Message bodies as Markdown, rendered to HTML that is safe to insert.
//!
//! Parsing is `pulldown-cmark`'s (CommonMark with GFM tables, task lists and
//! strikethrough); what reaches the page is decided here, by a policy applied
//! to its events. Message text is untrusted (model output above all), so the
//! policy is also the sanitizer:
//!
//! - raw HTML, block or inline, is shown as text;
//! - no attribute comes from the source except a link target, which keeps
//!   only `http`, `https`, `mailto` and relative targets and opens in a new
//!   tab without access to this page (anything else becomes plain text);
//! - images become links (no remote loads), code languages become a class
//!   of `[A-Za-z0-9+#._-]` only, code blocks get a Copy button;
//! - nesting deeper than [`MAX_DEPTH`] keeps its text but loses its tags, so
//!   no input builds a DOM deep enough to hurt a browser.
//!
//! Output is in the canonical form an HTML parser serialises back
//! unchanged (tests check it against `ammonia` with the same allowlist).
//!
//! Streaming: a body is rendered as a sequence of top-level blocks, each
//! from its own slice of the source (see [`Blocks`]). Blocks that can no
//! longer change are rendered once; only the last, open one is re-rendered
//! as text arrives, so a delta costs the same at any length of reply. The
//! server renders a finished body with the same splitting, so what a
//! reader sees cannot depend on which side drew it.
//!
//! Every step is a loop over a flat event stream: no recursion, and the work
//! is linear in the input (a benchmark line reports it).

use std::ops::Range;

use pulldown_cmark::{
    Alignment, CodeBlockKind, Event, HeadingLevel, LinkType, Options, Parser, Tag, TagEnd,
};

/// Deepest nesting of elements written; deeper structure keeps only its text.
pub const MAX_DEPTH: usize = 32;

/// The Copy button every code block starts with.
const COPY_BUTTON: &str =
    r#"<button type="button" class="copy" aria-label="Copy code">Copy</button>"#;
/// What every followed link carries.
const LINK_ATTRS: &str = r#" rel="noopener noreferrer nofollow" target="_blank""#;

fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS
}

/// Renders `source` to sanitized HTML: the concatenation of its blocks.
pub fn to_html(source: &str) -> String {
    let mut out = String::with_capacity(source.len() * 5 / 4 + 16);
    let mut blocks = Blocks::default();
    blocks.extend(source, |html| out.push_str(&html));
    out.push_str(&blocks.tail);
    out
}

/// A body being rendered block by block as it grows.
///
/// Finished blocks (ones later text cannot change) are handed out once, by
/// [`Blocks::extend`]; `tail` is the HTML of the open last block,
/// re-rendered on every call. A call costs the length of the open block
/// (plus any newly finished ones), not of the body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blocks {
    pub tail: String,
    /// Byte offset in the body where the open block starts.
    tail_start: usize,
}

impl Blocks {
    /// Brings the rendering up to `source`, which must be the previously
    /// rendered body with text appended (for any other text start from
    /// `Blocks::default()`). Each newly finished block's HTML goes to
    /// `finished`, in order.
    pub fn extend(&mut self, source: &str, mut finished: impl FnMut(String)) {
        let from = floor_char_boundary(source, self.tail_start.min(source.len()));
        let (done, tail_start) = split(source, from);
        for range in done {
            finished(render(&source[range]));
        }
        self.tail_start = tail_start;
        self.tail = render(&source[tail_start..]);
    }
}

fn floor_char_boundary(s: &str, mut at: usize) -> usize {
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Splits `source[from..]` (which starts at a block boundary) into the
/// slices of finished blocks and the start of the open one.
///
/// A top-level block is finished once the line where the next block starts
/// is complete: whether a line opens a new block or continues the previous
/// one (`#` is a heading, `#tag` is text) is only known at its end. Only
/// complete lines are parsed: a block whose start depends on the line
/// after it (a table needs its delimiter row) is not taken from a line
/// still being written. Each slice starts at the beginning of its block's
/// first line, so rendered on its own it parses as it did in the whole.
fn split(source: &str, from: usize) -> (Vec<Range<usize>>, usize) {
    let text = &source[from..];
    let complete = &text[..text.rfind('\n').map_or(0, |nl| nl + 1)];
    let mut starts = Vec::new();
    let mut depth = 0usize;
    for (event, range) in Parser::new_ext(complete, options()).into_offset_iter() {
        let at_top = depth == 0;
        match event {
            Event::Start(_) => depth += 1,
            Event::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
        if at_top && !matches!(event, Event::End(_)) {
            let line_start = complete[..range.start].rfind('\n').map_or(0, |nl| nl + 1);
            if starts.last() != Some(&line_start) {
                starts.push(line_start);
            }
        }
    }
    // The first block takes whatever precedes it (blank lines, definitions).
    if let Some(first) = starts.first_mut() {
        *first = 0;
    }
    let mut finished = Vec::new();
    if starts.len() < 2 {
        return (finished, from);
    }
    for pair in starts.windows(2) {
        finished.push(from + pair[0]..from + pair[1]);
    }
    (finished, from + starts[starts.len() - 1])
}

/// Renders one slice of Markdown under the policy.
fn render(source: &str) -> String {
    let mut out = String::with_capacity(source.len() * 5 / 4 + 16);
    Renderer::default().run(source, &mut out);
    out
}

/// What an `End` event writes, pushed by its `Start`.
#[derive(Clone, Copy)]
enum Close {
    /// Nothing (a tag dropped by the policy or beyond [`MAX_DEPTH`]).
    Nothing,
    Tag(&'static str),
    /// The end of a link (or an image shown as one): its closing tag, if any.
    Link(&'static str),
    Table,
    TableHead,
}

#[derive(Default)]
struct Renderer {
    /// One entry per open element, innermost last.
    open: Vec<Close>,
    /// Links (or images shown as links) open now: a link inside one is text.
    links: usize,
    code_block: bool,
    in_table_head: bool,
    alignments: Vec<Alignment>,
    cell: usize,
}

impl Renderer {
    fn run(mut self, source: &str, out: &mut String) {
        for event in Parser::new_ext(source, options()) {
            match event {
                Event::Start(tag) => self.start(tag, out),
                Event::End(tag) => self.end(tag, out),
                Event::Text(text) => {
                    if self.code_block || self.links > 0 {
                        escape(&text, out);
                    } else {
                        linkify(&text, out);
                    }
                }
                Event::Code(code) => {
                    out.push_str("<code>");
                    escape(&code, out);
                    out.push_str("</code>");
                }
                // Raw HTML is text like any other.
                Event::Html(html) | Event::InlineHtml(html) => escape(&html, out),
                Event::InlineMath(text) | Event::DisplayMath(text) => escape(&text, out),
                Event::FootnoteReference(label) => escape(&label, out),
                Event::SoftBreak => out.push('\n'),
                Event::HardBreak => out.push_str("<br>\n"),
                Event::Rule => out.push_str("<hr>\n"),
                Event::TaskListMarker(checked) => out.push_str(if checked {
                    r#"<input type="checkbox" disabled="" checked=""> "#
                } else {
                    r#"<input type="checkbox" disabled=""> "#
                }),
            }
        }
        // A parser always balances its events; this guards the policy's own.
        while let Some(close) = self.open.pop() {
            self.close(close, out);
        }
    }

    fn start(&mut self, tag: Tag, out: &mut String) {
        if self.open.len() >= MAX_DEPTH {
            // Too deep: keep the text, drop the structure.
            if matches!(tag, Tag::CodeBlock(_)) {
                self.code_block = true;
            }
            self.open.push(Close::Nothing);
            return;
        }
        let close = match tag {
            Tag::Paragraph => {
                out.push_str("<p>");
                Close::Tag("</p>\n")
            }
            Tag::Heading { level, .. } => {
                let (open, close) = match level {
                    HeadingLevel::H1 => ("<h1>", "</h1>\n"),
                    HeadingLevel::H2 => ("<h2>", "</h2>\n"),
                    HeadingLevel::H3 => ("<h3>", "</h3>\n"),
                    HeadingLevel::H4 => ("<h4>", "</h4>\n"),
                    HeadingLevel::H5 => ("<h5>", "</h5>\n"),
                    HeadingLevel::H6 => ("<h6>", "</h6>\n"),
                };
                out.push_str(open);
                Close::Tag(close)
            }
            Tag::BlockQuote(_) => {
                out.push_str("<blockquote>\n");
                Close::Tag("</blockquote>\n")
            }
            Tag::CodeBlock(kind) => {
                self.code_block = true;
                out.push_str(r#"<div class="code">"#);
                out.push_str(COPY_BUTTON);
                out.push_str("<pre><code");
                if let CodeBlockKind::Fenced(info) = kind {
                    if let Some(language) = code_language(&info) {
                        out.push_str(r#" class="language-"#);
                        out.push_str(language);
                        out.push('"');
                    }
                }
                out.push('>');
                Close::Tag("</code></pre></div>\n")
            }
            // Shown as a paragraph of text.
            Tag::HtmlBlock => {
                out.push_str("<p>");
                Close::Tag("</p>\n")
            }
            Tag::List(Some(1)) => {
                out.push_str("<ol>\n");
                Close::Tag("</ol>\n")
            }
            Tag::List(Some(start)) => {
                out.push_str("<ol start=\"");
                out.push_str(&start.to_string());
                out.push_str("\">\n");
                Close::Tag("</ol>\n")
            }
            Tag::List(None) => {
                out.push_str("<ul>\n");
                Close::Tag("</ul>\n")
            }
            Tag::Item => {
                out.push_str("<li>");
                Close::Tag("</li>\n")
            }
            Tag::Table(alignments) => {
                self.alignments = alignments;
                out.push_str("<table>\n");
                Close::Table
            }
            Tag::TableHead => {
                self.in_table_head = true;
                self.cell = 0;
                out.push_str("<thead>\n<tr>");
                Close::TableHead
            }
            Tag::TableRow => {
                self.cell = 0;
                out.push_str("<tr>");
                Close::Tag("</tr>\n")
            }
            Tag::TableCell => {
                let name = if self.in_table_head { "th" } else { "td" };
                out.push('<');
                out.push_str(name);
                match self.alignments.get(self.cell) {
                    Some(Alignment::Left) => out.push_str(r#" class="align-left""#),
                    Some(Alignment::Center) => out.push_str(r#" class="align-center""#),
                    Some(Alignment::Right) => out.push_str(r#" class="align-right""#),
                    _ => {}
                }
                out.push('>');
                self.cell += 1;
                Close::Tag(if self.in_table_head { "</th>" } else { "</td>" })
            }
            Tag::Emphasis => {
                out.push_str("<em>");
                Close::Tag("</em>")
            }
            Tag::Strong => {
                out.push_str("<strong>");
                Close::Tag("</strong>")
            }
            Tag::Strikethrough => {
                out.push_str("<del>");
                Close::Tag("</del>")
            }
            Tag::Link {
                link_type,
                dest_url,
                ..
            } => {
                let target = if link_type == LinkType::Email && !dest_url.starts_with("mailto:") {
                    format!("mailto:{dest_url}")
                } else {
                    dest_url.to_string()
                };
                self.open_link(&target, out)
            }
            // Images become links to them: nothing loads from elsewhere.
            Tag::Image { dest_url, .. } => self.open_link(&dest_url, out),
            // Not enabled; their text is kept.
            Tag::FootnoteDefinition(_)
            | Tag::DefinitionList
            | Tag::DefinitionListTitle
            | Tag::DefinitionListDefinition
            | Tag::Superscript
            | Tag::Subscript
            | Tag::MetadataBlock(_) => Close::Nothing,
        };
        self.open.push(close);
    }

    fn open_link(&mut self, target: &str, out: &mut String) -> Close {
        self.links += 1;
        if self.links > 1 {
            // No link inside a link: the inner one is its text.
            Close::Link("")
        } else if is_safe_url(target) {
            out.push_str("<a href=\"");
            escape_attr(target, out);
            out.push('"');
            out.push_str(LINK_ATTRS);
            out.push('>');
            Close::Link("</a>")
        } else {
            out.push_str(r#"<span class="unsafe-link">"#);
            Close::Link("</span>")
        }
    }

    fn end(&mut self, tag: TagEnd, out: &mut String) {
        if matches!(tag, TagEnd::CodeBlock) {
            self.code_block = false;
        }
        if matches!(tag, TagEnd::TableHead) {
            self.in_table_head = false;
        }
        if let Some(close) = self.open.pop() {
            self.close(close, out);
        }
    }

    fn close(&mut self, close: Close, out: &mut String) {
        match close {
            Close::Nothing => {}
            Close::Tag(tag) => out.push_str(tag),
            Close::Link(tag) => {
                self.links -= 1;
                out.push_str(tag);
            }
            Close::Table => out.push_str("</tbody>\n</table>\n"),
            Close::TableHead => out.push_str("</tr>\n</thead>\n<tbody>\n"),
        }
    }
}

/// The language class of a fenced code block: its first word, if it is
/// made only of `[A-Za-z0-9+#._-]` and at most 32 bytes.
fn code_language(info: &str) -> Option<&str> {
    info.split_whitespace().next().filter(|l| {
        l.len() <= 32
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-_#.".contains(c))
    })
}

/// Whether a link target may be followed: `http`, `https`, `mailto`, or no
/// scheme at all (relative). Browsers ignore ASCII whitespace and control
/// characters inside a scheme (`java\tscript:`), so they are ignored here.
pub fn is_safe_url(url: &str) -> bool {
    let cleaned: String = url
        .chars()
        .filter(|c| !c.is_ascii_whitespace() && !c.is_control())
        .take_while(|c| !matches!(c, '/' | '?' | '#'))
        .collect::<String>()
        .to_ascii_lowercase();
    match cleaned.find(':') {
        Some(i) => matches!(&cleaned[..i], "http" | "https" | "mailto"),
        None => true,
    }
}

/// Escapes text for element content, in the form HTML serialisers write.
pub fn escape(text: &str, out: &mut String) {
    let mut last = 0;
    for (i, c) in text.char_indices() {
        let replacement = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '\u{a0}' => "&nbsp;",
            // A parser turns CR into LF (Markdown already read it as a line
            // end) and drops NUL.
            '\r' | '\0' => "",
            _ => continue,
        };
        out.push_str(&text[last..i]);
        out.push_str(replacement);
        last = i + c.len_utf8();
    }
    out.push_str(&text[last..]);
}

/// Escapes text for a double-quoted attribute value.
pub fn escape_attr(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\u{a0}' => out.push_str("&nbsp;"),
            '\r' | '\0' => {}
            c => out.push(c),
        }
    }
}

/// Text with bare `http(s)://` URLs made into links.
fn linkify(text: &str, out: &mut String) {
    let mut rest = text;
    while let Some(at) = find_url_start(rest) {
        match bare_url(&rest[at..]) {
            Some(url) => {
                escape(&rest[..at], out);
                out.push_str("<a href=\"");
                escape_attr(url, out);
                out.push('"');
                out.push_str(LINK_ATTRS);
                out.push('>');
                escape(url, out);
                out.push_str("</a>");
                rest = &rest[at + url.len()..];
            }
            None => {
                let skip = at + "http".len();
                escape(&rest[..skip], out);
                rest = &rest[skip..];
            }
        }
    }
    escape(rest, out);
}

/// Where the next `http://` or `https://` starting a word is.
fn find_url_start(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = text[from..].find("http") {
        let at = from + at;
        let after = &text[at..];
        let starts_word = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        if starts_word && (after.starts_with("http://") || after.starts_with("https://")) {
            return Some(at);
        }
        from = at + "http".len();
    }
    None
}

/// A bare URL at the start of `rest`, without trailing punctuation and
/// unbalanced closing parentheses.
fn bare_url(rest: &str) -> Option<&str> {
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '<')
        .unwrap_or(rest.len());
    let mut url = &rest[..end];
    let mut open = url.matches('(').count();
    let mut closed = url.matches(')').count();
    while let Some(last) = url.chars().next_back() {
        let unbalanced = last == ')' && open < closed;
        if ".,:;!?'\"*_~".contains(last) || unbalanced {
            url = &url[..url.len() - last.len_utf8()];
            match last {
                ')' => closed -= 1,
                '(' => open -= 1,
                _ => {}
            }
        } else {
            break;
        }
    }
    (url.len() > "https://".len()).then_some(url)
}

/// A fenced code block holding `text` as it is (a fence longer than any
/// run of backticks in it), so the one safe renderer draws it.
pub fn code_block(text: &str, language: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}{language}\n{text}\n{fence}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_common_markdown() {
        let html = to_html("**bold** and `code` and *em* and ~~gone~~\n\n- one\n- two\n\n| a | b |\n|---|--:|\n| 1 | 2 |");
        assert!(html.contains("<p><strong>bold</strong> and <code>code</code> and <em>em</em> and <del>gone</del></p>"), "{html}");
        assert!(
            html.contains("<ul>\n<li>one</li>\n<li>two</li>\n</ul>"),
            "{html}"
        );
        assert!(html.contains("<table>"), "{html}");
        assert!(html.contains(r#"<th class="align-right">b</th>"#), "{html}");
        assert!(html.contains("<td>1</td>"), "{html}");
    }

    #[test]
    fn blocks() {
        assert_eq!(to_html("# Title"), "<h1>Title</h1>\n");
        assert_eq!(
            to_html("> quoted\n> more"),
            "<blockquote>\n<p>quoted\nmore</p>\n</blockquote>\n"
        );
        assert_eq!(to_html("a\nb\n\nc"), "<p>a\nb</p>\n<p>c</p>\n");
        assert_eq!(to_html("---"), "<hr>\n");
        assert_eq!(
            to_html("3. three\n4. four"),
            "<ol start=\"3\">\n<li>three</li>\n<li>four</li>\n</ol>\n"
        );
        assert_eq!(
            to_html("- outer\n  - inner\n- next"),
            "<ul>\n<li>outer<ul>\n<li>inner</li>\n</ul>\n</li>\n<li>next</li>\n</ul>\n"
        );
        assert_eq!(
            to_html("- [x] done\n- [ ] todo"),
            "<ul>\n<li><input type=\"checkbox\" disabled=\"\" checked=\"\"> done</li>\n<li><input type=\"checkbox\" disabled=\"\"> todo</li>\n</ul>\n"
        );
    }

    #[test]
    fn code_blocks_get_a_copy_button_and_escaped_text() {
        let html = to_html("```rust\nfn main() { println!(\"<hi>\"); }\n```\nafter");
        assert!(html.starts_with(r#"<div class="code"><button type="button" class="copy" aria-label="Copy code">Copy</button><pre><code class="language-rust">fn main() { println!("&lt;hi&gt;"); }"#), "{html}");
        assert!(
            html.ends_with("</code></pre></div>\n<p>after</p>\n"),
            "{html}"
        );
        // Still streaming: the open fence runs to the end.
        assert!(to_html("```\nlet x = 1;").contains("<code>let x = 1;"));
        // Only a plain word becomes the language class.
        assert!(!to_html("```\"><script>\nx\n```").contains("class=\"language"));
    }

    #[test]
    fn links() {
        assert_eq!(
            to_html("[docs](https://example.com/a?b=1&c=\"2\")"),
            "<p><a href=\"https://example.com/a?b=1&amp;c=&quot;2&quot;\" rel=\"noopener noreferrer nofollow\" target=\"_blank\">docs</a></p>\n"
        );
        assert!(to_html("see https://example.com/x.")
            .contains(r#"<a href="https://example.com/x" rel="noopener noreferrer nofollow" target="_blank">https://example.com/x</a>."#));
        assert!(to_html("<https://example.com>").contains(r#"href="https://example.com""#));
        assert_eq!(
            to_html("[x](javascript:alert(1))"),
            "<p><span class=\"unsafe-link\">x</span></p>\n"
        );
        assert!(to_html("![cat](https://example.com/cat.png)").contains(">cat</a>"));
        // A URL as a label is not linked twice, nor an image in a link.
        assert_eq!(to_html("<https://e.com>").matches("<a ").count(), 1);
        assert_eq!(
            to_html("[https://e.com](https://e.com)")
                .matches("<a ")
                .count(),
            1
        );
        assert_eq!(
            to_html("[![i](https://e.com/i.png)](https://e.com)")
                .matches("<a ")
                .count(),
            1
        );
    }

    #[test]
    fn text_that_is_not_markup_stays_as_written() {
        assert_eq!(to_html("2 * 3 * 4"), "<p>2 * 3 * 4</p>\n");
        assert_eq!(to_html("snake_case_name"), "<p>snake_case_name</p>\n");
        assert_eq!(to_html("\\*not em\\*"), "<p>*not em*</p>\n");
        assert_eq!(to_html("**unclosed"), "<p>**unclosed</p>\n");
        assert_eq!(to_html("a < b > c & d"), "<p>a &lt; b &gt; c &amp; d</p>\n");
        assert_eq!(to_html("``not closed`"), "<p>``not closed`</p>\n");
        assert_eq!(
            to_html("*a **b** c*"),
            "<p><em>a <strong>b</strong> c</em></p>\n"
        );
        assert_eq!(
            to_html("你好 **世界** 👩‍💻"),
            "<p>你好 <strong>世界</strong> 👩‍💻</p>\n"
        );
        assert_eq!(
            to_html("<b onclick=x>hi</b>"),
            "<p>&lt;b onclick=x&gt;hi&lt;/b&gt;</p>\n"
        );
    }

    #[test]
    fn deep_nesting_keeps_text_and_drops_tags_past_the_limit() {
        let html = to_html(&format!("{}deep", ">".repeat(8000)));
        assert_eq!(html.matches("<blockquote>").count(), MAX_DEPTH);
        assert!(html.contains("deep"));
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

    /// Rendering a body as it streams, delta by delta, ends with exactly
    /// the HTML of rendering it whole.
    #[test]
    fn streamed_rendering_equals_whole_rendering() {
        let samples = [
            "para\n#hashtag\n\n# heading\ntext\n\n- a\n- b\n\n  more\n\nafter\n",
            "```rust\nlet x = 1;\n```\n\n> quote\nlazy\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nend",
            "[ref]\n\n[ref]: https://e.com\n\npara\n===\n\n***\n1. x\n2. y\n",
            "para\n```a`b\nstill para\n\n<div>\n\nhtml\n</div>\n\n    code\n",
        ];
        for sample in samples {
            for step in [1, 2, 3, 7] {
                let mut blocks = Blocks::default();
                let mut html = String::new();
                let mut end = 0;
                while end < sample.len() {
                    end = (end + step).min(sample.len());
                    while !sample.is_char_boundary(end) {
                        end += 1;
                    }
                    blocks.extend(&sample[..end], |b| html.push_str(&b));
                }
                html.push_str(&blocks.tail);
                assert_eq!(html, to_html(sample), "{sample:?} in steps of {step}");
            }
        }
    }
}
