//! Our stream decoding (`Provider::stream`, which reads a started stream on
//! the reply's own task) against async-openai's own streaming (which reads
//! it on a task it spawns): for every recorded provider stream and for
//! hostile bodies, both yield the same chunks and fail at the same point.

use std::path::PathBuf;

use async_openai::{config::OpenAIConfig, error::OpenAIError, Client};
use futures::StreamExt;
use streamchat::server::{
    config::{BotConfig, Config},
    ingest::provider::{Chunk, Provider},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// Serves `body` as a 200 event stream to every request, then closes.
async fn serve(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                // The request: its head, then as much body as it announced.
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                let _ = socket.write_all(head.as_bytes()).await;
                // In small pieces, so that events and lines span reads.
                for piece in body.chunks(7) {
                    if socket.write_all(piece).await.is_err() {
                        return;
                    }
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

/// An item as both sides can be compared: a chunk's fields, or which
/// failure (a malformed chunk keeps the data it could not read).
fn seen(item: Result<Chunk, OpenAIError>) -> String {
    match item {
        Ok(chunk) => format!("{chunk:?}"),
        Err(OpenAIError::JSONDeserialize(_, data)) => format!("malformed: {data}"),
        Err(OpenAIError::StreamError(_)) => "stream broke".into(),
        Err(other) => format!("other: {other}"),
    }
}

async fn ours(url: &str) -> Vec<String> {
    let bot = BotConfig {
        base_url: Some(url.to_owned()),
        ..BotConfig::default()
    };
    let provider = Provider::for_bot(&Config::default(), &bot, url);
    let stream = provider
        .stream(Vec::new(), Vec::new())
        .await
        .expect("the stream starts");
    stream.map(seen).collect().await
}

async fn async_openais(url: &str) -> Vec<String> {
    let client = Client::with_config(
        OpenAIConfig::new()
            .with_api_base(url)
            .with_api_key("sk-test"),
    );
    let request = serde_json::json!({ "model": "m", "messages": [], "stream": true });
    let stream = client
        .chat()
        .create_stream_byot::<_, Chunk>(request)
        .await
        .expect("the stream starts");
    stream.map(seen).collect().await
}

async fn same(name: &str, body: Vec<u8>) {
    let url = serve(body).await;
    let (a, b) = (ours(&url).await, async_openais(&url).await);
    assert_eq!(a, b, "{name}: our decoding differs from async-openai's");
}

fn fixtures() -> Vec<PathBuf> {
    let dir = crate::support::provider_fixtures_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the recorded streams in {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sse"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn recorded_streams_decode_as_async_openai_decodes_them() {
    let files = fixtures();
    assert!(files.len() >= 10, "too few recordings: {files:?}");
    for file in files {
        same(&file.display().to_string(), std::fs::read(&file).unwrap()).await;
    }
}

#[tokio::test]
async fn hostile_bodies_decode_as_async_openai_decodes_them() {
    let chunk = r#"{"choices":[{"index":0,"delta":{"content":"hi"}}]}"#;
    let bodies = [
        // Keep-alive events and comments between chunks; CRLF line ends.
        format!(
            "event: keepalive\ndata: {{}}\n\n: comment\n\ndata: {chunk}\r\n\r\ndata: [DONE]\n\n"
        ),
        // Text after [DONE] is never read.
        format!("data: {chunk}\n\ndata: [DONE]\n\ndata: not json\n\n"),
        // A malformed chunk, then more.
        format!("data: {{\"choices\": [\n\ndata: {chunk}\n\n"),
        // A data field split over two lines; no [DONE] at all.
        format!("data: {{\"choices\":\ndata: []}}\n\ndata: {chunk}\n\n"),
        // An unfinished event at the end of the body.
        format!("data: {chunk}\n\ndata: {chunk}"),
        // Not UTF-8.
        String::from_utf8_lossy(b"data: \xff\xfe\n\n").into_owned(),
        String::new(),
    ];
    for (i, body) in bodies.into_iter().enumerate() {
        same(&format!("hostile body {i}"), body.into_bytes()).await;
    }
    // Raw invalid UTF-8 bytes (the decoder's own error).
    let mut raw = b"data: ".to_vec();
    raw.extend_from_slice(&[0xff, 0xfe, 0xfd]);
    raw.extend_from_slice(b"\n\ndata: [DONE]\n\n");
    same("invalid UTF-8", raw).await;
}
