//! `examples/llm_gateway.rs`, driven over real HTTP: per-user token budgets settled from the
//! usage at the end of the model's stream, in memory and shared by two gateways on Redis.

#[path = "../../examples/llm_gateway.rs"]
#[allow(dead_code)]
mod example;

use example::{Ask, fake_model, gateway, serve, tokens_left};
use tollgate::{Limiter, Rules};

use testkit::{TestRedis, unique_prefix};

/// The example's route, with a budget that does not refill during the test: 100,000 tokens,
/// one back every 1,000 s.
const RULES: &str = r#"{
    "default": {"limit": "60/minute"},
    "routes": [{"path": "/chat", "methods": ["POST"], "capacity": 100000, "refill_rate": 0.001,
                "unit": "tokens", "settle_header": "x-tokens-used"}]
}"#;

/// What the fake model uses for `prompt` and `max_tokens`: the prompt's words and
/// `min(max_tokens, 5 + words)` answered.
fn usage(prompt: &str, max_tokens: u32) -> u32 {
    let words = u32::try_from(prompt.split_whitespace().count()).expect("a short prompt");
    words + max_tokens.min(5 + words)
}

async fn ask(
    http: &reqwest::Client,
    gateway: std::net::SocketAddr,
    user: &str,
    ask: &Ask,
) -> String {
    let response = http
        .post(format!("http://{gateway}/chat"))
        .header("x-client-id", user)
        .json(ask)
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    response.text().await.expect("the stream")
}

#[tokio::test]
async fn budgets_are_settled_from_the_streams_usage() {
    let limiter = Limiter::builder()
        .rules(Rules::from_json(RULES).unwrap())
        .build()
        .await
        .unwrap();
    let model = format!("http://{}", serve(fake_model()).await.unwrap());
    let at = serve(gateway(limiter.clone(), model)).await.unwrap();
    let http = reqwest::Client::new();
    let story = Ask {
        prompt: "tell me a story please".into(),
        max_tokens: 5000,
    };
    let response = http
        .post(format!("http://{at}/chat"))
        .header("x-client-id", "ann")
        .json(&story)
        .send()
        .await
        .unwrap();
    // Reserved: the prompt's 5 tokens and all 5,000 it may answer.
    assert_eq!(response.headers()["x-ratelimit-remaining"], "94995");
    assert_eq!(response.headers()["x-ratelimit-unit"], "tokens");
    let text = response.text().await.unwrap();
    assert!(
        text.contains("data: tok9") && text.contains("\"total_tokens\":15"),
        "{text}"
    );
    assert_eq!(
        tokens_left(&limiter, "ann").await.unwrap(),
        100_000 - usage(&story.prompt, 5000)
    );
    assert_eq!(
        tokens_left(&limiter, "bo").await.unwrap(),
        100_000,
        "a budget per user"
    );
}

#[tokio::test]
async fn two_gateways_on_one_redis_share_each_budget_exactly() {
    let redis = TestRedis::start();
    let prefix = unique_prefix("llm-gateway");
    let limiter = || async {
        Limiter::builder()
            .rules(Rules::from_json(RULES).unwrap())
            .redis_url(redis.url())
            .redis_prefix(&prefix)
            .build()
            .await
            .unwrap()
    };
    let (a, b) = (limiter().await, limiter().await);
    let model = format!("http://{}", serve(fake_model()).await.unwrap());
    let gateways = [
        serve(gateway(a.clone(), model.clone())).await.unwrap(),
        serve(gateway(b.clone(), model)).await.unwrap(),
    ];
    let http = reqwest::Client::new();
    let asks: Vec<Ask> = (0..40u32)
        .map(|n| Ask {
            prompt: "word ".repeat(n as usize % 7),
            max_tokens: 100 + n,
        })
        .collect();
    let used: u32 = asks.iter().map(|a| usage(&a.prompt, a.max_tokens)).sum();
    let streams = asks.iter().enumerate().map(|(n, one)| {
        let http = http.clone();
        async move { ask(&http, gateways[n % 2], "cy", one).await }
    });
    futures::future::join_all(streams).await;
    assert_eq!(tokens_left(&a, "cy").await.unwrap(), 100_000 - used);
    assert_eq!(tokens_left(&b, "cy").await.unwrap(), 100_000 - used);
}
