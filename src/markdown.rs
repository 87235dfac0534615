//! Message bodies as Markdown, rendered to HTML that is safe to insert.
//!
//! Message text is untrusted (model output above all), so this is also the
//! sanitizer, and the same function runs on the server (SSR) and in the
//! browser (while a reply streams): what a reader sees cannot depend on
//! which side drew it.
//!
//! The rules: every character of the source is escaped unless it is
//! Markdown syntax this renderer turns into markup it writes itself, so raw
//! HTML shows as text and no attribute ever comes from the source except a
//! link target, which keeps only `http`, `https`, `mailto` and relative
//! targets and opens in a new tab without access to this page. Images become
//! links (no remote loads). Code blocks get a copy button.
//!
//! The dialect is what chat replies use: paragraphs (line breaks kept),
//! ATX headings, fenced code, block quotes, nested bullet / numbered / task
//! lists, GFM tables, rules, code spans, emphasis, strikethrough, links,
//! `<autolinks>` and bare `http(s)://` URLs, backslash escapes. It is a
//! small hand-written renderer rather than a CommonMark library because it
//! ships in the page's WebAssembly, where a full parser (entity tables,
//! Unicode case folding) cost ~75 KB gzipped; partial input renders
//! sensibly, as a streaming reply is re-rendered as it grows.

use std::fmt::Write;

/// Renders `source` to sanitized HTML.
pub fn to_html(source: &str) -> String {
    let mut out = String::with_capacity(source.len() * 5 / 4 + 16);
    let lines: Vec<&str> = source.lines().collect();
    blocks(&lines, &mut out);
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

/// Escapes text for element content.
fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

/// Escapes text for a double-quoted attribute value.
fn escape_attr(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => escape(c.encode_utf8(&mut [0; 4]), out),
        }
    }
}

// ---------------------------------------------------------------- blocks

fn blocks(lines: &[&str], out: &mut String) {
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() {
            i += 1;
        } else if indent < 4 && fence(trimmed).is_some() {
            i = code_block(lines, i, out);
        } else if indent < 4 && heading(trimmed).is_some() {
            let (level, text) = heading(trimmed).unwrap_or_default();
            let _ = write!(out, "<h{level}>");
            inline(text, out);
            let _ = writeln!(out, "</h{level}>");
            i += 1;
        } else if indent < 4 && is_rule(trimmed) {
            out.push_str("<hr>\n");
            i += 1;
        } else if indent < 4 && trimmed.starts_with('>') {
            let start = i;
            while i < lines.len() && lines[i].trim_start().starts_with('>') {
                i += 1;
            }
            let inner: Vec<&str> = lines[start..i]
                .iter()
                .map(|l| {
                    let l = &l.trim_start()[1..];
                    l.strip_prefix(' ').unwrap_or(l)
                })
                .collect();
            out.push_str("<blockquote>\n");
            blocks(&inner, out);
            out.push_str("</blockquote>\n");
        } else if indent < 4 && list_marker(trimmed).is_some() {
            i = list(lines, i, out);
        } else if i + 1 < lines.len()
            && trimmed.contains('|')
            && table_delimiter(lines[i + 1]).is_some()
        {
            i = table(lines, i, out);
        } else {
            // A paragraph runs to a blank line or the start of another block.
            let start = i;
            i += 1;
            while i < lines.len() && !interrupts_paragraph(lines[i]) {
                i += 1;
            }
            let text = lines[start..i]
                .iter()
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join("\n");
            out.push_str("<p>");
            inline(&text, out);
            out.push_str("</p>\n");
        }
    }
}

fn interrupts_paragraph(line: &str) -> bool {
    let trimmed = line.trim_start();
    let indent = line.len() - trimmed.len();
    trimmed.is_empty()
        || (indent < 4
            && (fence(trimmed).is_some()
                || heading(trimmed).is_some()
                || is_rule(trimmed)
                || trimmed.starts_with('>')
                || list_marker(trimmed).is_some_and(|m| m.number.is_none_or(|n| n == 1))))
}

/// A code fence: its character run and the info string.
fn fence(line: &str) -> Option<(&str, &str)> {
    let c = line.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let run = line.len() - line.trim_start_matches(c).len();
    let info = line[run..].trim();
    (run >= 3 && !(c == '`' && info.contains('`'))).then(|| (&line[..run], info))
}

