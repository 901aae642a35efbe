//! Trust policies: who may assume a role.

/// Who wants to assume a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustedParty<'a> {
    /// An AWS service principal such as `lambda.amazonaws.com`.
    Service(&'a str),
    /// An IAM principal by ARN (a user, a role session, the root).
    Principal(&'a str),
}

/// Evaluates a trust policy for `sts:AssumeRole` by `who` on the role
/// `role_arn`, with IAM's logic (the policy is a resource-based policy whose
/// statements name principals).
pub(crate) fn allows(trust_policy: &str, role_arn: &str, who: &TrustedParty<'_>) -> bool {
    let Ok(policy) = nimbus_policy::Policy::parse(trust_policy) else {
        return false;
    };
    let principal = match who {
        TrustedParty::Service(s) => nimbus_policy::Principal::service(s),
        TrustedParty::Principal(arn) => nimbus_policy::Principal::from_arn(arn),
    };
    let context = nimbus_policy::Context::new();
    let req = nimbus_policy::Request {
        principal: &principal,
        action: "sts:AssumeRole",
        resource: role_arn,
        context: &context,
    };
    nimbus_policy::evaluate(&[], Some(&policy), &req) == nimbus_policy::Decision::Allow
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "arn:aws:iam::000000000000:role/r";
    const LAMBDA: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

    #[test]
    fn service_and_account_principals() {
        assert!(allows(
            LAMBDA,
            ROLE,
            &TrustedParty::Service("lambda.amazonaws.com")
        ));
        assert!(!allows(
            LAMBDA,
            ROLE,
            &TrustedParty::Service("s3.amazonaws.com")
        ));
        assert!(!allows(
            LAMBDA,
            ROLE,
            &TrustedParty::Principal("arn:aws:iam::000000000000:user/bob")
        ));
        let account = r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"000000000000"},"Action":["sts:*"]}}"#;
        assert!(allows(
            account,
            ROLE,
            &TrustedParty::Principal("arn:aws:iam::000000000000:user/bob")
        ));
        let denied = r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"*"},{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::000000000000:user/bob"},"Action":"sts:AssumeRole"}]}"#;
        assert!(!allows(
            denied,
            ROLE,
            &TrustedParty::Principal("arn:aws:iam::000000000000:user/bob")
        ));
        assert!(allows(
            denied,
            ROLE,
            &TrustedParty::Principal("arn:aws:iam::000000000000:user/eve")
        ));
        assert!(!allows(
            "not json",
            ROLE,
            &TrustedParty::Service("lambda.amazonaws.com")
        ));
    }
}
