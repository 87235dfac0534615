//! Types shared by the server and the browser. Never feature-gated (only the
//! optional sqlx derives are).

use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// The model name the embedded demo provider answers with; the UI labels it.
pub const DEMO_MODEL: &str = "demo";
/// The default bot's handle (`@gpt`).
pub const BOT_HANDLE: &str = "gpt";
/// Largest accepted message body, in bytes, after trimming.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// Longest accepted author name, in characters, after trimming.
pub const MAX_AUTHOR_CHARS: usize = 40;
/// Longest name a sign-in proxy may give (an e-mail address).
pub const MAX_IDENTITY_CHARS: usize = 254;
/// How many messages a thread page shows.
pub const PAGE_SIZE: i64 = 100;
/// What a reply says when its server stopped while writing it (a shutdown,
/// or a crash found by the next start-up).
pub const SERVER_STOPPED: &str = "The server stopped while this reply was being written.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::Type))]
#[cfg_attr(feature = "ssr", sqlx(type_name = "TEXT", rename_all = "snake_case"))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
}

/// Where a message is in its life. User messages are born `Done`; assistant
/// replies start `Streaming` and end in exactly one of the other states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::Type))]
#[cfg_attr(feature = "ssr", sqlx(type_name = "TEXT", rename_all = "snake_case"))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Streaming,
    Done,
    Failed,
    Cancelled,
    TimedOut,
    Interrupted,
}

impl Status {
    /// Ends a reply can be continued from: cut short, not failed or done.
    pub const CONTINUABLE: &'static [Status] =
        &[Status::Interrupted, Status::TimedOut, Status::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Streaming => "streaming",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::TimedOut => "timed_out",
            Status::Interrupted => "interrupted",
        }
    }

    /// What the UI says about a reply in this state.
    pub fn label(self) -> &'static str {
        match self {
            Status::Streaming => "writing…",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Cancelled => "stopped",
            Status::TimedOut => "timed out",
            Status::Interrupted => "interrupted",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct Thread {
    pub id: String,
    pub title: String,
    /// On the home page for everyone; an unlisted thread is reached only
    /// through its URL, a private one only by its members.
    pub listed: bool,
    /// A private thread's owner (who adds and removes its members); `None`
    /// for a thread anyone who reaches it may read.
    #[serde(default)]
    #[cfg_attr(feature = "ssr", sqlx(default))]
    pub owner: Option<String>,
}

/// A thread as the thread list shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct ThreadSummary {
    pub id: String,
    pub title: String,
    /// Unix epoch ms of the newest message (the thread's creation when empty).
    pub last_activity_at: i64,
    /// Replies streaming in it now.
    pub live: i64,
}

/// What the home page loads (one resource: the page renders once it is here).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Home {
    pub threads: Vec<ThreadSummary>,
    /// The private threads the viewer is a member of (signed-in modes).
    #[serde(default)]
    pub private: Vec<ThreadSummary>,
    /// Whether the server offers search (the page shows the box).
    pub search: bool,
    /// Who people are here (accounts: the page links to yours; open: it
    /// says anyone may post under any name).
    pub access: AccessMode,
}

/// Who people are in this app (`access.mode`); pages show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessMode {
    /// A person is the name they type (a local demo; the page says so).
    Open,
    /// A trusted authenticating proxy names them (`access.identity_header`).
    Proxy,
    /// Built-in accounts: sign-in, sessions in the database, invites.
    Accounts,
}

impl AccessMode {
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim() {
            "open" => Some(Self::Open),
            "proxy" => Some(Self::Proxy),
            "accounts" => Some(Self::Accounts),
            _ => None,
        }
    }
}

/// Older messages of a thread, for scrolling back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// Oldest first.
    pub messages: Vec<Message>,
    /// Whether even older messages exist.
    pub more: bool,
}

