//! Markdown rendering cost against input size, for the inputs that made the
//! old hand-written renderer overflow its stack or go quadratic. Each input
//! is rendered at 8 KiB and at 64 KiB: linear work shows a ratio near 8, not
//! 64. Then a 64 KiB reply streamed in 2,000 deltas: the cost of one delta
//! at the start and at the end (constant: only the open block is redrawn).
//!
//! `cargo bench --features ssr --bench render` (also run by `scripts/bench`).

use std::time::{Duration, Instant};

use streamchat::markdown::{to_html, Blocks};

/// (name, text repeated to the size wanted).
const INPUTS: &[(&str, &str)] = &[
    ("nested quotes", ">"),
    ("ideographic-space indent", "- item\n\u{3000}x\n"),
    ("no-break space fences", "\u{a0}```\nx\n"),
    ("open emphasis", "*a "),
    ("bullets on one line", "- "),
    ("open brackets", "["),
    ("bracket pairs", "[a]("),
    ("backtick runs", "`a``"),
    ("underscores", "_a_ __b"),
    ("angle brackets", "<a <b <"),
    ("url parentheses", "https://e.com/))))"),
    ("plain prose", "Some words in a sentence, then more. "),
];

fn sized(unit: &str, bytes: usize) -> String {
    let mut s = unit.repeat(bytes / unit.len() + 1);
    s.truncate(s.floor_char_boundary(bytes));
    s
}

/// The fastest of enough runs to fill ~200 ms.
fn time(f: impl Fn()) -> Duration {
    let mut best = Duration::MAX;
    let started = Instant::now();
    let mut runs = 0;
    while runs < 3 || (started.elapsed() < Duration::from_millis(200) && runs < 1000) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        runs += 1;
    }
    best
}

fn main() {
    println!("Markdown render time (fastest run), 8 KiB vs 64 KiB of each input");
    println!(
        "{:<28} {:>12} {:>12} {:>7}",
        "input", "8 KiB", "64 KiB", "ratio"
    );
    let mut worst: f64 = 0.0;
    for (name, unit) in INPUTS {
        let small = sized(unit, 8 * 1024);
        let large = sized(unit, 64 * 1024);
        let t8 = time(|| drop(std::hint::black_box(to_html(&small))));
        let t64 = time(|| drop(std::hint::black_box(to_html(&large))));
        let ratio = t64.as_secs_f64() / t8.as_secs_f64();
        worst = worst.max(ratio);
        println!(
            "{name:<28} {:>9.3} ms {:>9.3} ms {ratio:>7.1}",
            t8.as_secs_f64() * 1e3,
            t64.as_secs_f64() * 1e3
        );
    }
    println!("worst ratio: {worst:.1} (linear: 8)");

    // A 64 KiB reply in paragraphs, streamed in 2,000 deltas.
    let reply = sized(
        "A sentence of a long reply with **bold** and `code`, then more words.\n\n",
        64 * 1024,
    );
    let step = reply.len() / 2000;
    let mut blocks = Blocks::default();
    let mut costs = Vec::new();
    let mut end = 0;
    while end < reply.len() {
        end = (end + step).min(reply.len());
        let end_at = reply.floor_char_boundary(end);
        let t = Instant::now();
        blocks.extend(&reply[..end_at], |html| drop(std::hint::black_box(html)));
        costs.push(t.elapsed());
    }
    let mean = |c: &[Duration]| c.iter().sum::<Duration>().as_secs_f64() * 1e6 / c.len() as f64;
    let first = mean(&costs[..200]);
    let last = mean(&costs[costs.len() - 200..]);
    println!(
        "streaming a 64 KiB reply in {} deltas: {first:.1} us per delta over the first 200, {last:.1} us over the last 200",
        costs.len()
    );
}
