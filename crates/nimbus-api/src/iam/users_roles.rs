//! IAM actions: users and access keys, roles, managed and inline policies.

use nimbus_iam::{
    AccessKey, EntityKind, IamError, IamService, ManagedPolicy, PolicyVersion, Role, User,
};

use super::xml::{date, policy_doc};
use super::{Params, Xml};

fn user(x: &mut Xml, u: &User) {
    x.el("Path", &u.path)
        .el("UserName", &u.name)
        .el("UserId", &u.id)
        .el("Arn", &u.arn)
        .el("CreateDate", date(&u.created));
}

fn role(x: &mut Xml, r: &Role) {
    x.el("Path", &r.path)
        .el("RoleName", &r.name)
        .el("RoleId", &r.id)
        .el("Arn", &r.arn)
        .el("CreateDate", date(&r.created))
        .el("AssumeRolePolicyDocument", policy_doc(&r.trust_policy))
        .el("MaxSessionDuration", r.max_session_s.to_string());
    if !r.description.is_empty() {
        x.el("Description", &r.description);
    }
}

fn policy(x: &mut Xml, p: &ManagedPolicy, attachments: usize) {
    x.el("PolicyName", &p.name)
        .el("PolicyId", &p.id)
        .el("Arn", &p.arn)
        .el("Path", &p.path)
        .el("DefaultVersionId", &p.default_version)
        .el("AttachmentCount", attachments.to_string())
        .el("PermissionsBoundaryUsageCount", "0")
        .el("IsAttachable", "true")
        .el("CreateDate", date(&p.created))
        .el("UpdateDate", date(&p.updated));
    if !p.description.is_empty() {
        x.el("Description", &p.description);
    }
}

fn version(x: &mut Xml, v: &PolicyVersion, is_default: bool) {
    x.el("Document", policy_doc(&v.document))
        .el("VersionId", &v.id)
        .el(
            "IsDefaultVersion",
            if is_default { "true" } else { "false" },
        )
        .el("CreateDate", date(&v.created));
}

fn key_metadata(x: &mut Xml, k: &AccessKey) {
    x.el("UserName", &k.user)
        .el("AccessKeyId", &k.id)
        .el("Status", if k.active { "Active" } else { "Inactive" })
        .el("CreateDate", date(&k.created));
}

/// The entity kind and name of an action on a user or a role
/// (`AttachUserPolicy` / `AttachRolePolicy` and friends).
fn entity(p: &Params, kind: EntityKind) -> Result<(EntityKind, &str), IamError> {
    Ok((
        kind,
        p.need(if kind == EntityKind::User {
            "UserName"
        } else {
            "RoleName"
        })?,
    ))
}

