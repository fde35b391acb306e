//! tower_governor keyed by `X-Client-ID`, as tollgate is keyed in the benchmarks that compare
//! them (benches/layer.rs, examples/bench_server.rs).

use http::Request;
use tower_governor::key_extractor::KeyExtractor;

/// The key: the `X-Client-ID` header, as text.
#[derive(Clone, Copy)]
pub struct ClientId;

impl KeyExtractor for ClientId {
    type Key = String;

    fn extract<T>(&self, request: &Request<T>) -> Result<String, tower_governor::GovernorError> {
        request
            .headers()
            .get("x-client-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or(tower_governor::GovernorError::UnableToExtractKey)
    }
}
