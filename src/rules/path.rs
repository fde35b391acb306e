//! The path a rule is chosen by: one normal form for every way of writing it.
//!
//! A rule for `/api/data` must hold for `/static/../api/data`, `/api/%64ata`, `/api//data`
//! and `/api/./data` too, or a client picks a more lenient rule by how it spells its path.
//! [`normalize`] gives the form the router looks up, in this order:
//!
//! 1. the query (and anything after a `#`) is dropped;
//! 2. percent-encoded *unreserved* characters (`A-Z a-z 0-9 - . _ ~`) are decoded, and no
//!    others (RFC 3986 §6.2.2.2): `%2F` stays an encoded byte inside a segment;
//! 3. repeated slashes are merged, as nginx's `merge_slashes` does;
//! 4. dot segments are removed (RFC 3986 §5.2.4); a `..` above the root stays at the root.
//!
//! Where the path comes from a gateway (`/auth`) or a caller (`POST /check`), the upstream
//! may decode it differently from any normal form, so [`forwarded`] refuses what is
//! ambiguous instead: a `#`, a `..` above the root, an encoded `/` or `\`, a NUL. The
//! layer's own requests are never refused for their form: it decides by the normal form and
//! passes the request on unchanged.

use std::borrow::Cow;

/// Why a forwarded path is refused by [`forwarded_path`](crate::http::forwarded_path).
///
/// # Example
///
/// ```
/// use tollgate::http::{AmbiguousPath, forwarded_path};
///
/// assert_eq!(forwarded_path("/../admin"), Err(AmbiguousPath::AboveRoot));
/// assert_eq!(
///     AmbiguousPath::Fragment.to_string(),
///     "the path holds a '#', which no client sends to a server"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmbiguousPath {
    /// `#` is never sent to a server: one in a forwarded URI hides the rest of it.
    #[error("the path holds a '#', which no client sends to a server")]
    Fragment,
    /// A `..` that climbs above `/`.
    #[error("the path climbs above the root with '..'")]
    AboveRoot,
    /// `%2F` or `%5C`: one server reads a separator where another reads a character.
    #[error("the path holds an encoded '/' or '\\' (%2F, %5C), which servers decode differently")]
    EncodedSeparator,
    /// A NUL byte, raw or encoded.
    #[error("the path holds a NUL byte")]
    Nul,
}

/// The normal form of `path` (see the module's documentation). Borrows `path` when it is
/// already normal, which is the common case.
pub(crate) fn normalize(path: &str) -> Cow<'_, str> {
    normal_form(path).path
}

/// The normal form of a path a gateway or a caller forwards (a query after it is dropped),
/// by which its rule is chosen, or why it is ambiguous: a `#`, a `..` above the root, an
/// encoded `/` or `\`, a NUL. Dot segments are removed, unreserved characters decoded and
/// slashes merged, so that every spelling of a path falls under the path's rule.
///
/// ```
/// use tollgate::http::{AmbiguousPath, forwarded_path};
///
/// assert_eq!(forwarded_path("/static/../api/%64ata?page=2").as_deref(), Ok("/api/data"));
/// assert_eq!(forwarded_path("/api/data").as_deref(), Ok("/api/data"));
/// assert_eq!(forwarded_path("/static/..%2Fapi/data"), Err(AmbiguousPath::EncodedSeparator));
/// ```
pub fn forwarded(path: &str) -> Result<Cow<'_, str>, AmbiguousPath> {
    if path.contains('#') {
        return Err(AmbiguousPath::Fragment);
    }
    let path = path.split('?').next().unwrap_or_default();
    let bytes = path.as_bytes();
    if bytes.contains(&0) {
        return Err(AmbiguousPath::Nul);
    }
    for (at, _) in path.match_indices('%') {
        match (hex(bytes.get(at + 1)), hex(bytes.get(at + 2))) {
            (Some(0), Some(0)) => return Err(AmbiguousPath::Nul),
            (Some(2), Some(0xF)) | (Some(5), Some(0xC)) => {
                return Err(AmbiguousPath::EncodedSeparator);
            }
            _ => {}
        }
    }
    let normal = normal_form(path);
    if normal.climbed_above_root {
        return Err(AmbiguousPath::AboveRoot);
    }
    Ok(normal.path)
}