fn code_block(lines: &[&str], start: usize, out: &mut String) -> usize {
    let indent = lines[start].len() - lines[start].trim_start().len();
    let (run, info) = fence(lines[start].trim_start()).unwrap_or(("```", ""));
    let language = info.split_whitespace().next().filter(|l| {
        l.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-_#.".contains(c))
    });
    out.push_str(r#"<div class="code"><button type="button" class="copy" aria-label="Copy code">Copy</button><pre><code"#);
    if let Some(language) = language {
        let _ = write!(out, r#" class="language-{language}""#);
    }
    out.push('>');
    let mut i = start + 1;
    // An unclosed fence runs to the end (a reply still streaming).
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if trimmed.starts_with(run)
            && trimmed
                .trim_start_matches(run.as_bytes()[0] as char)
                .trim()
                .is_empty()
        {
            i += 1;
            break;
        }
        // Drop up to the fence's own indentation.
        let strip = (line.len() - trimmed.len()).min(indent);
        escape(&line[strip..], out);
        out.push('\n');
        i += 1;
    }
    out.push_str("</code></pre></div>\n");
    i
}

fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.len() - line.trim_start_matches('#').len();
    let rest = &line[level..];
    ((1..=6).contains(&level) && (rest.is_empty() || rest.starts_with([' ', '\t']))).then(|| {
        let text = rest.trim();
        // A closing run of #s is not part of the text.
        let closed = text.trim_end_matches('#');
        (
            level,
            if closed.ends_with(' ') || closed.is_empty() {
                closed.trim_end()
            } else {
                text
            },
        )
    })
}

fn is_rule(line: &str) -> bool {
    let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    compact.len() >= 3
        && ["-", "*", "_"]
            .iter()
            .any(|m| compact.chars().all(|c| c.to_string() == *m))
}

struct Marker {
    /// Bytes up to the item's text.
    width: usize,
    number: Option<u64>,
}

fn list_marker(line: &str) -> Option<Marker> {
    let bytes = line.as_bytes();
    if matches!(bytes.first(), Some(b'-' | b'*' | b'+')) {
        return match bytes.get(1) {
            Some(b' ' | b'\t') => Some(Marker {
                width: 2,
                number: None,
            }),
            None => Some(Marker {
                width: 1,
                number: None,
            }),
            _ => None,
        };
    }
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if (1..=9).contains(&digits) && matches!(bytes.get(digits), Some(b'.' | b')')) {
        let number = line[..digits].parse().ok();
        return match bytes.get(digits + 1) {
            Some(b' ' | b'\t') => Some(Marker {
                width: digits + 2,
                number,
            }),
            None => Some(Marker {
                width: digits + 1,
                number,
            }),
            _ => None,
        };
    }
    None
}

