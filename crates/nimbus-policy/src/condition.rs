//! The `Condition` element: operators, set qualifiers, `...IfExists`.

use std::net::IpAddr;

use base64::Engine;
use serde_json::Value;

use crate::error::PolicyError;
use crate::pattern::{Compare, Pattern, Syntax, VarDef};
use crate::time::parse_date;

/// The positive form of an operator; negated operators (`StringNotEquals`,
/// `NotIpAddress`, ...) are the same with [`Condition::negated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    NumericEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    BinaryEquals,
    IpAddress,
    ArnLike,
    Null,
}

fn operator(name: &str) -> Option<(Op, bool)> {
    use Op::*;
    Some(match name {
        "StringEquals" => (StringEquals, false),
        "StringNotEquals" => (StringEquals, true),
        "StringEqualsIgnoreCase" => (StringEqualsIgnoreCase, false),
        "StringNotEqualsIgnoreCase" => (StringEqualsIgnoreCase, true),
        "StringLike" => (StringLike, false),
        "StringNotLike" => (StringLike, true),
        "NumericEquals" => (NumericEquals, false),
        "NumericNotEquals" => (NumericEquals, true),
        "NumericLessThan" => (NumericLessThan, false),
        "NumericLessThanEquals" => (NumericLessThanEquals, false),
        "NumericGreaterThan" => (NumericGreaterThan, false),
        "NumericGreaterThanEquals" => (NumericGreaterThanEquals, false),
        "DateEquals" => (DateEquals, false),
        "DateNotEquals" => (DateEquals, true),
        "DateLessThan" => (DateLessThan, false),
        "DateLessThanEquals" => (DateLessThanEquals, false),
        "DateGreaterThan" => (DateGreaterThan, false),
        "DateGreaterThanEquals" => (DateGreaterThanEquals, false),
        "Bool" => (Bool, false),
        "BinaryEquals" => (BinaryEquals, false),
        "IpAddress" => (IpAddress, false),
        "NotIpAddress" => (IpAddress, true),
        "ArnEquals" | "ArnLike" => (ArnLike, false),
        "ArnNotEquals" | "ArnNotLike" => (ArnLike, true),
        "Null" => (Null, false),
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qualifier {
    /// Any context value matches (the default for a single-valued key).
    None,
    ForAllValues,
    ForAnyValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    net: u128,
    bits: u32,
    v4: bool,
}

impl Cidr {
    fn parse(s: &str) -> Option<Cidr> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u32>().ok()?)),
            None => (s, None),
        };
        let (net, width, v4) = match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32, true),
            IpAddr::V6(a) => (u128::from(a), 128, false),
        };
        let bits = len.unwrap_or(width);
        (bits <= width).then_some(Cidr { net, bits, v4 })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let (addr, width, v4) = match ip {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32, true),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(a) => (u128::from(u32::from(a)), 32, true),
                None => (u128::from(a), 128, false),
            },
        };
        if v4 != self.v4 {
            return false;
        }
        let shift = width - self.bits;
        shift >= width || (addr >> shift) == (self.net >> shift)
    }
}

/// The policy's values of one condition, compiled for its operator.
#[derive(Debug, Clone)]
enum Values {
    Text(Vec<Pattern>),
    Number(Vec<f64>),
    Date(Vec<i128>),
    Binary(Vec<Vec<u8>>),
    Ip(Vec<Cidr>),
    Null(Vec<bool>),
}

/// One key of one operator: `"StringEquals": {"aws:SourceAccount": [...]}`.
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    op: Op,
    negated: bool,
    qualifier: Qualifier,
    if_exists: bool,
    /// Lower case.
    pub(crate) key: Box<str>,
    values: Values,
}

/// A JSON condition value as text: strings, and numbers and booleans as
/// written.
fn texts(v: &Value) -> Option<Vec<String>> {
    let one = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match v {
        Value::Array(a) => a.iter().map(one).collect(),
        v => one(v).map(|s| vec![s]),
    }
}

/// Checks the shape of a `Condition` element: an object of operators, each
/// an object of keys, each a value or a list of values. An unknown operator
/// is refused unless it has no keys (as IAM does).
pub(crate) fn check_syntax(cond: &Value) -> Result<(), PolicyError> {
    let ops = cond
        .as_object()
        .ok_or_else(|| PolicyError::syntax("Condition must be an object"))?;
    for (name, keys) in ops {
        let keys = keys.as_object().ok_or_else(|| {
            PolicyError::syntax(format!("Condition operator {name} must be an object"))
        })?;
        for (key, value) in keys {
            if texts(value).is_none() {
                return Err(PolicyError::syntax(format!(
                    "Condition {name} {key}: values must be strings or lists of strings"
                )));
            }
        }
        if split_operator(name).is_none() && !keys.is_empty() {
            return Err(PolicyError::syntax(format!(
                "unknown condition operator \"{name}\""
            )));
        }
    }
    Ok(())
}

