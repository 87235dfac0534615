//! JSON laid out for reading (a tool call's arguments on its card), the way
//! `serde_json::to_string_pretty` lays it out, without building a
//! `serde_json::Value`.
//!
//! Hand-written for the browser's bundle: `Value`, its map and its pretty
//! printer cost the WebAssembly more than this whole file (BENCHMARKS.md,
//! "What the hydrate bundle is made of"). Validation is still serde_json's
//! own parser (into `IgnoredAny`, which builds nothing); only the layout is
//! ours, and a property test holds it to `to_string_pretty`.
//!
//! Unlike `Value`, keys keep the model's order and numbers stay as written.
//! One pass over the bytes, no recursion. Nesting deeper than serde_json's
//! own limit for a `Value` ([`MAX_DEPTH`]) is shown as written, so the
//! indentation is bounded and the output linear in the input.

/// Deepest nesting laid out (about serde_json's limit for a `Value`, 127).
pub const MAX_DEPTH: usize = 128;

/// `text` indented two spaces per level when it is one JSON value, else
/// `text` unchanged.
pub fn pretty(text: &str) -> String {
    // serde_json skips an ignored value without a depth limit; `layout`
    // applies one.
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
        return text.to_owned();
    }
    layout(text).unwrap_or_else(|| text.to_owned())
}

/// Re-lays out JSON the caller has validated; `None` past [`MAX_DEPTH`].
/// On any other text it does not panic; what it returns is then
/// unspecified.
fn layout(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                // A string ends after an ASCII quote or at the end: a char
                // boundary either way.
                i = i.min(bytes.len());
                out.push_str(text.get(start..i).unwrap_or_default());
                continue;
            }
            open @ (b'{' | b'[') => {
                let close = if open == b'{' { b'}' } else { b']' };
                let next = bytes[i + 1..]
                    .iter()
                    .position(|b| !b.is_ascii_whitespace())
                    .map(|n| i + 1 + n);
                out.push(open as char);
                match next {
                    Some(n) if bytes[n] == close => {
                        out.push(close as char);
                        i = n;
                    }
                    _ => {
                        depth += 1;
                        if depth > MAX_DEPTH {
                            return None;
                        }
                        new_line(&mut out, depth);
                    }
                }
            }
            close @ (b'}' | b']') => {
                depth = depth.saturating_sub(1);
                new_line(&mut out, depth);
                out.push(close as char);
            }
            b',' => {
                out.push(',');
                new_line(&mut out, depth);
            }
            b':' => out.push_str(": "),
            b if b.is_ascii_whitespace() => {}
            b if b.is_ascii() => out.push(b as char),
            _ => {
                // Outside a string valid JSON is ASCII: copy the character.
                let rest = text.get(i..).unwrap_or_default();
                let ch = rest.chars().next().unwrap_or('\u{fffd}');
                out.push(ch);
                i += ch.len_utf8().max(1);
                continue;
            }
        }
        i += 1;
    }
    Some(out)
}

fn new_line(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Compact or already pretty, the layout is serde_json's.
        #[test]
        fn lays_out_as_serde_json_does(value in json()) {
            let expected = serde_json::to_string_pretty(&value).unwrap();
            prop_assert_eq!(pretty(&serde_json::to_string(&value).unwrap()), expected.clone());
            prop_assert_eq!(pretty(&expected), expected);
        }

        /// Any text: no panic, and text that is not JSON comes back as it was.
        #[test]
        fn anything_else_is_left_alone(text in ".{0,64}") {
            let out = pretty(&text);
            if serde_json::from_str::<Value>(&text).is_err() {
                prop_assert_eq!(out, text.clone());
            }
            let _ = layout(&text);
        }
    }

    #[test]
    fn keeps_the_models_key_order_and_empty_containers() {
        assert_eq!(
            pretty(r#"{"z":1,"a":[ ],"m":{ },"s":"a,b:{\"c\"}"}"#),
            "{\n  \"z\": 1,\n  \"a\": [],\n  \"m\": {},\n  \"s\": \"a,b:{\\\"c\\\"}\"\n}"
        );
        assert_eq!(pretty("not json {"), "not json {");
    }

    #[test]
    fn nesting_past_serde_jsons_limit_is_left_as_written() {
        let nested = |depth| format!("{}0{}", "[1,".repeat(depth), "]".repeat(depth));
        let deep = nested(10_000);
        assert_eq!(pretty(&deep), deep);
        let limit = nested(100);
        let value: serde_json::Value = serde_json::from_str(&limit).unwrap();
        assert_eq!(
            pretty(&limit),
            serde_json::to_string_pretty(&value).unwrap()
        );
    }
}
