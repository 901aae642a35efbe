//! The SigV4 canonical request and the derivation of the signature.

use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// How the path is canonicalised: S3 encodes once and does not normalise;
/// every other service normalises (removes `.`, `..` and empty segments)
/// and encodes the path as received once more ("twice" in AWS's words, since
/// the client encoded it once to send it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMode {
    S3,
    Normalized,
}

/// A request as received: raw (still percent-encoded) path and query,
/// headers in arrival order (names in any case, duplicates allowed), and
/// the payload hash (hex SHA-256 of the body, or a literal such as
/// `UNSIGNED-PAYLOAD`).
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Raw query without the `?`; empty when there is none.
    pub query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub payload_hash: &'a str,
}

/// Everything but the unreserved characters `A-Z a-z 0-9 - . _ ~`.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes as SigV4 does (upper-case hex, unreserved characters
/// kept); `/` is kept too when `keep_slash`.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    if keep_slash {
        s.split('/')
            .map(|seg| utf8_percent_encode(seg, ENCODE).to_string())
            .collect::<Vec<_>>()
            .join("/")
    } else {
        utf8_percent_encode(s, ENCODE).to_string()
    }
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Removes `.` and `..` segments and repeated slashes, keeping a leading
/// and a trailing slash.
fn normalize(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut p = format!("/{}", out.join("/"));
    if (path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..")) && !p.ends_with('/') {
        p.push('/');
    }
    p
}

fn canonical_uri(path: &str, mode: PathMode) -> String {
    let path = if path.is_empty() { "/" } else { path };
    match mode {
        PathMode::Normalized => uri_encode(&normalize(path), true),
        PathMode::S3 => uri_encode(&decode(path), true),
    }
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(&decode(k), false), uri_encode(&decode(v), false))
        })
        .filter(|(k, _)| k != "X-Amz-Signature")
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Trims a header value and collapses runs of spaces, as SigV4 requires.
fn canonical_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical request for these signed header names (lower case, as
/// listed in `SignedHeaders`). In a presigned request the `X-Amz-Signature`
/// parameter is left out of the canonical query.
pub fn canonical_request(
    req: &RequestParts<'_>,
    signed_headers: &[&str],
    mode: PathMode,
) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(req.method);
    out.push('\n');
    out.push_str(&canonical_uri(req.path, mode));
    out.push('\n');
    out.push_str(&canonical_query(req.query));
    out.push('\n');
    for name in signed_headers {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| canonical_value(v))
            .collect();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(req.payload_hash);
    out
}

/// `AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hex sha256(canonical)}`.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

fn hmac(key: &[u8], data: &str) -> [u8; 32] {
    // HMAC-SHA256 takes keys of any length.
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The HMAC chain `"AWS4"+secret` → date (YYYYMMDD) → region → service →
/// `aws4_request`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date);
    let k = hmac(&k, region);
    let k = hmac(&k, service);
    hmac(&k, "aws4_request")
}

/// Lower-case hex HMAC-SHA256 of the string to sign.
pub fn signature(key: &[u8; 32], string_to_sign: &str) -> String {
    hex::encode(hmac(key, string_to_sign))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_and_encoded() {
        assert_eq!(
            canonical_uri("/a/./b/../c//d/", PathMode::Normalized),
            "/a/c/d/"
        );
        assert_eq!(
            canonical_uri("/fn%3Aname", PathMode::Normalized),
            "/fn%253Aname"
        );
        assert_eq!(canonical_uri("/fn%3Aname", PathMode::S3), "/fn%3Aname");
        assert_eq!(canonical_uri("", PathMode::Normalized), "/");
        assert_eq!(
            canonical_uri("/example space/", PathMode::Normalized),
            "/example%20space/"
        );
    }

    #[test]
    fn query_is_sorted_and_encoded() {
        assert_eq!(canonical_query("b=2&a=1&a=0&c"), "a=0&a=1&b=2&c=");
        assert_eq!(
            canonical_query("Qualifier=%24LATEST"),
            "Qualifier=%24LATEST"
        );
        assert_eq!(canonical_query("k=a%20b&X-Amz-Signature=x"), "k=a%20b");
    }
}
