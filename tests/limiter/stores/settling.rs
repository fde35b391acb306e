//! The layer settles a reservation from the response, over real HTTP: from a header the app
//! sets, from the handle in a streamed (SSE) response after its last event, from a trailer;
//! an unsettled or unreadable one stays at its estimate. The settle field never leaves.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use bytes::Bytes;
use futures::StreamExt;
use http_body::Frame;
use http_body_util::StreamBody;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate::{ClientKey, Cost, Limiter, RateLimitLayer, ReservedCost};

use super::suite::{Backend, left};
use testkit::unique_prefix;

/// 100,000 tokens, one back every 1,000 s: nothing moves during the test.
const RULES: &str = r#"{"default": {"capacity": 100000, "refill_rate": 0.001,
    "unit": "tokens", "settle_header": "x-tokens-used"}}"#;

/// What the request says it used (`x-used`), as the fake model would report it.
fn used(headers: &HeaderMap) -> u64 {
    headers
        .get("x-used")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0)
}

/// A fake model: each route reports what was used in its own way.
fn app(limiter: Limiter) -> Router {
    Router::new()
        .route(
            "/header",
            post(|headers: HeaderMap| async move {
                let value = headers
                    .get("x-used")
                    .cloned()
                    .unwrap_or(HeaderValue::from_static("0"));
                ([("x-tokens-used", value)], "answered")
            }),
        )
        .route(
            "/stream",
            post(
                |Extension(cost): Extension<ReservedCost>, headers: HeaderMap| async move {
                    let used = used(&headers);
                    let tokens =
                        futures::stream::iter((0..3).map(|n| {
                            Ok::<_, Infallible>(Event::default().data(format!("token {n}")))
                        }));
                    // The usage comes after the last token, as LLM APIs send it.
                    let usage = futures::stream::once(async move {
                        let settled = cost
                            .settle(used)
                            .await
                            .expect("settled at the stream's end");
                        Ok(Event::default()
                            .event("usage")
                            .data(settled.used().to_string()))
                    });
                    Sse::new(tokens.chain(usage))
                },
            ),
        )
        .route(
            "/trailer",
            post(|headers: HeaderMap| async move {
                let mut trailers = HeaderMap::new();
                trailers.insert("x-tokens-used", used(&headers).into());
                trailers.insert("x-other", HeaderValue::from_static("kept"));
                let frames = futures::stream::iter([
                    Ok::<_, Infallible>(Frame::data(Bytes::from("part one\n"))),
                    Ok(Frame::data(Bytes::from("part two\n"))),
                    Ok(Frame::trailers(trailers)),
                ]);
                let mut response = Response::new(Body::new(StreamBody::new(frames)));
                // HTTP/1.1 sends the trailers a response declares.
                let declared = HeaderValue::from_static("x-tokens-used, x-other");
                response.headers_mut().insert("trailer", declared);
                response
            }),
        )
        .route("/ignore", post(|| async { "never says" }))
        .layer(RateLimitLayer::new(limiter))
        // The estimate, as an app's middleware would make it from the request.
        .layer(middleware::from_fn(
            |mut request: Request, next: Next| async move {
                let estimate = request
                    .headers()
                    .get("x-estimate")
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                if let Some(estimate) = estimate {
                    request.extensions_mut().insert(Cost::new(estimate));
                }
                next.run(request).await.into_response()
            },
        ))
}

