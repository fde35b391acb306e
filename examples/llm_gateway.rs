//! An LLM gateway with per-user token budgets, settled from what the model reports.
//!
//! A fake model streams its answer token by token (server-sent events) and tells the tokens
//! used only at the end, as LLM APIs do. The gateway in front of it reserves the most a
//! request may use (its prompt and `max_tokens`) when it admits it, relays the stream, and
//! settles the reservation with the model's usage after the last event: what was not used
//! goes back to the user's budget at once.
//!
//! ```text
//! cargo run --example llm_gateway            # a few requests through it, then exits
//! cargo run --example llm_gateway -- serve   # the gateway on 127.0.0.1:3000
//! curl -N -H 'x-client-id: ann' -d '{"prompt": "tell me a story", "max_tokens": 50}' \
//!     -H 'content-type: application/json' http://127.0.0.1:3000/chat
//! ```
//!
//! With Redis (`Limiter::builder().redis_url(…)`), every gateway instance shares the
//! budgets, and a reservation made on one can be settled on another.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use tollgate::{ClientKey, Cost, Limiter, Query, RateLimitLayer, ReservedCost, Rules};

/// Each user may use 2,000 tokens an hour on `/chat`: the request reserves its most, the
/// model's usage settles it.
pub const RULES: &str = r#"{
    "default": {"limit": "60/minute"},
    "routes": [{
        "path": "/chat", "methods": ["POST"],
        "limit": "2000/hour", "unit": "tokens", "settle_header": "x-tokens-used"
    }]
}"#;

/// The most a request body may be.
const MAX_BODY: usize = 64 * 1024;

/// What a caller asks the gateway, and the gateway the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ask {
    pub prompt: String,
    pub max_tokens: u32,
}

impl Ask {
    /// The prompt's tokens, as this fake model counts them: its words.
    fn prompt_tokens(&self) -> u32 {
        u32::try_from(self.prompt.split_whitespace().count()).unwrap_or(u32::MAX)
    }
}

/// The fake model: answers `min(max_tokens, 5 + prompt tokens)` tokens, one event each,
/// then `{"usage": {"total_tokens": …}}` (prompt and answer), then `[DONE]`.
pub fn fake_model() -> Router {
    Router::new().route(
        "/v1/chat",
        post(|Json(ask): Json<Ask>| async move {
            let prompt = ask.prompt_tokens();
            let answer = ask.max_tokens.min(5 + prompt);
            let tokens = (0..answer).map(|n| Event::default().data(format!("tok{n}")));
            let usage = serde_json::json!({"usage": {"total_tokens": prompt + answer}});
            let end = [
                Event::default().data(usage.to_string()),
                Event::default().data("[DONE]"),
            ];
            let events = tokens.chain(end).map(Ok::<_, Infallible>);
            Sse::new(futures::stream::iter(events))
        }),
    )
}

/// The gateway in front of the model at `model` (its base URL).
pub fn gateway(limiter: Limiter, model: String) -> Router {
    Router::new()
        .route("/chat", post(chat))
        .with_state(Upstream {
            http: reqwest::Client::new(),
            model,
        })
        .layer(RateLimitLayer::new(limiter))
        // Outside the rate limit layer, so that the estimate is there when it checks.
        .layer(middleware::from_fn(estimate))
}

#[derive(Clone)]
struct Upstream {
    http: reqwest::Client,
    model: String,
}

/// Sets the request's [`Cost`] to the most it may use: its prompt and `max_tokens`.
async fn estimate(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "the request is too large").into_response();
    };
    let mut request = Request::from_parts(parts, Body::from(bytes.clone()));
    if let Ok(ask) = serde_json::from_slice::<Ask>(&bytes) {
        let most = ask.prompt_tokens().saturating_add(ask.max_tokens).max(1);
        request.extensions_mut().insert(Cost::new(most));
    }
    next.run(request).await
}