/// (Absent optional fields are left out of the JSON: rows go to every
/// viewer of a thread.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct Message {
    pub id: i64,
    pub thread_id: String,
    pub author: String,
    pub role: Role,
    pub body: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Unix epoch milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<i64>,
    /// The writer's revision of this row's last change (see the migration).
    pub rev: i64,
    /// Who started the reply (assistant messages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The reply's prompt is the thread's messages with ids below this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_before: Option<i64>,
    /// Who pressed Stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<String>,
    /// A passing note while streaming (retrying, queued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    pub retries: i64,
    /// Whether the token counts are our estimate rather than the provider's.
    pub usage_estimated: bool,
    /// Milliseconds from the provider request to the first text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_second: Option<f64>,
    /// A reasoning model's thinking, streamed before the answer: the reply's
    /// second part (its own offsets in the log). Never sent back as context.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub thinking: String,
    /// Milliseconds from the first thinking to the answer's start (or the
    /// end, for a reply that only thought), recorded when the reply ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_ms: Option<i64>,
    /// Of the completion tokens, those the provider counted as reasoning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<i64>,
    /// The reply's tool calls: the third part, a log of records
    /// ([`crate::tools`]). Never sent back as context of later replies.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tools: String,
}

impl Message {
    /// The text of one part of the message.
    pub fn part(&self, part: Part) -> &str {
        match part {
            Part::Answer => &self.body,
            Part::Thinking => &self.thinking,
            Part::Tools => &self.tools,
        }
    }

    /// The length in bytes of each part's text (by [`Part::index`]).
    pub fn part_lens(&self) -> [usize; Part::COUNT] {
        Part::ALL.map(|part| self.part(part).len())
    }

    /// Whether the reply ended in a way Regenerate can retry.
    pub fn can_regenerate(&self) -> bool {
        self.role == Role::Assistant && !matches!(self.status, Status::Streaming | Status::Done)
    }

    /// Whether the reply was cut short and Continue can finish it.
    pub fn can_continue(&self) -> bool {
        self.role == Role::Assistant && Status::CONTINUABLE.contains(&self.status)
    }
}

/// How long a reply thought, in whole seconds as people read it ("Thought
/// for N s"): rounded, and at least 1.
pub fn thinking_secs(thinking_ms: i64) -> i64 {
    ((thinking_ms + 500) / 1000).max(1)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// Counted by our tokenizer because the provider sent no usage.
    #[serde(default)]
    pub estimated: bool,
    /// Of the completion tokens, those spent thinking (when the provider
    /// reports them: `completion_tokens_details.reasoning_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<i64>,
}

/// The streams of one reply: the answer (the message body), a reasoning
/// model's thinking before it, and its tool calls (a log of records, see
/// [`crate::tools`]). Each has its own byte offsets. On the wire a number
/// (0, 1, 2), left out of a delta for the answer.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(into = "u8", try_from = "u8")]
pub enum Part {
    #[default]
    Answer,
    Thinking,
    Tools,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Answer, Part::Thinking, Part::Tools];
    pub const COUNT: usize = Part::ALL.len();

    pub fn is_answer(&self) -> bool {
        *self == Part::Answer
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<Part> for u8 {
    fn from(part: Part) -> u8 {
        part as u8
    }
}

impl TryFrom<u8> for Part {
    type Error = String;
    fn try_from(n: u8) -> Result<Self, String> {
        match n {
            0 => Ok(Part::Answer),
            1 => Ok(Part::Thinking),
            2 => Ok(Part::Tools),
            _ => Err(format!("no reply part {n}")),
        }
    }
}

/// How a finished reply went, beyond its status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplyStats {
    pub usage: Option<Usage>,
    pub ttft_ms: Option<i64>,
    pub tokens_per_second: Option<f64>,
    pub retries: i64,
    /// See [`Message::thinking_ms`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_ms: Option<i64>,
}

/// Tokens used, summed over a thread's replies, in total and per author
/// (the author who asked).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub replies: i64,
    pub by_author: Vec<AuthorUsage>,
}