pub(super) async fn the_layer_settles_from_the_response(backend: &Backend<'_>) {
    let prefix = unique_prefix("settling");
    let limiter = backend.limiter(RULES, &prefix).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let address = listener.local_addr().expect("its address");
    let served = tokio::spawn(axum::serve(listener, app(limiter.clone())).into_future());
    let http = reqwest::Client::new();
    let send = |path: &str, client: &str, estimate: u32, used: u64| {
        http.post(format!("http://{address}{path}"))
            .header("x-client-id", client)
            .header("x-estimate", estimate)
            .header("x-used", used)
            .send()
    };

    // A header: settled before the response leaves, and gone from it.
    let response = send("/header", "ann", 5_000, 1_200)
        .await
        .expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("x-tokens-used").is_none(), "removed");
    assert_eq!(
        response.headers()["x-ratelimit-remaining"],
        "98800",
        "after the settlement"
    );
    assert_eq!(left(&limiter, &ClientKey::id("ann")).await, 98_800);
    // An overrun through the header is owed: past empty, and refused until paid back.
    let response = send("/header", "ann", 1, 200_000)
        .await
        .expect("a response");
    assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
    let refused = send("/header", "ann", 1, 1).await.expect("a response");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);

    // The handle, after a streamed response's last token: counted once the stream ends.
    let response = send("/stream", "bo", 4_000, 3_210)
        .await
        .expect("a response");
    assert_eq!(
        response.headers()["x-ratelimit-remaining"],
        "96000",
        "the estimate, then"
    );
    let text = response.text().await.expect("the stream");
    assert!(
        text.contains("token 2") && text.contains("data: 3210"),
        "{text}"
    );
    assert_eq!(left(&limiter, &ClientKey::id("bo")).await, 96_790);

    // A trailer: the client that asks for trailers gets the others, not the settle field.
    let raw = raw_post(address, "/trailer", "cy", 2_000, 700).await;
    assert!(raw.contains("part two"), "{raw}");
    assert!(
        raw.contains("\r\nx-other: kept"),
        "the other trailer goes on: {raw}"
    );
    assert!(
        !raw.contains("x-tokens-used"),
        "the settle trailer stays, and is not declared: {raw}"
    );
    assert!(raw.contains("\r\ntrailer: x-other\r\n"), "{raw}");
    assert_eq!(left(&limiter, &ClientKey::id("cy")).await, 99_300);

    // Nothing said, or nothing readable: the estimate stands, and the field still goes.
    send("/ignore", "dee", 300, 0)
        .await
        .expect("a response")
        .text()
        .await
        .expect("a body");
    let bad = http
        .post(format!("http://{address}/header"))
        .header("x-client-id", "eve")
        .header("x-estimate", 300)
        .header("x-used", "-5")
        .send()
        .await
        .expect("a response");
    assert!(bad.headers().get("x-tokens-used").is_none());
    tokio::time::sleep(Duration::from_millis(300)).await; // a dropped reservation, let go
    for client in ["dee", "eve"] {
        assert_eq!(
            left(&limiter, &ClientKey::id(client)).await,
            99_700,
            "{client}"
        );
    }
    served.abort();
    overrides_and_unheld_reservations(backend).await;
}

/// A client's override counts in its rule's unit and settles as its rule does; a request
/// admitted with nothing held (past a shadow rule's would-be refusal) still hands the app
/// its handle, which says nothing was held.
async fn overrides_and_unheld_reservations(backend: &Backend<'_>) {
    let rules = r#"{
        "default": {"capacity": 1000, "refill_rate": 0.001, "unit": "tokens",
                    "settle_header": "x-tokens-used"},
        "routes": [{"path": "/shadow", "capacity": 1, "refill_rate": 0.001, "shadow": true,
                    "settle_header": "x-tokens-used"}],
        "clients": {"id:vip": {"capacity": 5000, "refill_rate": 0.001}}
    }"#;
    let limiter = backend
        .limiter(rules, &unique_prefix("settling-overrides"))
        .await;
    let app = Router::new()
        .route(
            "/",
            post(|| async { ([("x-tokens-used", "40")], "answered") }),
        )
        .route(
            "/shadow",
            post(|Extension(cost): Extension<ReservedCost>| async move {
                match cost.settle(1).await {
                    Ok(_) => "settled".to_owned(),
                    Err(error) => format!("{error:?} with {} held", cost.estimate()),
                }
            }),
        )
        .layer(RateLimitLayer::new(limiter.clone()));
    let post = |path: &str| {
        axum::http::Request::post(path)
            .header("x-client-id", "vip")
            .body(Body::empty())
            .expect("a request")
    };
    use tower::ServiceExt;
    let response = app.clone().oneshot(post("/")).await.expect("a response");
    assert!(
        response.headers().get("x-tokens-used").is_none(),
        "removed for an override too"
    );
    assert_eq!(response.headers()["x-ratelimit-unit"], "tokens");
    assert_eq!(
        response.headers()["x-ratelimit-remaining"],
        "4960",
        "settled at 40"
    );
    // The shadow route: its one unit goes to the first request, the second is let past.
    let body = |response: Response| async {
        let bytes = axum::body::to_bytes(Body::new(response.into_body()), 1024).await;
        String::from_utf8(bytes.expect("a body").to_vec()).expect("text")
    };
    let ann = |path: &str| {
        axum::http::Request::post(path)
            .header("x-client-id", "ann")
            .body(Body::empty())
            .expect("a request")
    };
    let first = app
        .clone()
        .oneshot(ann("/shadow"))
        .await
        .expect("a response");
    assert_eq!(body(first.map(Body::new)).await, "settled");
    let second = app.oneshot(ann("/shadow")).await.expect("a response");
    assert_eq!(
        second.status(),
        StatusCode::OK,
        "a shadow rule refuses nothing"
    );
    assert_eq!(body(second.map(Body::new)).await, "Unknown with 0 held");
}

/// A POST over a plain connection that accepts trailers (`TE: trailers`), read to its end.
async fn raw_post(
    address: std::net::SocketAddr,
    path: &str,
    client: &str,
    estimate: u32,
    used: u64,
) -> String {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("a connection");
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\nx-client-id: {client}\r\nx-estimate: {estimate}\r\n\
         x-used: {used}\r\nte: trailers\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    String::from_utf8_lossy(&answer).to_ascii_lowercase()
}