/// A normal form, and whether a `..` had to stop at the root.
struct Normal<'a> {
    path: Cow<'a, str>,
    climbed_above_root: bool,
}

fn normal_form(path: &str) -> Normal<'_> {
    let path = match path.find(['?', '#']) {
        Some(end) => &path[..end],
        None => path,
    };
    if is_normal(path) {
        return Normal {
            path: Cow::Borrowed(path),
            climbed_above_root: false,
        };
    }
    let decoded = decode_unreserved(path);
    let mut climbed_above_root = false;
    let mut segments: Vec<&str> = Vec::new();
    let rooted = decoded.starts_with('/');
    let parts: Vec<&str> = decoded.split('/').collect();
    let last = parts.len().saturating_sub(1);
    // Whether the path ends in a directory: a trailing slash, or a last `.`/`..`.
    let mut trailing_slash = false;
    for (index, part) in parts.iter().enumerate() {
        let is_last = index == last;
        match *part {
            // An empty segment: a repeated slash (merged) or the one before the first.
            "" => trailing_slash = is_last && index > 0,
            "." => trailing_slash = is_last,
            ".." => {
                if segments.pop().is_none() {
                    climbed_above_root = true;
                }
                trailing_slash = is_last;
            }
            segment => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for segment in &segments {
        if rooted || !normal.is_empty() {
            normal.push('/');
        }
        normal.push_str(segment);
    }
    if (trailing_slash && !segments.is_empty()) || (rooted && segments.is_empty()) {
        normal.push('/');
    }
    Normal {
        path: Cow::Owned(normal),
        climbed_above_root,
    }
}

/// Whether `path` has nothing to decode, merge or remove: no `%`, no `//`, no segment
/// starting with `.`. One pass over the bytes, for the requests that are already normal.
fn is_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut after_slash = true;
    for (index, &byte) in bytes.iter().enumerate() {
        match byte {
            b'%' => return false,
            b'/' if after_slash && index > 0 => return false,
            b'.' if after_slash => return false,
            _ => {}
        }
        after_slash = byte == b'/';
    }
    true
}

/// `path` with its percent-encoded unreserved characters decoded; every other `%XX` kept as
/// it was written.
fn decode_unreserved(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut decoded = String::with_capacity(path.len());
    let mut copied = 0;
    for (at, _) in path.match_indices('%') {
        if at < copied {
            continue;
        }
        let (Some(high), Some(low)) = (hex(bytes.get(at + 1)), hex(bytes.get(at + 2))) else {
            continue;
        };
        let byte = high << 4 | low;
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            decoded.push_str(&path[copied..at]);
            decoded.push(char::from(byte));
            copied = at + 3;
        }
    }
    decoded.push_str(&path[copied..]);
    Cow::Owned(decoded)
}