/// A list: items at this indentation, each with the lines indented under it.
fn list(lines: &[&str], start: usize, out: &mut String) -> usize {
    let first = lines[start].trim_start();
    let base = lines[start].len() - first.len();
    let ordered = list_marker(first).and_then(|m| m.number);
    match ordered {
        Some(1) => out.push_str("<ol>\n"),
        Some(n) => {
            let _ = writeln!(out, r#"<ol start="{n}">"#);
        }
        None => out.push_str("<ul>\n"),
    }
    let mut i = start;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let Some(marker) = list_marker(trimmed).filter(|m| {
            indent <= base + 1 && indent + 4 > base && m.number.is_some() == ordered.is_some()
        }) else {
            break;
        };
        let content_indent = indent + marker.width;
        let mut item: Vec<&str> = vec![trimmed.get(marker.width..).unwrap_or("")];
        i += 1;
        // The item continues with indented lines, and blank lines between them.
        while i < lines.len() {
            let next = lines[i];
            let next_trimmed = next.trim_start();
            let next_indent = next.len() - next_trimmed.len();
            if next_trimmed.is_empty() {
                let continues = lines[i + 1..]
                    .iter()
                    .find(|l| !l.trim().is_empty())
                    .is_some_and(|l| {
                        l.len() - l.trim_start().len() >= content_indent.min(base + 2)
                    });
                if !continues {
                    break;
                }
                item.push("");
            } else if next_indent >= content_indent.min(base + 2) {
                item.push(&next[content_indent.min(next_indent)..]);
            } else if list_marker(next_trimmed).is_none() && !interrupts_paragraph(next) {
                item.push(next_trimmed); // a lazy continuation of the text
            } else {
                break;
            }
            i += 1;
        }
        out.push_str("<li>");
        let (task, first_line) = match item[0].get(..4) {
            Some("[ ] ") => (Some(false), &item[0][4..]),
            Some("[x] " | "[X] ") => (Some(true), &item[0][4..]),
            _ => (None, item[0]),
        };
        match task {
            Some(true) => out.push_str(r#"<input type="checkbox" disabled checked> "#),
            Some(false) => out.push_str(r#"<input type="checkbox" disabled> "#),
            None => {}
        }
        item[0] = first_line;
        let tight = !item.iter().any(|l| l.trim().is_empty())
            && item[1..].iter().all(|l| {
                let l = l.trim_start();
                list_marker(l).is_none() && fence(l).is_none() && !l.starts_with('>')
            });
        if tight {
            // A tight item: its text without a paragraph.
            inline(
                &item.iter().map(|l| l.trim()).collect::<Vec<_>>().join("\n"),
                out,
            );
        } else {
            out.push('\n');
            blocks(&item, out);
        }
        out.push_str("</li>\n");
        while i < lines.len() && lines[i].trim().is_empty() {
            // Blank lines between items of one list.
            if lines[i + 1..]
                .iter()
                .find(|l| !l.trim().is_empty())
                .is_some_and(|l| list_marker(l.trim_start()).is_some())
            {
                i += 1;
            } else {
                break;
            }
        }
    }
    out.push_str(if ordered.is_some() {
        "</ol>\n"
    } else {
        "</ul>\n"
    });
    i.max(start + 1)
}

/// The alignments of a table's delimiter row (`| --- | :-: |`).
fn table_delimiter(line: &str) -> Option<Vec<&'static str>> {
    let cells = split_row(line);
    let aligns: Option<Vec<&'static str>> = cells
        .iter()
        .map(|cell| {
            let c = cell.trim();
            let dashes = c.trim_start_matches(':').trim_end_matches(':');
            (!dashes.is_empty() && dashes.chars().all(|ch| ch == '-')).then(|| {
                match (c.starts_with(':'), c.ends_with(':')) {
                    (true, true) => "center",
                    (false, true) => "right",
                    _ => "",
                }
            })
        })
        .collect();
    aligns.filter(|a| !a.is_empty() && line.contains(['|', '-']))
}

fn split_row(line: &str) -> Vec<&str> {
    let row = line.trim();
    let row = row.strip_prefix('|').unwrap_or(row);
    let row = row
        .strip_suffix('|')
        .filter(|r| !r.ends_with('\\'))
        .unwrap_or(row);
    let mut cells = Vec::new();
    let mut start = 0;
    let bytes = row.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'|' && (i == 0 || bytes[i - 1] != b'\\') {
            cells.push(&row[start..i]);
            start = i + 1;
        }
    }
    cells.push(&row[start..]);
    cells
}

