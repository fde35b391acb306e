//! [`HeaderStyle`]: which rate limit fields the fronts send, and in which form they refuse.

use serde::Deserialize;

/// Which rate limit header fields a response carries: the `X-RateLimit-*` fields, the IETF
/// `RateLimit-Policy` and `RateLimit` fields of draft-ietf-httpapi-ratelimit-headers-11, or
/// both. Set with [`LimiterBuilder::header_style`](crate::LimiterBuilder::header_style), or
/// by the rules file's `"headers": "x-ratelimit" | "ietf" | "both"`, which wins and follows
/// reloads. See "Headers" in the guide (docs/guide/layer.md) for example responses.
///
/// # Example
///
/// ```
/// use tollgate::{HeaderStyle, Rules};
///
/// let rules = Rules::from_json(r#"{"default": {"limit": "10/minute"}, "headers": "both"}"#).unwrap();
/// assert_eq!(rules.header_style(), Some(HeaderStyle::Both));
/// assert_eq!(HeaderStyle::default(), HeaderStyle::XRateLimit);
/// assert_eq!(HeaderStyle::Ietf.as_str(), "ietf");
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
pub enum HeaderStyle {
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (the default).
    #[default]
    #[serde(rename = "x-ratelimit")]
    XRateLimit,
    /// `RateLimit-Policy` and `RateLimit`, as structured-field lists.
    #[serde(rename = "ietf")]
    Ietf,
    /// Both sets of fields.
    #[serde(rename = "both")]
    Both,
}

impl HeaderStyle {
    /// The name the rules file uses: `"x-ratelimit"`, `"ietf"` or `"both"`.
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderStyle::XRateLimit => "x-ratelimit",
            HeaderStyle::Ietf => "ietf",
            HeaderStyle::Both => "both",
        }
    }

    /// Whether the `X-RateLimit-*` fields are sent.
    pub(crate) fn x_ratelimit(self) -> bool {
        matches!(self, HeaderStyle::XRateLimit | HeaderStyle::Both)
    }

    /// Whether the IETF fields are sent.
    pub(crate) fn ietf(self) -> bool {
        matches!(self, HeaderStyle::Ietf | HeaderStyle::Both)
    }
}

/// How the fronts write a verdict: the header fields, and whether a refusal is an RFC 9457
/// `application/problem+json` body rather than tollgate's own JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rendering {
    pub(crate) headers: HeaderStyle,
    pub(crate) problem_details: bool,
}

impl Rendering {
    /// Whether this is what tollgate has always sent, which needs nothing of the rule.
    pub(crate) fn is_default(self) -> bool {
        self == Self::default()
    }
}
