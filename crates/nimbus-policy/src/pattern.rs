//! Compiled strings of a policy: literal text, the `*` and `?` wildcards and
//! policy variables (`${aws:username}`, `${aws:userid, 'anonymous'}`, and
//! the escapes `${*}`, `${?}`, `${$}`), matched without allocating.

/// A policy variable used in a statement: its context key (lower case) and
/// its default value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VarDef {
    pub(crate) key: Box<str>,
    pub(crate) default: Option<Box<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(Box<str>),
    /// `*`: any run of characters.
    Any,
    /// `?`: exactly one character.
    One,
    /// A policy variable, by index into the statement's variables.
    Var(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// `*` alone.
    All,
    /// Literal text only.
    Exact(Box<str>),
    Glob,
}

/// A compiled policy string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    toks: Box<[Tok]>,
    shape: Shape,
}

/// How a string is compiled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Syntax {
    /// `*` and `?` are wildcards (else literal).
    pub(crate) wildcards: bool,
    /// `${...}` are policy variables (2012-10-17 only).
    pub(crate) variables: bool,
}

/// How a compiled string is compared.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Compare {
    /// ASCII case-insensitive.
    pub(crate) ignore_case: bool,
    /// ARN matching: a wildcard in one of the first five colon-separated
    /// components does not match across a `:`.
    pub(crate) arn: bool,
}

impl Pattern {
    /// Compiles `s`; variables are added to (or found in) `vars`.
    pub(crate) fn compile(s: &str, syntax: Syntax, vars: &mut Vec<VarDef>) -> Pattern {
        let mut toks = Vec::new();
        let mut lit = String::new();
        let flush = |lit: &mut String, toks: &mut Vec<Tok>| {
            if !lit.is_empty() {
                toks.push(Tok::Lit(std::mem::take(lit).into_boxed_str()));
            }
        };
        let mut rest = s;
        while let Some(c) = rest.chars().next() {
            if syntax.variables && rest.starts_with("${") {
                if let Some(end) = rest.find('}') {
                    let inner = &rest[2..end];
                    match inner {
                        "*" | "?" | "$" => lit.push_str(inner),
                        _ => match parse_var(inner) {
                            Some(def) => {
                                flush(&mut lit, &mut toks);
                                let i = match vars.iter().position(|v| *v == def) {
                                    Some(i) => i,
                                    None => {
                                        vars.push(def);
                                        vars.len() - 1
                                    }
                                };
                                toks.push(Tok::Var(i));
                            }
                            None => lit.push_str(&rest[..=end]),
                        },
                    }
                    rest = &rest[end + 1..];
                    continue;
                }
            }
            match c {
                '*' if syntax.wildcards => {
                    flush(&mut lit, &mut toks);
                    // `**` is `*`.
                    if toks.last() != Some(&Tok::Any) {
                        toks.push(Tok::Any);
                    }
                }
                '?' if syntax.wildcards => {
                    flush(&mut lit, &mut toks);
                    toks.push(Tok::One);
                }
                c => lit.push(c),
            }
            rest = &rest[c.len_utf8()..];
        }
        flush(&mut lit, &mut toks);
        let shape = match toks.as_slice() {
            [Tok::Any] => Shape::All,
            [] => Shape::Exact("".into()),
            [Tok::Lit(l)] => Shape::Exact(l.clone()),
            _ => Shape::Glob,
        };
        Pattern {
            toks: toks.into_boxed_slice(),
            shape,
        }
    }

    /// The text of a pattern without wildcards or variables.
    pub(crate) fn exact(&self) -> Option<&str> {
        match &self.shape {
            Shape::Exact(s) => Some(s),
            _ => None,
        }
    }

    /// Whether `s` matches; `vars` are the values of the statement's
    /// variables, in order.
    pub(crate) fn matches(&self, s: &str, vars: &[&str], cmp: Compare) -> bool {
        match &self.shape {
            Shape::All => true,
            Shape::Exact(l) if cmp.ignore_case => l.eq_ignore_ascii_case(s),
            Shape::Exact(l) => **l == *s,
            Shape::Glob => glob(&self.toks, vars, s.as_bytes(), cmp),
        }
    }
}

/// `key` or `key, 'default'`.
fn parse_var(inner: &str) -> Option<VarDef> {
    let (key, default) = match inner.split_once(',') {
        Some((key, default)) => {
            let d = default.trim();
            let d = d.strip_prefix('\'')?.strip_suffix('\'')?;
            (key.trim(), Some(d.into()))
        }
        None => (inner.trim(), None),
    };
    if key.is_empty() || key.contains(['{', '$', ' ']) {
        return None;
    }
    Some(VarDef {
        key: key.to_lowercase().into_boxed_str(),
        default,
    })
}