/// Relays the model's stream, and settles the reservation with the usage it reports at
/// its end. A stream cut short (the caller gone) leaves the reservation at its estimate.
async fn chat(
    State(upstream): State<Upstream>,
    Extension(cost): Extension<ReservedCost>,
    Json(ask): Json<Ask>,
) -> Response {
    let url = format!("{}/v1/chat", upstream.model);
    let answer = match upstream.http.post(url).json(&ask).send().await {
        Ok(answer) if answer.status().is_success() => answer,
        _ => return (StatusCode::BAD_GATEWAY, "the model did not answer").into_response(),
    };
    let relay = Relay {
        answer,
        cost,
        line: Vec::new(),
        used: None,
    };
    let stream = futures::stream::unfold(relay, |mut relay| async move {
        match relay.answer.chunk().await {
            Ok(Some(chunk)) => {
                relay.read(&chunk);
                Some((Ok::<_, Infallible>(chunk), relay))
            }
            // The end: the usage is known.
            _ => {
                if let Some(used) = relay.used
                    && let Err(error) = relay.cost.settle(used).await
                {
                    eprintln!("the reservation was not settled: {error}");
                }
                None
            }
        }
    });
    (
        [(CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The model's stream on its way to the caller, read for its usage.
struct Relay {
    answer: reqwest::Response,
    cost: ReservedCost,
    /// The line read so far.
    line: Vec<u8>,
    used: Option<u64>,
}

impl Relay {
    fn read(&mut self, chunk: &Bytes) {
        for &byte in chunk.iter() {
            if byte != b'\n' {
                self.line.push(byte);
                continue;
            }
            let line = std::mem::take(&mut self.line);
            let Some(data) = line.strip_prefix(b"data: ") else {
                continue;
            };
            let usage = serde_json::from_slice::<serde_json::Value>(data).ok();
            if let Some(total) = usage.and_then(|u| u["usage"]["total_tokens"].as_u64()) {
                self.used = Some(total);
            }
        }
    }
}

/// Serves `router` on a free loopback port.
pub async fn serve(router: Router) -> std::io::Result<SocketAddr> {
    serve_on(router, "127.0.0.1:0").await
}

async fn serve_on(router: Router, address: &str) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(address)
}

/// What is left of `user`'s budget on `/chat`.
pub async fn tokens_left(limiter: &Limiter, user: &str) -> Result<u32, Box<dyn std::error::Error>> {
    let user = ClientKey::id(user);
    let query = Query::new(&user).route("POST", "/chat");
    let peeked = limiter.peek(query).await?;
    Ok(peeked.decision().ok_or("a limited rule")?.remaining)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limiter = Limiter::builder()
        .rules(Rules::from_json(RULES)?)
        .build()
        .await?;
    let model = serve(fake_model()).await?;
    let model = format!("http://{model}");
    if std::env::args().nth(1).as_deref() == Some("serve") {
        let address = serve_on(gateway(limiter, model), "127.0.0.1:3000").await?;
        println!("the gateway is on http://{address}/chat; Ctrl-C stops it");
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }
    let gateway = serve(gateway(limiter.clone(), model)).await?;
    let http = reqwest::Client::new();
    let asks = [
        ("tell me a story", 600),
        ("and another", 600),
        ("", 1500),
        // More than is left: refused, whatever it would have used.
        ("one more", 1990),
    ];
    for (prompt, max_tokens) in asks {
        let response = http
            .post(format!("http://{gateway}/chat"))
            .header("x-client-id", "ann")
            .json(&Ask {
                prompt: prompt.into(),
                max_tokens,
            })
            .send()
            .await?;
        let status = response.status();
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
        let reserved = header("x-ratelimit-remaining").unwrap_or("-").to_owned();
        let retry_after = header("retry-after").map(str::to_owned);
        let body = response.text().await?;
        let events = body.lines().filter(|l| l.starts_with("data: tok")).count();
        let left = tokens_left(&limiter, "ann").await?;
        match retry_after {
            None => println!(
                "ann asks for up to {max_tokens} tokens: {status}, {events} streamed; \
                 {reserved} left while reserved, {left} once settled"
            ),
            Some(wait) => println!(
                "ann asks for up to {max_tokens} tokens: {status}, retry after {wait} s; {left} left"
            ),
        }
    }
    Ok(())
}