fn split_operator(name: &str) -> Option<(Op, bool, Qualifier, bool)> {
    let (qualifier, rest) = if let Some(r) = name.strip_prefix("ForAllValues:") {
        (Qualifier::ForAllValues, r)
    } else if let Some(r) = name.strip_prefix("ForAnyValue:") {
        (Qualifier::ForAnyValue, r)
    } else {
        (Qualifier::None, name)
    };
    let (if_exists, base) = match rest.strip_suffix("IfExists") {
        Some(b) => (true, b),
        None => (false, rest),
    };
    let (op, negated) = operator(base)?;
    if op == Op::Null && (if_exists || qualifier != Qualifier::None) {
        return None;
    }
    Some((op, negated, qualifier, if_exists))
}

/// Compiles a `Condition` element already checked by [`check_syntax`].
/// Bad dates (and numbers, addresses, base-64 values and Null flags) fail
/// IAM's "legacy parsing".
pub(crate) fn compile(
    cond: &Value,
    variables: bool,
    vars: &mut Vec<VarDef>,
) -> Result<Vec<Condition>, PolicyError> {
    let mut out = Vec::new();
    let Some(ops) = cond.as_object() else {
        return Ok(out);
    };
    for (name, keys) in ops {
        let Some((op, negated, qualifier, if_exists)) = split_operator(name) else {
            continue;
        };
        for (key, value) in keys.as_object().into_iter().flatten() {
            let raw = texts(value).unwrap_or_default();
            let bad = |v: &str| PolicyError::legacy(format!("{name} {key}: bad value \"{v}\""));
            let text = |wildcards: bool, vars: &mut Vec<VarDef>| {
                let syntax = Syntax {
                    wildcards,
                    variables,
                };
                Values::Text(
                    raw.iter()
                        .map(|v| Pattern::compile(v, syntax, vars))
                        .collect(),
                )
            };
            let values = match op {
                Op::StringEquals | Op::StringEqualsIgnoreCase | Op::Bool => text(false, vars),
                Op::StringLike | Op::ArnLike => text(true, vars),
                Op::NumericEquals
                | Op::NumericLessThan
                | Op::NumericLessThanEquals
                | Op::NumericGreaterThan
                | Op::NumericGreaterThanEquals => Values::Number(
                    raw.iter()
                        .map(|v| v.trim().parse::<f64>().map_err(|_| bad(v)))
                        .collect::<Result<_, _>>()?,
                ),
                Op::DateEquals
                | Op::DateLessThan
                | Op::DateLessThanEquals
                | Op::DateGreaterThan
                | Op::DateGreaterThanEquals => Values::Date(
                    raw.iter()
                        .map(|v| parse_date(v).ok_or_else(|| bad(v)))
                        .collect::<Result<_, _>>()?,
                ),
                Op::BinaryEquals => Values::Binary(
                    raw.iter()
                        .map(|v| {
                            base64::engine::general_purpose::STANDARD
                                .decode(v)
                                .map_err(|_| bad(v))
                        })
                        .collect::<Result<_, _>>()?,
                ),
                Op::IpAddress => Values::Ip(
                    raw.iter()
                        .map(|v| Cidr::parse(v.trim()).ok_or_else(|| bad(v)))
                        .collect::<Result<_, _>>()?,
                ),
                Op::Null => Values::Null(
                    raw.iter()
                        .map(|v| match v.to_ascii_lowercase().as_str() {
                            "true" => Ok(true),
                            "false" => Ok(false),
                            _ => Err(bad(v)),
                        })
                        .collect::<Result<_, _>>()?,
                ),
            };
            out.push(Condition {
                op,
                negated,
                qualifier,
                if_exists,
                key: key.to_lowercase().into_boxed_str(),
                values,
            });
        }
    }
    Ok(out)
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.chars()
            .flat_map(char::to_lowercase)
            .eq(b.chars().flat_map(char::to_lowercase))
    }
}

const CASE: Compare = Compare {
    ignore_case: false,
    arn: false,
};
const NO_CASE: Compare = Compare {
    ignore_case: true,
    arn: false,
};
const ARN: Compare = Compare {
    ignore_case: false,
    arn: true,
};