fn table(lines: &[&str], start: usize, out: &mut String) -> usize {
    let aligns = table_delimiter(lines[start + 1]).unwrap_or_default();
    let row = |line: &str, tag: &str, out: &mut String| {
        out.push_str("<tr>");
        let cells = split_row(line);
        for (n, align) in aligns.iter().enumerate() {
            if align.is_empty() {
                let _ = write!(out, "<{tag}>");
            } else {
                let _ = write!(out, r#"<{tag} class="align-{align}">"#);
            }
            inline(cells.get(n).map_or("", |c| c.trim()), out);
            let _ = write!(out, "</{tag}>");
        }
        out.push_str("</tr>\n");
    };
    out.push_str("<table>\n<thead>\n");
    row(lines[start], "th", out);
    out.push_str("</thead>\n<tbody>\n");
    let mut i = start + 2;
    while i < lines.len() && !lines[i].trim().is_empty() && lines[i].contains('|') {
        row(lines[i], "td", out);
        i += 1;
    }
    out.push_str("</tbody>\n</table>\n");
    i
}

// ---------------------------------------------------------------- inline

fn inline(text: &str, out: &mut String) {
    inline_with(text, out, true);
}

/// Inline Markdown; `links: false` inside a link's label (no nested links).
fn inline_with(text: &str, out: &mut String, links: bool) {
    let bytes = text.as_bytes();
    let mut i = 0;
    // Plain text is copied (escaped) in runs between syntax characters.
    let mut plain = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let handled = match bytes[i] {
            b'\\' => rest[1..]
                .chars()
                .next()
                .filter(char::is_ascii_punctuation)
                .map(|c| {
                    escape(&text[plain..i], out);
                    escape(&c.to_string(), out);
                    1 + c.len_utf8()
                }),
            b'`' => match code_span(rest) {
                Some((len, code)) => {
                    escape(&text[plain..i], out);
                    out.push_str("<code>");
                    escape(code, out);
                    out.push_str("</code>");
                    Some(len)
                }
                None => {
                    // An unmatched run of backticks is text, all of it.
                    i += rest.len() - rest.trim_start_matches('`').len();
                    continue;
                }
            },
            b'[' if links => link(rest).map(|(len, label, url)| {
                escape(&text[plain..i], out);
                anchor(url, label, out);
                len
            }),
            b'!' if links && rest[1..].starts_with('[') => {
                link(&rest[1..]).map(|(len, label, url)| {
                    escape(&text[plain..i], out);
                    anchor(url, label, out);
                    len + 1
                })
            }
            b'<' if links => autolink(rest).map(|(len, url)| {
                escape(&text[plain..i], out);
                anchor(url, url, out);
                len
            }),
            b'h' if links
                && (rest.starts_with("http://") || rest.starts_with("https://"))
                && !text[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric()) =>
            {
                bare_url(rest).map(|url| {
                    escape(&text[plain..i], out);
                    anchor(url, url, out);
                    url.len()
                })
            }
            b'*' | b'_' | b'~' => emphasis(text, i).map(|(len, tag, inner)| {
                escape(&text[plain..i], out);
                let _ = write!(out, "<{tag}>");
                inline_with(inner, out, links);
                let _ = write!(out, "</{tag}>");
                len
            }),
            _ => None,
        };
        match handled {
            Some(len) => {
                i += len;
                plain = i;
            }
            None => i += rest.chars().next().map_or(1, char::len_utf8),
        }
    }
    escape(&text[plain..], out);
}