impl UsageTotals {
    /// The totals of per-author usage rows.
    pub fn from_authors(by_author: Vec<AuthorUsage>) -> Self {
        Self {
            prompt_tokens: by_author.iter().map(|a| a.prompt_tokens).sum(),
            completion_tokens: by_author.iter().map(|a| a.completion_tokens).sum(),
            replies: by_author.iter().map(|a| a.replies).sum(),
            by_author,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct AuthorUsage {
    pub author: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub replies: i64,
}

/// What a thread page loads: the latest messages, oldest first, and the
/// revision they are current to (the subscription resumes from it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadPage {
    pub thread: Thread,
    pub messages: Vec<Message>,
    pub rev: i64,
    /// The author name this browser last posted with (a cookie).
    pub author: Option<String>,
    /// How replies in this thread stream: the thread's own choice, if any,
    /// and the configured default.
    pub granularity: Option<Granularity>,
    pub default_granularity: Granularity,
    /// Whether messages older than `messages` exist.
    pub more: bool,
    /// The handles the bots answer to (for the composer's suggestions).
    pub bots: Vec<String>,
    /// The signed-in user's name, when an authenticating proxy sets it: the
    /// author of every post from this page.
    pub signed_in: Option<String>,
    /// A fresh id for the composer's next post (a resent form repeats it).
    pub request_id: String,
    /// Whether the server offers search (the page shows the box).
    pub search: bool,
    /// Who people are here (accounts: the page links to yours; open: it
    /// says anyone may post under any name).
    pub access: AccessMode,
    /// Whether only the person who asked may approve a reply's waiting tool
    /// call (`tools.approver = "requester"`), else anyone in the thread.
    pub requester_approves: bool,
}

/// What `send_message` committed: the user's message and, when the bot was
/// mentioned, the placeholder reply now streaming.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Posted {
    pub message: Message,
    /// One streaming reply per bot the message mentions.
    pub replies: Vec<Message>,
    /// True when this answers a repeated post: nothing new was stored.
    #[serde(default)]
    pub repeated: bool,
}

/// The one wire type of a thread's live subscription (SSE `data:`; the SSE
/// `id:` is the revision the event brings the client to).
///
/// Tags and the delta's fields have one-letter names: a delta is by far the
/// most frequent event (one per token per viewer), and short names keep it
/// under 50 bytes on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t")]
pub enum ChatEvent {
    /// A whole row: a new message, or a snapshot of one after (re)connecting.
    #[serde(rename = "m")]
    Message { message: Message },
    /// `text` was appended to message `id` at byte `offset` of its body
    /// (or of its thinking: `part`).
    #[serde(rename = "d")]
    Delta {
        #[serde(rename = "i")]
        id: i64,
        #[serde(rename = "p", default, skip_serializing_if = "Part::is_answer")]
        part: Part,
        #[serde(rename = "o")]
        offset: usize,
        #[serde(rename = "x")]
        text: String,
    },
    /// Message `id` reached a terminal status; `len` (bytes) and `hash`
    /// ([`body_hash`]) describe the final body so a client can prove its
    /// copy; `thinking_len` and `thinking_hash` the same of its thinking,
    /// `tools_len` and `tools_hash` of its tool log.
    #[serde(rename = "f")]
    Finished {
        id: i64,
        status: Status,
        len: usize,
        hash: String,
        #[serde(default)]
        thinking_len: usize,
        #[serde(default = "empty_hash")]
        thinking_hash: String,
        #[serde(default)]
        tools_len: usize,
        #[serde(default = "empty_hash")]
        tools_hash: String,
        error: Option<String>,
        finish_reason: Option<String>,
        stopped_by: Option<String>,
        stats: ReplyStats,
        finished_at: i64,
    },
    /// A passing note on a streaming reply changed (e.g. retrying).
    #[serde(rename = "n")]
    Notice {
        id: i64,
        notice: Option<String>,
        retries: i64,
    },
    /// A reasoning reply started its answer after thinking this long
    /// ("Thought for N s" while the answer streams).
    #[serde(rename = "k")]
    Thought { id: i64, thinking_ms: i64 },
    /// End of a snapshot: the client is current to `rev`.
    #[serde(rename = "s")]
    Sync { rev: i64 },
    /// How many viewers the thread has now (sent without an event id: it is
    /// not a change of the database).
    #[serde(rename = "p")]
    Presence { watchers: u32 },
    /// A thread was created, renamed, or its activity changed (the thread
    /// list's stream, and a thread's own stream on rename).
    #[serde(rename = "t")]
    Thread { thread: ThreadSummary },
}

impl ChatEvent {
    /// Whether the event describes the moment rather than a stored change:
    /// such events carry no revision and are never replayed on resume.
    pub fn is_ephemeral(&self) -> bool {
        matches!(self, ChatEvent::Presence { .. } | ChatEvent::Thread { .. })
    }
}

fn empty_hash() -> String {
    body_hash("")
}

/// FNV-1a (64 bit) of the body's bytes as 16 hex digits: cheap on both sides,
/// enough to detect a copy that differs from the stored body.
pub fn body_hash(body: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in body.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Whether `body` mentions `@handle` as a word, ignoring case
/// (`@GPT, hi` does; `me@gpt.example` and `@gpt4` do not).
pub fn mentions(body: &str, handle: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    let needle = format!("@{}", handle.to_lowercase());
    let lower = body.to_lowercase();
    lower.match_indices(&needle).any(|(at, _)| {
        let before = lower[..at].chars().next_back();
        let after = lower[at + needle.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// Checks a post and returns its trimmed author and body.
pub fn validate_post(author: &str, body: &str) -> Result<(String, String), AppError> {
    validate_post_with(author, body, MAX_AUTHOR_CHARS)
}

/// [`validate_post`] with a name of up to `max_author` characters (a
/// sign-in proxy's identity may be longer than a typed name).
pub fn validate_post_with(
    author: &str,
    body: &str,
    max_author: usize,
) -> Result<(String, String), AppError> {
    let author = author.trim();
    let body = body.trim();
    if author.is_empty() {
        return Err(AppError::Invalid("Please enter your name.".into()));
    }
    if author.chars().count() > max_author {
        return Err(AppError::Invalid(format!(
            "Your name is too long: at most {max_author} characters."
        )));
    }
    if author.chars().any(char::is_control) {
        return Err(AppError::Invalid(
            "Your name cannot contain control characters.".into(),
        ));
    }
    if body.is_empty() {
        return Err(AppError::Invalid("The message is empty.".into()));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(AppError::Invalid(format!(
            "The message is too long: {} bytes, at most {MAX_BODY_BYTES}.",
            body.len()
        )));
    }
    Ok((author.to_owned(), body.to_owned()))
}

/// `HH:MM` of an epoch-millisecond time, in UTC (server render) or, once
/// hydrated, in the browser's time zone.
pub fn format_time(ms: i64, local: bool) -> String {
    #[cfg(feature = "hydrate")]
    if local {
        let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms as f64));
        return format!("{:02}:{:02}", date.get_hours(), date.get_minutes());
    }
    let _ = local;
    let minutes = ms.div_euclid(60_000);
    format!(
        "{:02}:{:02}",
        minutes.div_euclid(60).rem_euclid(24),
        minutes.rem_euclid(60)
    )
}

/// `YYYY-MM-DD HH:MM` in UTC (exports, tooltips).
pub fn format_datetime_utc(ms: i64) -> String {
    let minutes = ms.div_euclid(60_000);
    let days = minutes.div_euclid(24 * 60);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {}", format_time(ms, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_date_time() {
        assert_eq!(format_datetime_utc(0), "1970-01-01 00:00");
        assert_eq!(format_datetime_utc(1_795_543_200_000), "2026-11-24 18:00");
        assert_eq!(format_datetime_utc(951_782_400_000), "2000-02-29 00:00");
    }

    #[test]
    fn mention_is_a_case_insensitive_word() {
        assert!(mentions("@gpt what is rust?", "gpt"));
        assert!(mentions("hey @GPT, hi", "gpt"));
        assert!(mentions("ask (@gpt)", "gpt"));
        assert!(!mentions("mail me@gpt.example", "gpt"));
        assert!(!mentions("@gpt4 is not me", "gpt"));
        assert!(!mentions("no mention here", "gpt"));
    }

    #[test]
    fn validation_trims_and_bounds() {
        assert_eq!(
            validate_post("  ann ", " hi \n").unwrap(),
            ("ann".into(), "hi".into())
        );
        assert!(validate_post("", "hi").is_err());
        assert!(validate_post(&"a".repeat(41), "hi").is_err());
        assert!(validate_post(&"é".repeat(40), "hi").is_ok());
        assert!(validate_post("ann", "   ").is_err());
        assert!(validate_post("ann", &"x".repeat(MAX_BODY_BYTES)).is_ok());
        assert!(validate_post("ann", &"x".repeat(MAX_BODY_BYTES + 1)).is_err());
    }

    #[test]
    fn a_delta_is_compact_on_the_wire() {
        let delta = ChatEvent::Delta {
            id: 1234,
            part: Part::Answer,
            offset: 56789,
            text: " word".into(),
        };
        let json = serde_json::to_string(&delta).unwrap();
        assert_eq!(json, r#"{"t":"d","i":1234,"o":56789,"x":" word"}"#);
        assert_eq!(serde_json::from_str::<ChatEvent>(&json).unwrap(), delta);
        let thinking = ChatEvent::Delta {
            id: 1,
            part: Part::Thinking,
            offset: 0,
            text: "hm".into(),
        };
        let json = serde_json::to_string(&thinking).unwrap();
        assert_eq!(json, r#"{"t":"d","i":1,"p":1,"o":0,"x":"hm"}"#);
        assert_eq!(serde_json::from_str::<ChatEvent>(&json).unwrap(), thinking);
        assert!(
            serde_json::from_str::<ChatEvent>(r#"{"t":"d","i":1,"p":3,"o":0,"x":""}"#).is_err()
        );
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        assert_eq!(body_hash(""), "cbf29ce484222325");
        assert_ne!(body_hash("ab"), body_hash("ba"));
    }

    #[test]
    fn time_is_utc_hours_and_minutes() {
        assert_eq!(format_time(0, false), "00:00");
        assert_eq!(format_time((13 * 60 + 7) * 60_000 + 59_999, false), "13:07");
    }
}

/// How finely streamed text is committed and published: every provider
/// token, whole words, or whole sentences (each with a maximum delay after
/// which pending text goes out anyway).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    #[default]
    Token,
    Word,
    Sentence,
}

impl Granularity {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "token" => Some(Self::Token),
            "word" => Some(Self::Word),
            "sentence" => Some(Self::Sentence),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Word => "word",
            Self::Sentence => "sentence",
        }
    }
}

// What the server records: a post, a restart, a reply's end. Built by the
// ingest step (outbox, generation), applied by the writer.

/// A user message to store, with the replies it starts.
#[derive(Clone, Debug)]
pub struct NewPost {
    pub thread_id: String,
    pub author: String,
    pub body: String,
    /// A post with a request id already stored in the thread stores nothing
    /// and is answered with the first one (`Posted::repeated`).
    pub request_id: Option<String>,
    /// The replies to start: one per bot mentioned.
    pub replies: Vec<NewReply>,
}

/// A placeholder reply to insert with a post.
#[derive(Clone, Debug)]
pub struct NewReply {
    /// The bot's handle (the reply's author).
    pub handle: String,
    pub model: String,
}

/// A new attempt at an ended reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// A new reply to the same prompt; the old one stays in history.
    Regenerate,
    /// The same reply back to `streaming`, to append what comes next.
    Continue,
}

/// How a reply ended, as it is recorded.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: Status,
    pub error: Option<String>,
    pub finish_reason: Option<String>,
    pub stopped_by: Option<String>,
    pub stats: ReplyStats,
}

impl Outcome {
    /// A reply that failed with `error` and nothing else known.
    pub fn failed(error: String) -> Self {
        Self {
            status: Status::Failed,
            error: Some(error),
            finish_reason: None,
            stopped_by: None,
            stats: ReplyStats::default(),
        }
    }
}