/// Runs one IAM action; returns the action name and its result XML.
pub(crate) fn handle(
    iam: &IamService,
    action: &str,
    p: &Params,
) -> Result<(String, String), IamError> {
    let mut x = Xml::new();
    let kind_of = |suffix: &str| {
        if action.contains(&format!("User{suffix}")) {
            EntityKind::User
        } else {
            EntityKind::Role
        }
    };
    match action {
        "CreateUser" => {
            let u = iam.create_user(p.need("UserName")?, p.get("Path"))?;
            x.wrap("User", |x| user(x, &u));
        }
        "GetUser" => {
            let u = iam.get_user(p.need("UserName")?)?;
            x.wrap("User", |x| user(x, &u));
        }
        "ListUsers" => {
            let (users, next) = p.page(iam.list_users(p.get("PathPrefix")))?;
            x.list("Users", &users, user).paging(next);
        }
        "DeleteUser" => iam.delete_user(p.need("UserName")?)?,
        "CreateAccessKey" => {
            let k = iam.create_access_key(p.need("UserName")?)?;
            x.wrap("AccessKey", |x| {
                key_metadata(x, &k);
                x.el("SecretAccessKey", &k.secret);
            });
        }
        "DeleteAccessKey" => iam.delete_access_key(p.need("UserName")?, p.need("AccessKeyId")?)?,
        "UpdateAccessKey" => {
            let active = match p.need("Status")? {
                "Active" => true,
                "Inactive" => false,
                other => {
                    return Err(IamError::Validation(format!(
                        "Invalid Status '{other}': must be Active or Inactive"
                    )));
                }
            };
            iam.update_access_key(p.need("UserName")?, p.need("AccessKeyId")?, active)?;
        }
        "ListAccessKeys" => {
            let (keys, next) = p.page(iam.list_access_keys(p.need("UserName")?)?)?;
            x.list("AccessKeyMetadata", &keys, key_metadata)
                .paging(next);
        }
        "CreateRole" => {
            let max = p
                .get("MaxSessionDuration")
                .map(|m| {
                    m.parse::<u32>().map_err(|_| {
                        IamError::Validation(format!("Invalid MaxSessionDuration '{m}'"))
                    })
                })
                .transpose()?;
            let r = iam.create_role(
                p.need("RoleName")?,
                p.get("Path"),
                p.need("AssumeRolePolicyDocument")?,
                p.get("Description"),
                max,
            )?;
            x.wrap("Role", |x| role(x, &r));
        }
        "GetRole" => {
            let r = iam.get_role(p.need("RoleName")?)?;
            x.wrap("Role", |x| role(x, &r));
        }
        "ListRoles" => {
            let (roles, next) = p.page(iam.list_roles(p.get("PathPrefix")))?;
            x.list("Roles", &roles, role).paging(next);
        }
        "DeleteRole" => iam.delete_role(p.need("RoleName")?)?,
        "UpdateAssumeRolePolicy" => {
            iam.update_assume_role_policy(p.need("RoleName")?, p.need("PolicyDocument")?)?
        }
        "CreatePolicy" => {
            let pol = iam.create_policy(
                p.need("PolicyName")?,
                p.get("Path"),
                p.need("PolicyDocument")?,
                p.get("Description"),
            )?;
            x.wrap("Policy", |x| policy(x, &pol, 0));
        }
        "GetPolicy" => {
            let arn = p.need("PolicyArn")?;
            let pol = iam.get_policy(arn)?;
            let n = iam.attachment_count(arn);
            x.wrap("Policy", |x| policy(x, &pol, n));
        }
        "ListPolicies" => {
            let all = iam.list_policies(
                p.get("Scope").unwrap_or("All"),
                p.flag("OnlyAttached"),
                p.get("PathPrefix"),
            );
            let (pols, next) = p.page(all)?;
            x.list("Policies", &pols, |x, pol| {
                policy(x, pol, iam.attachment_count(&pol.arn))
            })
            .paging(next);
        }
        "DeletePolicy" => iam.delete_policy(p.need("PolicyArn")?)?,
        "CreatePolicyVersion" => {
            let v = iam.create_policy_version(
                p.need("PolicyArn")?,
                p.need("PolicyDocument")?,
                p.flag("SetAsDefault"),
            )?;
            let default = p.flag("SetAsDefault");
            x.wrap("PolicyVersion", |x| version(x, &v, default));
        }
        "GetPolicyVersion" => {
            let (v, is_default) =
                iam.get_policy_version(p.need("PolicyArn")?, p.need("VersionId")?)?;
            x.wrap("PolicyVersion", |x| version(x, &v, is_default));
        }
        "ListPolicyVersions" => {
            let pol = iam.get_policy(p.need("PolicyArn")?)?;
            let default = pol.default_version.clone();
            let mut versions = pol.versions;
            versions.reverse();
            let (versions, next) = p.page(versions)?;
            x.list("Versions", &versions, |x, v| version(x, v, v.id == default))
                .paging(next);
        }
        "DeletePolicyVersion" => {
            iam.delete_policy_version(p.need("PolicyArn")?, p.need("VersionId")?)?
        }
        "AttachUserPolicy" | "AttachRolePolicy" => {
            let (kind, name) = entity(p, kind_of("Policy"))?;
            iam.attach_policy(kind, name, p.need("PolicyArn")?)?;
        }
        "DetachUserPolicy" | "DetachRolePolicy" => {
            let (kind, name) = entity(p, kind_of("Policy"))?;
            iam.detach_policy(kind, name, p.need("PolicyArn")?)?;
        }
        "ListAttachedUserPolicies" | "ListAttachedRolePolicies" => {
            let (kind, name) = entity(p, kind_of("Policies"))?;
            let (attached, next) = p.page(iam.attached_policies(kind, name)?)?;
            x.list("AttachedPolicies", &attached, |x, (n, arn)| {
                x.el("PolicyName", n).el("PolicyArn", arn);
            })
            .paging(next);
        }
        "PutUserPolicy" | "PutRolePolicy" => {
            let (kind, name) = entity(p, kind_of("Policy"))?;
            iam.put_inline_policy(kind, name, p.need("PolicyName")?, p.need("PolicyDocument")?)?;
        }
        "GetUserPolicy" | "GetRolePolicy" => {
            let kind = kind_of("Policy");
            let (kind, name) = entity(p, kind)?;
            let policy_name = p.need("PolicyName")?;
            let doc = iam.get_inline_policy(kind, name, policy_name)?;
            x.el(
                if kind == EntityKind::User {
                    "UserName"
                } else {
                    "RoleName"
                },
                name,
            )
            .el("PolicyName", policy_name)
            .el("PolicyDocument", policy_doc(&doc));
        }
        "DeleteUserPolicy" | "DeleteRolePolicy" => {
            let (kind, name) = entity(p, kind_of("Policy"))?;
            iam.delete_inline_policy(kind, name, p.need("PolicyName")?)?;
        }
        "ListUserPolicies" | "ListRolePolicies" => {
            let (kind, name) = entity(p, kind_of("Policies"))?;
            let (names, next) = p.page(iam.inline_policy_names(kind, name)?)?;
            x.wrap("PolicyNames", |x| {
                for n in &names {
                    x.el("member", n);
                }
            })
            .paging(next);
        }
        "" => return Err(IamError::InvalidInput("Missing Action".into())),
        other => {
            return Err(IamError::InvalidInput(format!(
                "The action {other} is not supported by nimbus's IAM"
            )));
        }
    }
    Ok((action.to_string(), x.into_string()))
}
