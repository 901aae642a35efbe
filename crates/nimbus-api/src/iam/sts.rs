//! STS actions: GetCallerIdentity and AssumeRole.

use nimbus_auth::Verified;
use nimbus_iam::{IamError, IamService};

use super::xml::date;
use super::{Params, Xml, caller_arn};

/// Runs one STS action; returns the action name and its result XML.
pub(crate) fn handle(
    iam: &IamService,
    verified: &Verified,
    action: &str,
    p: &Params,
) -> Result<(String, String), IamError> {
    let mut x = Xml::new();
    match action {
        "GetCallerIdentity" => {
            let (caller, arn) = iam
                .caller(&verified.access_key_id)
                .ok_or_else(|| IamError::AccessDenied("Unknown caller".into()))?;
            let user_id = iam.caller_user_id(&caller, &verified.access_key_id);
            x.el("Arn", arn)
                .el("UserId", user_id)
                .el("Account", iam.account_id());
        }
        "AssumeRole" => {
            let role_arn = p.need("RoleArn")?;
            let session_name = p.need("RoleSessionName")?;
            let duration: u32 = match p.get("DurationSeconds") {
                None => 3600,
                Some(d) => d
                    .parse()
                    .map_err(|_| IamError::Validation(format!("Invalid DurationSeconds '{d}'")))?,
            };
            let role = iam.role_by_arn(role_arn).ok_or_else(|| {
                IamError::AccessDenied(format!(
                    "User: {} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
                    caller_arn(iam, verified)
                ))
            })?;
            let caller = caller_arn(iam, verified);
            if !iam.trust_allows(&role, &nimbus_iam::TrustedParty::Principal(&caller)) {
                return Err(IamError::AccessDenied(format!(
                    "User: {} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
                    caller_arn(iam, verified)
                )));
            }
            let s = iam.assume_role(role_arn, session_name, duration)?;
            x.wrap("Credentials", |x| {
                x.el("AccessKeyId", &s.access_key_id)
                    .el("SecretAccessKey", &s.secret)
                    .el("SessionToken", &s.token)
                    .el("Expiration", date(&s.expires));
            })
            .wrap("AssumedRoleUser", |x| {
                x.el("AssumedRoleId", &s.assumed_role_id)
                    .el("Arn", &s.assumed_role_arn);
            });
        }
        "" => return Err(IamError::InvalidInput("Missing Action".into())),
        other => {
            return Err(IamError::InvalidInput(format!(
                "The action {other} is not supported by nimbus's STS"
            )));
        }
    }
    Ok((action.to_string(), x.into_string()))
}
