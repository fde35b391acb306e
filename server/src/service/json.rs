//! JSON in and out, the way the services tollgate replaces (FastAPI) spoke it: a body that
//! does not fit is a 422 with `{"detail": [{"loc": ["body", …], "msg": …, "type": …}]}`,
//! other errors are `{"detail": …}`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The largest JSON body read: these requests are a few hundred bytes.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON request body, deserialized with the location of any problem.
pub(crate) struct Body<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(request: Request, _: &S) -> Result<Self, Self::Rejection> {
        let bytes: Bytes = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                detail(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the body is larger than {MAX_BODY_BYTES} bytes"),
                )
            })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut *de).map_err(|error| {
            use serde_path_to_error::Segment;
            let mut loc = vec![Value::from("body")];
            for segment in error.path().iter() {
                match segment {
                    Segment::Seq { index } => loc.push(Value::from(*index)),
                    Segment::Map { key } | Segment::Enum { variant: key } => {
                        loc.push(Value::from(key.as_str()));
                    }
                    Segment::Unknown => {}
                }
            }
            invalid_body(loc, error.inner())
        })?;
        // Only whitespace may follow the document.
        de.end()
            .map_err(|error| invalid_body(vec![Value::from("body")], &error))?;
        Ok(Body(value))
    }
}

/// A 422 naming where the body does not fit (`loc`, from `"body"`) and why.
fn invalid_body(mut loc: Vec<Value>, inner: &serde_json::Error) -> Response {
    let text = inner.to_string();
    let message = text
        .rfind(" at line ")
        .map_or(text.as_str(), |at| &text[..at]);
    let kind = if inner.is_syntax() || inner.is_eof() {
        "json_invalid"
    } else if let Some(field) = message.strip_prefix("missing field `") {
        // The path stops at the object that lacks it.
        loc.push(Value::from(field.trim_end_matches('`')));
        "missing"
    } else if message.starts_with("unknown field `") {
        // The path already ends at the field.
        "extra_forbidden"
    } else if message.starts_with("invalid type") {
        "type_error"
    } else {
        "value_error"
    };
    let body = json!({"detail": [{"loc": loc, "msg": message, "type": kind}]});
    (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response()
}

/// `{"detail": …}` with `status`.
pub(crate) fn detail(status: StatusCode, detail: impl Into<Value>) -> Response {
    (status, axum::Json(json!({"detail": detail.into()}))).into_response()
}

/// A 422 naming the part of the request that does not fit (`loc`: `["body", "limit"]`,
/// `["path", "key"]`) and why, as the body's own problems are.
#[derive(Debug)]
pub(crate) struct Unprocessable {
    loc: Vec<Value>,
    msg: String,
    kind: &'static str,
}

impl Unprocessable {
    /// A value that does not fit.
    pub(crate) fn at(loc: &[&str], msg: impl Into<String>) -> Self {
        Self {
            loc: loc.iter().map(|&part| Value::from(part)).collect(),
            msg: msg.into(),
            kind: "value_error",
        }
    }

    /// A value that is needed and missing.
    pub(crate) fn missing(loc: &[&str], msg: impl Into<String>) -> Self {
        Self {
            kind: "missing",
            ..Self::at(loc, msg)
        }
    }
}

impl IntoResponse for Unprocessable {
    fn into_response(self) -> Response {
        let problem = json!([{"loc": self.loc, "msg": self.msg, "type": self.kind}]);
        detail(StatusCode::UNPROCESSABLE_ENTITY, problem)
    }
}
