//! The service's router in an app that installed its own global metrics recorder first. A
//! test binary of its own: a process has one global recorder, and any other test that builds
//! the router would install the service's first.

use axum::http::StatusCode;
use testkit::*;

/// In an app that installed its own global recorder first, the router's `/metrics` says so
/// (503), and renders from the Prometheus handle the app gives it.
#[tokio::test]
async fn an_app_with_its_own_recorder() {
    use axum::body::Body;
    use axum::http::Request;
    use tollgate_server::service::{Service, prometheus_builder};
    use tower::ServiceExt;

    metrics::set_global_recorder(metrics_util::debugging::DebuggingRecorder::new())
        .expect("the first recorder of this test process");
    let limiter = Limiter::builder()
        .rules(rules(r#"{"default": {"limit": "2/minute"}}"#))
        .build()
        .await
        .unwrap();
    let get = || Request::get("/metrics").body(Body::empty()).unwrap();

    let app = Service::new(limiter.clone()).router();
    let response = app.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = body_json(response).await;
    let why = body["detail"].as_str().unwrap();
    assert!(why.contains("Service::metrics_handle"), "{why}");

    let handle = prometheus_builder().build_recorder().handle();
    let app = Service::new(limiter).metrics_handle(handle).router();
    let response = app.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    // This recorder is not the global one here, so it has recorded nothing: an app gives
    // the handle of the recorder it installed.
    assert!(parse(&text).0.is_empty(), "{text}");
}
