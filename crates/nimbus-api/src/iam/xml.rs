//! XML for the query protocol, written directly: the responses are small,
//! flat and fixed in shape, and a serialiser would need a type per shape.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use nimbus_iam::IamError;

pub(crate) const IAM_NS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
pub(crate) const STS_NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// An XML fragment under construction.
#[derive(Default)]
pub(crate) struct Xml(String);

impl Xml {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// `<name>value</name>`, escaped.
    pub(crate) fn el(&mut self, name: &str, value: impl AsRef<str>) -> &mut Self {
        self.0 += &format!("<{name}>{}</{name}>", escape(value.as_ref()));
        self
    }

    /// `<name>` + what `inner` writes + `</name>`.
    pub(crate) fn wrap(&mut self, name: &str, inner: impl FnOnce(&mut Xml)) -> &mut Self {
        self.0 += &format!("<{name}>");
        inner(self);
        self.0 += &format!("</{name}>");
        self
    }

    /// A list: `<name><member>..</member>...</name>`.
    pub(crate) fn list<T>(
        &mut self,
        name: &str,
        items: &[T],
        mut item: impl FnMut(&mut Xml, &T),
    ) -> &mut Self {
        self.wrap(name, |x| {
            for i in items {
                x.wrap("member", |x| item(x, i));
            }
        })
    }

    /// `IsTruncated` and, when there is one, `Marker`.
    pub(crate) fn paging(&mut self, next: Option<String>) -> &mut Self {
        self.el("IsTruncated", if next.is_some() { "true" } else { "false" });
        if let Some(m) = next {
            self.el("Marker", m);
        }
        self
    }

    pub(crate) fn into_string(self) -> String {
        self.0
    }
}

/// Dates as IAM writes them.
pub(crate) fn date(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Policy documents travel URL-encoded (botocore and the CLI decode them).
pub(crate) fn policy_doc(doc: &str) -> String {
    nimbus_auth::uri_encode(doc, false)
}

pub(crate) fn respond(ns: &str, action: &str, result: &str) -> Response {
    let id = uuid::Uuid::new_v4();
    let result = if result.is_empty() {
        String::new()
    } else {
        format!("<{action}Result>{result}</{action}Result>")
    };
    let body = format!(
        "<{action}Response xmlns=\"{ns}\">{result}<ResponseMetadata><RequestId>{id}</RequestId></ResponseMetadata></{action}Response>"
    );
    let mut r = (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "text/xml")],
        body,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        r.headers_mut().insert("x-amzn-requestid", v);
    }
    r
}

pub(crate) fn error(ns: &str, e: &IamError) -> Response {
    let id = uuid::Uuid::new_v4();
    let kind = if e.status() >= 500 {
        "Receiver"
    } else {
        "Sender"
    };
    let body = format!(
        "<ErrorResponse xmlns=\"{ns}\"><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{id}</RequestId></ErrorResponse>",
        e.code(),
        escape(&e.to_string())
    );
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = (status, [(http::header::CONTENT_TYPE, "text/xml")], body).into_response();
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        r.headers_mut().insert("x-amzn-requestid", v);
    }
    r
}

/// An error response for a failed authentication on the query protocol.
pub(crate) fn auth_error(code: &str, message: &str) -> Response {
    let id = uuid::Uuid::new_v4();
    let body = format!(
        "<ErrorResponse xmlns=\"{IAM_NS}\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>{id}</RequestId></ErrorResponse>",
        escape(message)
    );
    (
        StatusCode::FORBIDDEN,
        [(http::header::CONTENT_TYPE, "text/xml")],
        body,
    )
        .into_response()
}
