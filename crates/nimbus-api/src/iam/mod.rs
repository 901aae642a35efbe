//! The IAM and STS query protocol: form-encoded `Action=...` requests on
//! `POST /` (or `GET /?Action=...`), XML responses and errors, told apart
//! by the service in the request's verified SigV4 scope.

mod sts;
mod users_roles;
mod xml;

use std::collections::HashMap;

use axum::response::Response;
use nimbus_auth::Verified;
use nimbus_iam::{IamError, IamService};

use crate::AppState;
pub(crate) use xml::{Xml, auth_error};

/// A parsed query-protocol request: its parameters by name.
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    pub(crate) fn parse(form: &[u8]) -> Self {
        let mut map = HashMap::new();
        for pair in form.split(|b| *b == b'&') {
            if pair.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(pair).replace('+', " ");
            let (k, v) = text.split_once('=').unwrap_or((&text, ""));
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            map.insert(dec(k), dec(v));
        }
        Self(map)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A required parameter, or IAM's validation error for it.
    pub(crate) fn need(&self, name: &str) -> Result<&str, IamError> {
        self.get(name).ok_or_else(|| {
            IamError::Validation(format!(
                "1 validation error detected: Value null at '{}' failed to satisfy constraint: Member must not be null",
                lower_first(name)
            ))
        })
    }

    pub(crate) fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// `Marker` / `MaxItems` paging over an already ordered list.
    pub(crate) fn page<T>(&self, items: Vec<T>) -> Result<(Vec<T>, Option<String>), IamError> {
        let max: usize = match self.get("MaxItems") {
            None => 100,
            Some(m) => m.parse().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(|| {
                IamError::Validation(format!(
                    "1 validation error detected: Value '{m}' at 'maxItems' failed to satisfy constraint: Member must have value between 1 and 1000"
                ))
            })?,
        };
        crate::paging::offset_page(items, self.get("Marker"), max)
            .ok_or_else(|| IamError::InvalidInput("Invalid Marker.".into()))
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default()
}

/// Handles a query-protocol request for `iam` or `sts`.
pub(crate) async fn dispatch(
    state: AppState,
    verified: Option<Verified>,
    form: bytes::Bytes,
) -> Response {
    let params = Params::parse(&form);
    let Some(verified) = verified else {
        return xml::error(
            xml::IAM_NS,
            &IamError::AccessDenied("Request is not authenticated".into()),
        );
    };
    let action = params.get("Action").unwrap_or("").to_string();
    let iam = state.iam.clone();
    let service = verified.service.clone();
    let result = tokio::task::spawn_blocking(move || match service.as_str() {
        "sts" => (xml::STS_NS, sts::handle(&iam, &verified, &action, &params)),
        _ => (xml::IAM_NS, users_roles::handle(&iam, &action, &params)),
    })
    .await;
    match result {
        Ok((ns, Ok((action, body)))) => xml::respond(ns, &action, &body),
        Ok((ns, Err(e))) => xml::error(ns, &e),
        Err(e) => xml::error(
            xml::IAM_NS,
            &IamError::ServiceFailure(format!("internal error: {e}")),
        ),
    }
}

/// Who is asking, for handlers that need it.
pub(crate) fn caller_arn(iam: &IamService, verified: &Verified) -> String {
    iam.caller(&verified.access_key_id)
        .map(|(_, arn)| arn)
        .unwrap_or_else(|| verified.principal.clone())
}