impl Condition {
    /// Whether one context value matches any of the policy's values, by the
    /// operator's positive form.
    fn matches_one(&self, v: &str, vars: &[&str]) -> bool {
        match &self.values {
            Values::Text(pats) => pats.iter().any(|p| match self.op {
                Op::StringEqualsIgnoreCase => match p.exact() {
                    Some(e) => eq_ignore_case(e, v),
                    None => p.matches(v, vars, NO_CASE),
                },
                Op::Bool => p.matches(v, vars, NO_CASE),
                Op::ArnLike => p.matches(v, vars, ARN),
                _ => p.matches(v, vars, CASE),
            }),
            Values::Number(nums) => {
                let Ok(x) = v.trim().parse::<f64>() else {
                    return false;
                };
                nums.iter().any(|&n| match self.op {
                    Op::NumericEquals => x == n,
                    Op::NumericLessThan => x < n,
                    Op::NumericLessThanEquals => x <= n,
                    Op::NumericGreaterThan => x > n,
                    _ => x >= n,
                })
            }
            Values::Date(dates) => {
                let Some(x) = parse_date(v) else {
                    return false;
                };
                dates.iter().any(|&d| match self.op {
                    Op::DateEquals => x == d,
                    Op::DateLessThan => x < d,
                    Op::DateLessThanEquals => x <= d,
                    Op::DateGreaterThan => x > d,
                    _ => x >= d,
                })
            }
            Values::Binary(bins) => bins.iter().any(|b| b.as_slice() == v.as_bytes()),
            Values::Ip(cidrs) => match v.trim().parse::<IpAddr>() {
                Ok(ip) => cidrs.iter().any(|c| c.contains(ip)),
                Err(_) => false,
            },
            Values::Null(_) => false,
        }
    }

    /// Evaluates the condition on the context values of its key (`None`
    /// when the key is absent; no values count as absent).
    pub(crate) fn eval(&self, values: Option<Vals<'_>>, vars: &[&str]) -> bool {
        let values = values.filter(|v| !v.is_empty());
        if let Values::Null(flags) = &self.values {
            // `"Null": {"k": "true"}`: k is absent.
            let absent = values.is_none();
            return flags.contains(&absent);
        }
        let Some(values) = values else {
            // IAM: an absent key does not match, so a negated operator is
            // true; `...IfExists` is true; ForAllValues over nothing is true,
            // ForAnyValue over nothing false.
            return self.if_exists
                || match self.qualifier {
                    Qualifier::ForAllValues => true,
                    Qualifier::ForAnyValue => false,
                    Qualifier::None => self.negated,
                };
        };
        let neg = self.negated;
        let mut values = values.iter();
        match self.qualifier {
            Qualifier::None => values.any(|v| self.matches_one(v, vars)) != neg,
            Qualifier::ForAllValues => values.all(|v| self.matches_one(v, vars) != neg),
            Qualifier::ForAnyValue => values.any(|v| self.matches_one(v, vars) != neg),
        }
    }
}

/// The values of a condition key in a request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Vals<'a> {
    Many(&'a [String]),
    One(&'a str),
}

impl<'a> Vals<'a> {
    fn is_empty(self) -> bool {
        match self {
            Vals::Many(v) => v.is_empty(),
            Vals::One(_) => false,
        }
    }

    fn iter(self) -> impl Iterator<Item = &'a str> {
        let (many, one) = match self {
            Vals::Many(v) => (v, None),
            Vals::One(s) => (&[][..], Some(s)),
        };
        many.iter().map(String::as_str).chain(one)
    }

    /// The value of a single-valued key, for a policy variable.
    pub(crate) fn single(self) -> Option<&'a str> {
        match self {
            Vals::Many([v]) => Some(v),
            Vals::Many(_) => None,
            Vals::One(s) => Some(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = Cidr::parse("203.0.113.0/24").unwrap();
        assert!(c.contains("203.0.113.7".parse().unwrap()));
        assert!(!c.contains("203.0.114.7".parse().unwrap()));
        assert!(c.contains("::ffff:203.0.113.9".parse().unwrap()));
        let one = Cidr::parse("10.0.0.1").unwrap();
        assert!(one.contains("10.0.0.1".parse().unwrap()));
        assert!(!one.contains("10.0.0.2".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("2001:db8::1".parse().unwrap()));
        let v6 = Cidr::parse("2001:DB8:1234:5678::/64").unwrap();
        assert!(v6.contains("2001:db8:1234:5678:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db8:1234:5679::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope").is_none());
    }
}
