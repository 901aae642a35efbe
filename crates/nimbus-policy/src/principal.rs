//! Who makes a request, and the `Principal` / `NotPrincipal` elements of
//! resource-based policies and trust policies.

use serde_json::Value;

use crate::error::PolicyError;

/// The principal making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `arn:aws:iam::123456789012:user/alice`,
    /// `arn:aws:sts::123456789012:assumed-role/role-name/session`,
    /// `arn:aws:iam::123456789012:root`, or the service name when a
    /// service calls.
    pub arn: String,
    /// The principal's account id (empty for a service).
    pub account: String,
    /// The service principal, e.g. `s3.amazonaws.com`, when a service calls.
    pub service: Option<String>,
}

impl Principal {
    /// An IAM user, role session or account root user, by ARN (the account
    /// is taken from the ARN).
    pub fn from_arn(arn: &str) -> Principal {
        Principal {
            arn: arn.to_string(),
            account: arn.split(':').nth(4).unwrap_or_default().to_string(),
            service: None,
        }
    }

    /// An AWS service calling on a customer's behalf, e.g.
    /// `lambda.amazonaws.com`.
    pub fn service(name: &str) -> Principal {
        Principal {
            arn: name.to_string(),
            account: String::new(),
            service: Some(name.to_string()),
        }
    }
}

/// One of the identities a principal is known by. A user is known by its
/// account and its own ARN; a role session by its account, its role and
/// its session ARN. A `Principal` element names a principal when it names
/// any of them; a `NotPrincipal` element exempts it only when it names all
/// of them, which is why IAM asks to list the account and the role beside
/// a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ident<'a> {
    Account(&'a str),
    Role { account: &'a str, name: &'a str },
    Arn(&'a str),
    Service(&'a str),
}

/// The components of an ARN: partition, service, region, account, resource.
fn arn_parts(arn: &str) -> Option<[&str; 5]> {
    let mut it = arn.splitn(6, ':');
    if it.next() != Some("arn") {
        return None;
    }
    Some([it.next()?, it.next()?, it.next()?, it.next()?, it.next()?])
}

fn identities(p: &Principal) -> [Option<Ident<'_>>; 3] {
    if let Some(s) = &p.service {
        return [Some(Ident::Service(s)), None, None];
    }
    let parts = arn_parts(&p.arn);
    let account = match (p.account.as_str(), parts) {
        ("", Some([_, _, _, a, _])) => a,
        (a, _) => a,
    };
    let account = (!account.is_empty()).then_some(Ident::Account(account));
    match parts {
        Some([_, "iam", _, _, "root"]) => [account, None, None],
        Some([_, "sts", _, a, res]) if res.starts_with("assumed-role/") => {
            let name = res["assumed-role/".len()..].split('/').next().unwrap_or("");
            [
                account,
                Some(Ident::Role { account: a, name }),
                Some(Ident::Arn(&p.arn)),
            ]
        }
        _ => [
            account,
            (!p.arn.is_empty()).then_some(Ident::Arn(&p.arn)),
            None,
        ],
    }
}

/// What a `Principal` or `NotPrincipal` element names.
#[derive(Debug, Clone, Default)]
pub(crate) struct PrincipalSet {
    any: bool,
    accounts: Vec<Box<str>>,
    arns: Vec<Box<str>>,
    roles: Vec<(Box<str>, Box<str>)>,
    services: Vec<Box<str>>,
}

fn strings(v: &Value) -> Option<Vec<&str>> {
    match v {
        Value::String(s) => Some(vec![s]),
        Value::Array(a) => a.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

impl PrincipalSet {
    /// `"*"` or `{"AWS": ..., "Service": ..., "Federated": ...,
    /// "CanonicalUser": ...}` with a string or a list of strings each.
    pub(crate) fn parse(v: &Value, element: &str) -> Result<PrincipalSet, PolicyError> {
        let bad = |why: &str| PolicyError::syntax(format!("{element}: {why}"));
        let mut set = PrincipalSet::default();
        let map = match v {
            Value::String(s) if s == "*" => {
                set.any = true;
                return Ok(set);
            }
            Value::Object(map) if !map.is_empty() => map,
            _ => return Err(bad("must be \"*\" or an object of principal types")),
        };
        for (kind, value) in map {
            let values = strings(value).ok_or_else(|| bad("values must be strings"))?;
            for s in values {
                match kind.as_str() {
                    "AWS" => set.add_aws(s),
                    "Service" => set.services.push(s.into()),
                    "Federated" => set.arns.push(s.into()),
                    // Canonical user ids name S3 identities nimbus does not
                    // have: accepted, never matched.
                    "CanonicalUser" => {}
                    other => return Err(bad(&format!("unknown principal type \"{other}\""))),
                }
            }
        }
        Ok(set)
    }

    fn add_aws(&mut self, s: &str) {
        if s == "*" {
            self.any = true;
        } else if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            self.accounts.push(s.into());
        } else {
            match arn_parts(s) {
                Some([_, "iam", "", account, "root"]) => self.accounts.push(account.into()),
                Some([_, "iam", "", account, res]) if res.starts_with("role/") => {
                    let name = res.rsplit('/').next().unwrap_or("");
                    self.roles.push((account.into(), name.into()));
                    self.arns.push(s.into());
                }
                _ => self.arns.push(s.into()),
            }
        }
    }

    fn names(&self, id: Ident<'_>) -> bool {
        match id {
            Ident::Account(a) => self.accounts.iter().any(|x| **x == *a),
            Ident::Role { account, name } => self
                .roles
                .iter()
                .any(|(a, n)| **a == *account && **n == *name),
            Ident::Arn(arn) => self.arns.iter().any(|x| **x == *arn),
            Ident::Service(s) => self.services.iter().any(|x| x.eq_ignore_ascii_case(s)),
        }
    }

    /// A `Principal` element: it names any of the principal's identities.
    pub(crate) fn matches(&self, p: &Principal) -> bool {
        self.any || identities(p).into_iter().flatten().any(|id| self.names(id))
    }

    /// A `NotPrincipal` element exempts the principal: it names all of the
    /// principal's identities.
    pub(crate) fn exempts(&self, p: &Principal) -> bool {
        self.any || identities(p).into_iter().flatten().all(|id| self.names(id))
    }
}

/// Condition keys that describe the principal, when the context does not
/// set them.
pub(crate) fn principal_key<'a>(p: &'a Principal, key: &str) -> Option<&'a str> {
    let parts = arn_parts(&p.arn);
    let non_empty = |s: &'a str| (!s.is_empty()).then_some(s);
    match key {
        "aws:principalarn" if p.service.is_none() => non_empty(&p.arn),
        "aws:principalaccount" if p.service.is_none() => non_empty(&p.account),
        "aws:principalservicename" => p.service.as_deref(),
        "aws:username" => match parts {
            Some([_, "iam", _, _, res]) if res.starts_with("user/") => res.rsplit('/').next(),
            _ => None,
        },
        "aws:principaltype" => match (parts, &p.service) {
            (_, Some(_)) => None,
            (Some([_, "iam", _, _, "root"]), _) => Some("Account"),
            (Some([_, "iam", _, _, res]), _) if res.starts_with("user/") => Some("User"),
            (Some([_, "sts", _, _, res]), _) if res.starts_with("assumed-role/") => {
                Some("AssumedRole")
            }
            (Some([_, "sts", _, _, res]), _) if res.starts_with("federated-user/") => {
                Some("FederatedUser")
            }
            _ => None,
        },
        _ => None,
    }
}