/// A link to `url` labelled with `label` (inline Markdown), or the label
/// alone, marked, when the target is not safe to follow.
fn anchor(url: &str, label: &str, out: &mut String) {
    if is_safe_url(url) {
        out.push_str(r#"<a href=""#);
        escape_attr(url, out);
        out.push_str(r#"" rel="noopener noreferrer nofollow" target="_blank">"#);
        inline_with(label, out, false);
        out.push_str("</a>");
    } else {
        out.push_str(r#"<span class="unsafe-link">"#);
        inline_with(label, out, false);
        out.push_str("</span>");
    }
}

/// `` `code` ``: the span's length and its text.
fn code_span(rest: &str) -> Option<(usize, &str)> {
    let run = rest.len() - rest.trim_start_matches('`').len();
    let mut from = run;
    while let Some(at) = rest[from..].find('`') {
        let start = from + at;
        let len = rest[start..].len() - rest[start..].trim_start_matches('`').len();
        if len == run {
            let code = &rest[run..start];
            let code = if code.len() > 2 && code.starts_with(' ') && code.ends_with(' ') {
                &code[1..code.len() - 1]
            } else {
                code
            };
            return Some((start + len, code));
        }
        from = start + len;
    }
    None
}

/// `[label](url "title")`: the length, the label and the url.
fn link(rest: &str) -> Option<(usize, &str, &str)> {
    let bytes = rest.as_bytes();
    let mut depth = 0;
    let mut close = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'`' => {
                if let Some((len, _)) = code_span(&rest[i..]) {
                    i += len;
                    continue;
                }
            }
            b'[' => depth += 1,
            b']' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            _ => {}
        }
        i += 1;
    }
    let close = close?;
    let after = rest[close + 1..].strip_prefix('(')?;
    // The destination ends at the `)` that balances its parentheses.
    let mut depth = 0i32;
    let mut escaped = false;
    let end = after.char_indices().find_map(|(at, ch)| {
        match ch {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '(' => depth += 1,
            ')' if depth == 0 => return Some(at),
            ')' => depth -= 1,
            _ => {}
        }
        None
    })?;
    let inside = after[..end].trim();
    let url = match inside.strip_prefix('<') {
        Some(bracketed) => bracketed.split('>').next().unwrap_or(""),
        None => inside.split_whitespace().next().unwrap_or(""),
    };
    Some((close + 2 + end + 1, &rest[1..close], url))
}

/// `<scheme:...>` or `<user@host>`: the length and the target.
fn autolink(rest: &str) -> Option<(usize, &str)> {
    let end = rest.find('>')?;
    let inner = &rest[1..end];
    let scheme_like = inner.split_once(':').is_some_and(|(s, _)| {
        s.len() >= 2
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    });
    (!inner.is_empty() && !inner.contains([' ', '<', '\n']) && scheme_like)
        .then_some((end + 1, inner))
}

/// A bare `http(s)://` URL, without the punctuation that usually ends a sentence.
fn bare_url(rest: &str) -> Option<&str> {
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '<')
        .unwrap_or(rest.len());
    let mut url = &rest[..end];
    while let Some(last) = url.chars().next_back() {
        let unbalanced = last == ')' && url.matches('(').count() < url.matches(')').count();
        if ".,:;!?'\"*_~".contains(last) || unbalanced {
            url = &url[..url.len() - 1];
        } else {
            break;
        }
    }
    (url.len() > "https://".len()).then_some(url)
}

/// `*em*`, `**strong**`, `_em_`, `__strong__`, `~~del~~` starting at `at`:
/// the length, the tag and the inner text.
fn emphasis(text: &str, at: usize) -> Option<(usize, &'static str, &str)> {
    let rest = &text[at..];
    let c = rest.as_bytes()[0] as char;
    let run = (rest.len() - rest.trim_start_matches(c).len()).min(3);
    let (width, tag) = match (c, run) {
        ('~', 2..) => (2, "del"),
        ('~', _) => return None,
        (_, 1) => (1, "em"),
        _ => (2, "strong"),
    };
    let before = text[..at].chars().next_back();
    let open_next = rest[width..].chars().next()?;
    // Opens: not followed by whitespace; `_` not inside a word.
    if open_next.is_whitespace() || (c == '_' && before.is_some_and(char::is_alphanumeric)) {
        return None;
    }
    let delimiter = &rest[..width];
    let mut from = width;
    while let Some(found) = rest[from..].find(delimiter) {
        let close = from + found;
        let inner = &rest[width..close];
        let after = rest[close + width..].chars().next();
        let empty = inner.is_empty() || inner.ends_with(char::is_whitespace);
        // `_` does not close inside a word.
        let intraword = c == '_' && after.is_some_and(char::is_alphanumeric);
        // A single `*` does not close on part of a `**`.
        let part_of_pair =
            width == 1 && (rest[close + 1..].starts_with(c) || rest[..close].ends_with(c));
        let closes = !(empty || intraword || part_of_pair);
        if closes {
            return Some((close + width, tag, inner));
        }
        from = close + rest[close..].chars().next().map_or(1, char::len_utf8);
    }
    None
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
            "<ul>\n<li>\n<p>outer</p>\n<ul>\n<li>inner</li>\n</ul>\n</li>\n<li>next</li>\n</ul>\n"
        );
        assert_eq!(
            to_html("- [x] done\n- [ ] todo"),
            "<ul>\n<li><input type=\"checkbox\" disabled checked> done</li>\n<li><input type=\"checkbox\" disabled> todo</li>\n</ul>\n"
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
        assert!(to_html("```\nlet x = 1;").contains("<code>let x = 1;\n</code>"));
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
        // A URL as a label is not linked twice.
        assert_eq!(to_html("<https://e.com>").matches("<a ").count(), 1);
        assert_eq!(
            to_html("[https://e.com](https://e.com)")
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
