//! Message text is untrusted: known XSS vectors rendered as Markdown come
//! out as inert markup, checked against an allowlist of tags, attributes
//! and URL schemes; and a page server-rendered with them holds no live
//! markup of theirs.

use crate::support::{spawn_app, FakeProvider, Scripted};
use streamchat::markdown::to_html;

const VECTORS: &[&str] = &[
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)>",
    "<iframe src=\"javascript:alert(1)\"></iframe>",
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](java\tscript:alert(1))",
    "[click](  javascript:alert(1))",
    "[click](javascript&#58;alert(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[click](vbscript:msgbox(1))",
    "![x](javascript:alert(1))",
    "<javascript:alert(1)>",
    "[ref]\n\n[ref]: javascript:alert(1)",
    "<a href=\"javascript:alert(1)\">x</a>",
    "<div onmouseover=\"alert(1)\">hover</div>",
    "<body onload=alert(1)>",
    "<style>body{display:none}</style>",
    "<object data=\"javascript:alert(1)\"></object>",
    "<embed src=javascript:alert(1)>",
    "<form action=javascript:alert(1)><button>go</button></form>",
    "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "[x](https://ok.example \"\\\" onmouseover=\\\"alert(1)\")",
    "`<script>alert(1)</script>`",
    "```html\n<script>alert(1)</script>\n```",
    "<scr<script>ipt>alert(1)</script>",
    "<IMG SRC=\"jav&#x09;ascript:alert('XSS');\">",
    "<a href=\"&#106;avascript:alert(1)\">x</a>",
    "[x](<javascript:alert(1)>)",
];

const TAGS: &[&str] = &[
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
];
const ATTRIBUTES: &[&str] = &[
    "href",
    "rel",
    "target",
    "class",
    "type",
    "aria-label",
    "disabled",
    "checked",
    "start",
    "style",
];

/// Checks every tag and attribute of `html` against the allowlist.
fn assert_inert(source: &str, html: &str) {
    let mut i = 0;
    while let Some(at) = html[i..].find('<') {
        let start = i + at + 1;
        let end = start
            + html[start..]
                .find('>')
                .unwrap_or_else(|| panic!("unclosed tag in {html}"));
        i = end + 1;
        let tag = &html[start..end];
        let tag = tag.trim_start_matches('/').trim_end_matches('/');
        let mut parts = tag.splitn(2, char::is_whitespace);
        let name = parts.next().unwrap().to_ascii_lowercase();
        assert!(
            TAGS.contains(&name.as_str()),
            "tag <{name}> from {source:?}: {html}"
        );
        let mut rest = parts.next().unwrap_or("").trim();
        while !rest.is_empty() {
            let name_end = rest.find(['=', ' ']).unwrap_or(rest.len());
            let attr = rest[..name_end].to_ascii_lowercase();
            assert!(
                ATTRIBUTES.contains(&attr.as_str()),
                "attribute {attr} from {source:?}: {html}"
            );
            rest = rest[name_end..].trim_start();
            if let Some(value) = rest.strip_prefix('=') {
                let value = value.trim_start();
                let quote = value.chars().next().expect("quoted value");
                assert_eq!(quote, '"', "attribute values are double-quoted: {html}");
                let close = value[1..].find('"').expect("closing quote") + 1;
                let text = &value[1..close];
                if attr == "href" {
                    assert!(
                        streamchat::markdown::is_safe_url(text),
                        "href {text:?} from {source:?}"
                    );
                }
                rest = value[close + 1..].trim_start();
            }
        }
    }
}

#[test]
fn known_xss_vectors_render_inert() {
    assert!(VECTORS.len() >= 20);
    for source in VECTORS {
        let html = to_html(source);
        assert_inert(source, &html);
        let lower = html.to_ascii_lowercase();
        assert!(!lower.contains("<script"), "{source:?}: {html}");
    }
    // Inert, not lost: the text is still there to read.
    assert!(to_html("<script>alert(1)</script>").contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(to_html("[click](javascript:alert(1))").contains("click"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_rendered_page_shows_vectors_as_text() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["ok"])).await).await;
    let body = "<img src=x onerror=alert(1)> [x](javascript:alert(1)) <script>alert(1)</script>";
    app.post("lobby", "Mallory", body).await;
    let page = app.page("/t/lobby").await;
    assert!(
        page.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "escaped in the page"
    );
    assert!(!page.contains("<img src=x"), "no live img");
    assert!(!page.contains("href=\"javascript:"), "no javascript: link");
    assert!(!page.contains("<script>alert(1)"), "no live script");
}