/// The value of one hexadecimal digit.
fn hex(digit: Option<&u8>) -> Option<u8> {
    char::from(*digit?)
        .to_digit(16)
        .and_then(|value| u8::try_from(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_borrowed() {
        for path in ["/", "/api/data", "/api/data/", "/a.b/c.d", "/x-y_z~", ""] {
            assert!(
                matches!(normalize(path), Cow::Borrowed(p) if p == path),
                "{path}"
            );
        }
    }

    /// RFC 3986 §5.2.4's own examples, and §5.4's dot segments on a rooted path.
    #[test]
    fn dot_segments_are_removed_as_rfc_3986_does() {
        assert_eq!(normalize("/a/b/c/./../../g"), "/a/g");
        assert_eq!(normalize("mid/content=5/../6"), "mid/6");
        for (path, normal) in [
            ("/b/c/./g", "/b/c/g"),
            ("/b/c/.", "/b/c/"),
            ("/b/c/./", "/b/c/"),
            ("/b/c/..", "/b/"),
            ("/b/c/../", "/b/"),
            ("/b/c/../g", "/b/g"),
            ("/b/c/../..", "/"),
            ("/b/c/../../", "/"),
            ("/b/c/../../g", "/g"),
            ("/b/c/../../../g", "/g"),
            ("/b/c/../../../../g", "/g"),
            ("/./g", "/g"),
            ("/../g", "/g"),
            ("/b/c/g.", "/b/c/g."),
            ("/b/c/.g", "/b/c/.g"),
            ("/b/c/g..", "/b/c/g.."),
            ("/b/c/..g", "/b/c/..g"),
            ("/b/c/./../g", "/b/g"),
            ("/b/c/./g/.", "/b/c/g/"),
            ("/b/c/g/./h", "/b/c/g/h"),
            ("/b/c/g/../h", "/b/c/h"),
        ] {
            assert_eq!(normalize(path), normal, "{path}");
        }
    }

    #[test]
    fn only_unreserved_characters_are_decoded() {
        assert_eq!(normalize("/api/%64ata"), "/api/data");
        assert_eq!(normalize("/%7Euser/%2d%2E%5f"), "/~user/-._");
        assert_eq!(normalize("/a%2Fb"), "/a%2Fb");
        assert_eq!(normalize("/a%20b"), "/a%20b");
        assert_eq!(normalize("/a%2"), "/a%2");
        assert_eq!(normalize("/a%zz"), "/a%zz");
        assert_eq!(normalize("/%2e%2e/api/data"), "/api/data");
    }

    #[test]
    fn slashes_merge_and_the_query_goes() {
        assert_eq!(normalize("/api//data"), "/api/data");
        assert_eq!(normalize("//api///data//"), "/api/data/");
        assert_eq!(normalize("/api/./data"), "/api/data");
        assert_eq!(normalize("/api/data?x=/../"), "/api/data");
        assert_eq!(normalize("/api/data#x"), "/api/data");
    }

    /// Every way out of `/static/{*rest}` into `/api/data` that was tried.
    #[test]
    fn the_escapes_that_were_tried_land_on_the_real_path() {
        for path in [
            "/static/../api/data",
            "/static/x/../../api/data",
            "/static/%2e%2e/api/data",
            "/static/%2E%2E/api/data",
            "/static/.%2e/api/data",
            "/api/%64ata",
            "/api//data",
            "/api/./data",
        ] {
            assert_eq!(normalize(path), "/api/data", "{path}");
            assert_eq!(forwarded(path).as_deref(), Ok("/api/data"), "{path}");
        }
        // The encoded slash is not a separator in the normal form, and is refused when
        // forwarded.
        assert_eq!(normalize("/static/..%2Fapi/data"), "/static/..%2Fapi/data");
    }

    #[test]
    fn forwarded_paths_refuse_what_an_upstream_may_read_otherwise() {
        for (path, why) in [
            ("/static/x#/api/data", AmbiguousPath::Fragment),
            ("/../api/data", AmbiguousPath::AboveRoot),
            ("/static/../../api/data", AmbiguousPath::AboveRoot),
            ("/%2e%2e/api/data", AmbiguousPath::AboveRoot),
            ("/static/..%2Fapi/data", AmbiguousPath::EncodedSeparator),
            ("/static/..%2fapi/data", AmbiguousPath::EncodedSeparator),
            ("/static/..%5Capi/data", AmbiguousPath::EncodedSeparator),
            ("/api/data%00", AmbiguousPath::Nul),
            ("/api/data\0", AmbiguousPath::Nul),
        ] {
            assert_eq!(forwarded(path), Err(why), "{path}");
        }
        // The query is not the path's: what it holds is not refused.
        assert_eq!(
            forwarded("/api/data?next=/../%2F"),
            Ok(Cow::from("/api/data"))
        );
    }
}
