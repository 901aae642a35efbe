//! Verification of a signed request against the keys nimbus knows.

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::canonical::{
    PathMode, RequestParts, canonical_request, signature, signing_key, string_to_sign,
};

/// How far a request's `X-Amz-Date` may be from the server's clock.
pub const MAX_SKEW_SECS: i64 = 15 * 60;
/// The longest a presigned URL may be valid (7 days).
const MAX_PRESIGN_SECS: i64 = 7 * 24 * 3600;

/// What nimbus knows of an access key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub secret_access_key: String,
    /// Temporary credentials come with a token the request must carry.
    pub session_token: Option<String>,
    /// Who the key belongs to (an ARN).
    pub principal: String,
}

/// Where verification looks keys up.
pub trait KeyStore {
    fn lookup(&self, access_key_id: &str) -> Option<Credential>;
}

/// A request whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
    pub principal: String,
    /// The service and region of the credential scope.
    pub service: String,
    pub region: String,
}

/// Why a request was refused. Each variant maps to an AWS error code, which
/// differs a little per service; the API layer picks it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header and no presigned query.
    #[error("Missing Authentication Token")]
    Missing,
    /// The header or query parameters are not a well-formed SigV4 signature.
    #[error("{0}")]
    Incomplete(String),
    /// The access key is not known.
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    /// The session token is missing or wrong for temporary credentials.
    #[error("The security token included in the request is invalid.")]
    BadToken,
    /// The signature does not match.
    #[error(
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    )]
    Mismatch,
    /// The request is too old or too far in the future, or a presigned URL
    /// has expired.
    #[error("{0}")]
    Expired(String),
}

struct Parsed<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
    amz_date: String,
    presigned_expires: Option<i64>,
    token: Option<String>,
}

fn header<'a>(req: &'a RequestParts<'_>, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k == name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn parse_scope(credential: &str) -> Result<(&str, &str, &str, &str), AuthError> {
    let parts: Vec<&str> = credential.split('/').collect();
    match parts.as_slice() {
        [key, date, region, service, "aws4_request"] if !key.is_empty() => {
            Ok((key, date, region, service))
        }
        _ => Err(AuthError::Incomplete(format!(
            "Credential should be scoped to a valid region and service: '{credential}'"
        ))),
    }
}

fn parse_header<'a>(auth: &'a str, req: &RequestParts<'_>) -> Result<Parsed<'a>, AuthError> {
    let rest = auth.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| {
        AuthError::Incomplete(format!(
            "Authorization header requires the AWS4-HMAC-SHA256 algorithm. Authorization={auth}"
        ))
    })?;
    let (mut credential, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed = Some(v),
            Some(("Signature", v)) => sig = Some(v),
            _ => {}
        }
    }
    let missing = |what: &str| {
        AuthError::Incomplete(format!(
            "Authorization header requires '{what}' parameter. Authorization={auth}"
        ))
    };
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = sig.ok_or_else(|| missing("Signature"))?;
    let (access_key_id, date, region, service) = parse_scope(credential)?;
    let amz_date = header(req, "x-amz-date")
        .map(str::to_string)
        .ok_or_else(|| AuthError::Incomplete("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.".into()))?;
    Ok(Parsed {
        access_key_id,
        date,
        region,
        service,
        signed_headers: signed.split(';').collect(),
        signature,
        amz_date,
        presigned_expires: None,
        token: header(req, "x-amz-security-token").map(str::to_string),
    })
}

fn parse_query<'a>(
    req: &'a RequestParts<'a>,
    holder: &'a mut Vec<String>,
) -> Result<Parsed<'a>, AuthError> {
    let get = |n: &str| query_param(req.query, n);
    let need = |n: &str| {
        get(n).ok_or_else(|| {
            AuthError::Incomplete(format!("AWS query-string parameters must include '{n}'. Re-examine the query-string parameters."))
        })
    };
    if need("X-Amz-Algorithm")? != "AWS4-HMAC-SHA256" {
        return Err(AuthError::Incomplete(
            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"".into(),
        ));
    }
    holder.push(need("X-Amz-Credential")?);
    holder.push(need("X-Amz-SignedHeaders")?);
    holder.push(need("X-Amz-Signature")?);
    let amz_date = need("X-Amz-Date")?;
    let expires: i64 = need("X-Amz-Expires")?
        .parse()
        .map_err(|_| AuthError::Incomplete("X-Amz-Expires should be a number".into()))?;
    if !(0..=MAX_PRESIGN_SECS).contains(&expires) {
        return Err(AuthError::Incomplete(
            "X-Amz-Expires must be less than a week (in seconds) that is 604800".into(),
        ));
    }
    let [credential, signed, signature] = holder.as_slice() else {
        unreachable!()
    };
    let (access_key_id, date, region, service) = parse_scope(credential)?;
    Ok(Parsed {
        access_key_id,
        date,
        region,
        service,
        signed_headers: signed.split(';').collect(),
        signature,
        amz_date,
        presigned_expires: Some(expires),
        token: get("X-Amz-Security-Token"),
    })
}