fn char_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0x80..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Wildcard matching over tokens with backtracking to the last `*` (linear
/// in practice, no allocation).
fn glob(toks: &[Tok], vars: &[&str], s: &[u8], cmp: Compare) -> bool {
    let text = |t: usize| -> &[u8] {
        match &toks[t] {
            Tok::Lit(l) => l.as_bytes(),
            Tok::Var(i) => vars.get(*i).map_or(&[][..], |v| v.as_bytes()),
            Tok::Any | Tok::One => &[],
        }
    };
    let eq = |a: u8, b: u8| {
        if cmp.ignore_case {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    // Pattern position (token, byte offset in it), subject position, colons
    // of the pattern consumed so far.
    let (mut t, mut o, mut i, mut colons) = (0usize, 0usize, 0usize, 0u32);
    // The last `*`: the token after it, where it resumes in the subject, and
    // the colons consumed before it.
    let mut star: Option<(usize, usize, u32)> = None;
    loop {
        while t < toks.len() && matches!(toks[t], Tok::Lit(_) | Tok::Var(_)) && o >= text(t).len() {
            t += 1;
            o = 0;
        }
        let restricted = cmp.arn && colons < 5;
        let advanced = if t == toks.len() {
            if i == s.len() {
                return true;
            }
            false
        } else {
            match &toks[t] {
                Tok::Any => {
                    star = Some((t + 1, i, colons));
                    t += 1;
                    continue;
                }
                Tok::One => {
                    if i < s.len() && !(restricted && s[i] == b':') {
                        i += char_len(s[i]);
                        t += 1;
                        true
                    } else {
                        false
                    }
                }
                Tok::Lit(_) | Tok::Var(_) => {
                    let c = text(t)[o];
                    if i < s.len() && eq(c, s[i]) {
                        if c == b':' {
                            colons += 1;
                        }
                        i += 1;
                        o += 1;
                        true
                    } else {
                        false
                    }
                }
            }
        };
        if advanced {
            continue;
        }
        // Let the last `*` take one more character, if it may.
        let Some((st, si, sc)) = star else {
            return false;
        };
        if si >= s.len() || (cmp.arn && sc < 5 && s[si] == b':') {
            return false;
        }
        let next = si + char_len(s[si]);
        star = Some((st, next, sc));
        (t, o, i, colons) = (st, 0, next, sc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLOB: Syntax = Syntax {
        wildcards: true,
        variables: true,
    };
    const PLAIN: Compare = Compare {
        ignore_case: false,
        arn: false,
    };
    const ARN: Compare = Compare {
        ignore_case: false,
        arn: true,
    };

    fn m(p: &str, s: &str, cmp: Compare) -> bool {
        Pattern::compile(p, GLOB, &mut Vec::new()).matches(s, &[], cmp)
    }

    #[test]
    fn wildcards() {
        assert!(m("*", "", PLAIN));
        assert!(m("a*c", "abbbc", PLAIN));
        assert!(m("a*c", "ac", PLAIN));
        assert!(!m("a*c", "abcd", PLAIN));
        assert!(m("a?c", "abc", PLAIN));
        assert!(!m("a?c", "ac", PLAIN));
        assert!(m("a?c", "aéc", PLAIN), "? is one character, not one byte");
        assert!(m("*a*b*c*", "xxaxxbxxcxx", PLAIN));
        assert!(!m("*a*b*c*", "xxaxxcxxbxx", PLAIN));
        assert!(m(
            "s3:Get*",
            "S3:GETOBJECT",
            Compare {
                ignore_case: true,
                arn: false
            }
        ));
        assert!(!m("s3:Get*", "S3:GETOBJECT", PLAIN));
    }

    #[test]
    fn arn_wildcards_stay_within_a_component() {
        let p = "arn:aws:someservice:*:111122223333:finance/*";
        let v = "arn:aws:someservice:us-east-2:999999999999:store/abc:111122223333:finance/document.txt";
        assert!(m(p, v, PLAIN), "StringLike crosses colons");
        assert!(!m(p, v, ARN), "ArnLike does not");
        assert!(m(
            "arn:aws:lambda:*:*:function:*",
            "arn:aws:lambda:us-east-1:123456789012:function:f:prod",
            ARN
        ));
        assert!(m("arn:aws:s3:::b/*", "arn:aws:s3:::b/a:b/c", ARN));
        assert!(!m("arn:aws:s3:::b/*", "arn:aws:s3:::c/a", ARN));
        assert!(!m("arn:*:s3:::b", "arn:aws:x:s3:::b", ARN));
    }

    #[test]
    fn variables_and_escapes() {
        let mut vars = Vec::new();
        let p = Pattern::compile("home/${aws:username}/${*}${?}${$}*", GLOB, &mut vars);
        assert_eq!(
            vars,
            vec![VarDef {
                key: "aws:username".into(),
                default: None
            }]
        );
        assert!(p.matches("home/bob/*?$x", &["bob"], PLAIN));
        assert!(
            !p.matches("home/bob/a?$x", &["bob"], PLAIN),
            "${{*}} is a literal *"
        );
        assert!(!p.matches("home/alice/*?$x", &["bob"], PLAIN));
        let mut vars = Vec::new();
        Pattern::compile("${aws:userid, 'anonymous'}", GLOB, &mut vars);
        assert_eq!(vars[0].default.as_deref(), Some("anonymous"));
        let literal = Pattern::compile(
            "${aws:username}",
            Syntax {
                wildcards: true,
                variables: false,
            },
            &mut vars,
        );
        assert_eq!(literal.exact(), Some("${aws:username}"));
    }
}
