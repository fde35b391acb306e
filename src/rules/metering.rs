//! [`Metering`]: what a rule's units are (`"unit"`), and which response field tells what a
//! request used (`"settle_header"`).

/// The longest `settle_header`.
const MAX_HEADER_LEN: usize = 64;

/// What a limit's units are, and where a response tells how many a request used.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Metering {
    pub(super) unit: Option<Box<str>>,
    /// Lowercase.
    pub(super) settle_header: Option<Box<str>>,
}

impl Metering {
    /// `unit` as a rule's unit: 1 to 32 letters, digits, `_` or `-`, so that every header
    /// style can carry it as written.
    pub(super) fn unit(unit: &str) -> Option<Box<str>> {
        let fits = (1..=32).contains(&unit.len())
            && unit
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        fits.then(|| unit.into())
    }

    /// `name` as the field a response tells its use in, lowercase; or why it cannot be one.
    /// The layer removes that field before the response leaves, so it must not be one HTTP
    /// or the layer itself needs.
    pub(super) fn settle_header(name: &str) -> Result<Box<str>, &'static str> {
        // RFC 9110's token characters.
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || name.len() > MAX_HEADER_LEN || !name.bytes().all(token) {
            return Err("must be a header name: 1 to 64 letters, digits or !#$%&'*+-.^_`|~");
        }
        let name = name.to_ascii_lowercase();
        let owned = matches!(
            name.as_str(),
            "connection"
                | "content-encoding"
                | "content-length"
                | "content-range"
                | "content-type"
                | "date"
                | "keep-alive"
                | "location"
                | "proxy-connection"
                | "retry-after"
                | "set-cookie"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "vary"
        ) || name.starts_with("ratelimit")
            || name.starts_with("x-ratelimit");
        if owned {
            return Err(
                "is a field HTTP or the rate limit headers need; name one of the app's own",
            );
        }
        Ok(name.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_settle_headers_are_checked() {
        assert_eq!(Metering::unit("tokens").as_deref(), Some("tokens"));
        for bad in ["", "to kens", "tökens", "\"x\"", &"u".repeat(33)] {
            assert_eq!(Metering::unit(bad), None, "{bad:?}");
        }
        assert_eq!(
            Metering::settle_header("X-Tokens-Used").as_deref(),
            Ok("x-tokens-used")
        );
        for bad in [
            "",
            "x tokens",
            "x-tokens:",
            "Content-Length",
            "x-ratelimit-remaining",
            "RateLimit",
            "transfer-encoding",
            &"h".repeat(65),
        ] {
            assert!(Metering::settle_header(bad).is_err(), "{bad:?}");
        }
    }
}