fn parse_amz_date(s: &str) -> Result<DateTime<Utc>, AuthError> {
    NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ")
        .map(|t| t.and_utc())
        .map_err(|_| {
            AuthError::Incomplete(format!(
                "Date must be in ISO-8601 'basic format'. Got '{s}'."
            ))
        })
}

fn fmt(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Compares two strings in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a request's SigV4 signature (header or presigned query), its
/// clock skew or expiry, and its session token, at time `now`.
pub fn verify(
    req: &RequestParts<'_>,
    mode: PathMode,
    now: DateTime<Utc>,
    keys: &dyn KeyStore,
) -> Result<Verified, AuthError> {
    let mut holder = Vec::new();
    let parsed = match header(req, "authorization") {
        Some(auth) => parse_header(auth, req)?,
        None if query_param(req.query, "X-Amz-Signature").is_some() => {
            parse_query(req, &mut holder)?
        }
        None => return Err(AuthError::Missing),
    };
    let when = parse_amz_date(&parsed.amz_date)?;
    if !parsed.amz_date.starts_with(parsed.date) {
        return Err(AuthError::Incomplete(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'",
            parsed.date,
            &parsed.amz_date[..8.min(parsed.amz_date.len())]
        )));
    }
    let skew = chrono::Duration::seconds(MAX_SKEW_SECS);
    match parsed.presigned_expires {
        None if when < now - skew => {
            return Err(AuthError::Expired(format!(
                "Signature expired: {} is now earlier than {} ({} - 15 min.)",
                parsed.amz_date,
                fmt(now - skew),
                fmt(now)
            )));
        }
        None if when > now + skew => {
            return Err(AuthError::Expired(format!(
                "Signature not yet current: {} is still later than {} ({} + 15 min.)",
                parsed.amz_date,
                fmt(now + skew),
                fmt(now)
            )));
        }
        Some(expires) if now > when + chrono::Duration::seconds(expires) => {
            return Err(AuthError::Expired("Request has expired".into()));
        }
        Some(_) if when > now + skew => {
            return Err(AuthError::Expired("Request is not yet valid".into()));
        }
        _ => {}
    }
    if !parsed.signed_headers.contains(&"host") {
        return Err(AuthError::Incomplete(
            "'Host' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    let cred = keys
        .lookup(parsed.access_key_id)
        .ok_or(AuthError::UnknownKey)?;
    if cred.session_token.is_some() && cred.session_token != parsed.token {
        return Err(AuthError::BadToken);
    }
    // A presigned S3 URL signs no payload; other services' presigned
    // requests sign the body's hash like any other (botocore does so).
    let presigned_s3 = parsed.presigned_expires.is_some() && mode == PathMode::S3;
    let payload = if presigned_s3 && header(req, "x-amz-content-sha256").is_none() {
        "UNSIGNED-PAYLOAD"
    } else {
        req.payload_hash
    };
    let canonical = canonical_request(
        &RequestParts {
            payload_hash: payload,
            ..*req
        },
        &parsed.signed_headers,
        mode,
    );
    let scope = format!(
        "{}/{}/{}/aws4_request",
        parsed.date, parsed.region, parsed.service
    );
    let sts = string_to_sign(&parsed.amz_date, &scope, &canonical);
    let expected = signature(
        &signing_key(
            &cred.secret_access_key,
            parsed.date,
            parsed.region,
            parsed.service,
        ),
        &sts,
    );
    if !constant_time_eq(expected.as_bytes(), parsed.signature.as_bytes()) {
        return Err(AuthError::Mismatch);
    }
    Ok(Verified {
        access_key_id: parsed.access_key_id.to_string(),
        principal: cred.principal,
        service: parsed.service.to_string(),
        region: parsed.region.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{payload_sha256, sign_request};

    struct Keys;
    impl KeyStore for Keys {
        fn lookup(&self, id: &str) -> Option<Credential> {
            (id == "AKIDEXAMPLE").then(|| Credential {
                secret_access_key: "secret".into(),
                session_token: None,
                principal: "arn:aws:iam::000000000000:root".into(),
            })
        }
    }

    fn now() -> DateTime<Utc> {
        parse_amz_date("20250101T120000Z").unwrap()
    }

    fn signed(body: &str, date: &str) -> (Vec<(String, String)>, String) {
        let hash = payload_sha256(body.as_bytes());
        let headers = [
            ("host", "127.0.0.1:9070"),
            ("content-type", "application/json"),
        ];
        let req = RequestParts {
            method: "POST",
            path: "/2015-03-31/functions/f/invocations",
            query: "",
            headers: &headers,
            payload_hash: &hash,
        };
        let mut all: Vec<(String, String)> = headers
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        all.extend(sign_request(
            &req,
            "AKIDEXAMPLE",
            "secret",
            "us-east-1",
            "lambda",
            date,
        ));
        (all, hash)
    }

    fn check(
        headers: &[(String, String)],
        body: &str,
        at: DateTime<Utc>,
    ) -> Result<Verified, AuthError> {
        let hash = payload_sha256(body.as_bytes());
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let req = RequestParts {
            method: "POST",
            path: "/2015-03-31/functions/f/invocations",
            query: "",
            headers: &h,
            payload_hash: &hash,
        };
        verify(&req, PathMode::Normalized, at, &Keys)
    }

    #[test]
    fn a_signed_request_verifies_and_tampering_does_not() {
        let (headers, _) = signed("{}", "20250101T120000Z");
        let ok = check(&headers, "{}", now()).unwrap();
        assert_eq!(ok.service, "lambda");
        assert_eq!(ok.region, "us-east-1");
        assert_eq!(
            check(&headers, "{\"x\":1}", now()),
            Err(AuthError::Mismatch),
            "tampered body"
        );
        let mut other_key = headers.clone();
        for (n, v) in &mut other_key {
            if n == "authorization" {
                *v = v.replace("AKIDEXAMPLE", "AKIDUNKNOWN");
            }
        }
        assert_eq!(check(&other_key, "{}", now()), Err(AuthError::UnknownKey));
        let none: Vec<(String, String)> = headers
            .iter()
            .filter(|(n, _)| n != "authorization")
            .cloned()
            .collect();
        assert_eq!(check(&none, "{}", now()), Err(AuthError::Missing));
    }

    #[test]
    fn clock_skew_is_limited_to_fifteen_minutes() {
        let (headers, _) = signed("{}", "20250101T120000Z");
        assert!(check(&headers, "{}", now() + chrono::Duration::minutes(14)).is_ok());
        let late = check(&headers, "{}", now() + chrono::Duration::minutes(16)).unwrap_err();
        assert!(
            matches!(late, AuthError::Expired(ref m) if m.starts_with("Signature expired: 20250101T120000Z")),
            "{late:?}"
        );
        let early = check(&headers, "{}", now() - chrono::Duration::minutes(16)).unwrap_err();
        assert!(matches!(early, AuthError::Expired(_)));
    }

    #[test]
    fn presigned_urls_expire_and_may_not_outlive_a_week() {
        use crate::canonical::{canonical_request, signature, signing_key, string_to_sign};
        let presign = |expires: &str| {
            let scope = "20250101/us-east-1/lambda/aws4_request";
            let mut query = format!(
                "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F{}&X-Amz-Date=20250101T120000Z&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host",
                scope.replace('/', "%2F")
            );
            let headers = [("host", "127.0.0.1:9070")];
            let hash = crate::payload_sha256(b"");
            let req = RequestParts {
                method: "GET",
                path: "/2015-03-31/functions/",
                query: &query,
                headers: &headers,
                payload_hash: &hash,
            };
            let canonical = canonical_request(&req, &["host"], PathMode::Normalized);
            let sts = string_to_sign("20250101T120000Z", scope, &canonical);
            let sig = signature(
                &signing_key("secret", "20250101", "us-east-1", "lambda"),
                &sts,
            );
            query += &format!("&X-Amz-Signature={sig}");
            query
        };
        let check = |query: &str, at: DateTime<Utc>| {
            let headers = [("host", "127.0.0.1:9070")];
            let hash = crate::payload_sha256(b"");
            let req = RequestParts {
                method: "GET",
                path: "/2015-03-31/functions/",
                query,
                headers: &headers,
                payload_hash: &hash,
            };
            verify(&req, PathMode::Normalized, at, &Keys)
        };
        let q = presign("300");
        assert!(check(&q, now() + chrono::Duration::seconds(299)).is_ok());
        assert_eq!(
            check(&q, now() + chrono::Duration::seconds(301)),
            Err(AuthError::Expired("Request has expired".into()))
        );
        let week_and_a_bit = presign("604801");
        assert!(matches!(
            check(&week_and_a_bit, now()),
            Err(AuthError::Incomplete(_))
        ));
        let tampered = q.replace("X-Amz-Expires=300", "X-Amz-Expires=600");
        assert_eq!(check(&tampered, now()), Err(AuthError::Mismatch));
    }
}
