//! Which IAM action and resource each request is, so the auth middleware
//! can ask IAM whether a non-root principal may make it. One table for
//! every API nimbus serves, as IAM's service authorization reference names
//! them.

use nimbus_core::Identity;

/// The action (`service:Operation`) and resource ARN of a request, or
/// `None` when IAM checks nothing (STS GetCallerIdentity).
pub(crate) struct Operation {
    pub(crate) action: String,
    pub(crate) resource: String,
    /// A role the request hands to Lambda (CreateFunction,
    /// UpdateFunctionConfiguration): the caller also needs `iam:PassRole`
    /// on it, or anyone allowed to create functions could run code with
    /// any role's permissions.
    pub(crate) passes_role: Option<String>,
}

fn op(action: impl Into<String>, resource: impl Into<String>) -> Option<Operation> {
    Some(Operation {
        action: action.into(),
        resource: resource.into(),
        passes_role: None,
    })
}

fn function_arn(id: &Identity, raw_name: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(raw_name).decode_utf8_lossy();
    match id.parse_function_ref(&decoded, None) {
        Ok(f) => id.function_arn(&f.name),
        Err(_) => id.function_arn(&decoded),
    }
}

/// The ARN of the version or alias a request names (in the function name
/// or its `Qualifier` query parameter), as Lambda authorizes GetFunction,
/// Invoke, DeleteFunction, the resource policy operations and provisioned
/// concurrency; the function's ARN without a qualifier.
fn qualified_arn(id: &Identity, raw_name: &str, query: Option<&str>) -> String {
    let decoded = percent_encoding::percent_decode_str(raw_name).decode_utf8_lossy();
    let qualifier = query.and_then(|q| query_param(q, "Qualifier"));
    match id.parse_function_ref(&decoded, qualifier.as_deref()) {
        Ok(f) => match &f.qualifier {
            Some(q) => id.qualified_arn(&f.name, q),
            None => id.function_arn(&f.name),
        },
        Err(_) => id.function_arn(&decoded),
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    form_param(query.as_bytes(), name)
}

/// The `Role` of a CreateFunction / UpdateFunctionConfiguration body.
fn role_in(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("Role")?
        .as_str()
        .map(str::to_string)
}

fn lambda(
    method: &http::Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    id: &Identity,
) -> Option<Operation> {
    let qualified = |name: &str| qualified_arn(id, name, query);
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    use http::Method as M;
    match (method, segs.as_slice()) {
        (&M::POST, [_, "functions"]) => {
            let name = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| {
                    v.get("FunctionName")
                        .and_then(|n| n.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_default();
            op("lambda:CreateFunction", function_arn(id, &name)).map(|o| Operation {
                passes_role: role_in(body),
                ..o
            })
        }
        (&M::GET, [_, "functions"]) => op("lambda:ListFunctions", "*"),
        (&M::GET, [_, "functions", name]) => op("lambda:GetFunction", qualified(name)),
        (&M::DELETE, [_, "functions", name]) => op("lambda:DeleteFunction", qualified(name)),
        (&M::GET, [_, "functions", name, "configuration"]) => {
            op("lambda:GetFunctionConfiguration", qualified(name))
        }
        (&M::PUT, [_, "functions", name, "configuration"]) => {
            op("lambda:UpdateFunctionConfiguration", function_arn(id, name)).map(|o| Operation {
                passes_role: role_in(body),
                ..o
            })
        }
        (&M::PUT, [_, "functions", name, "code"]) => {
            op("lambda:UpdateFunctionCode", function_arn(id, name))
        }
        (&M::POST, [_, "functions", name, "invocations" | "invoke-async"]) => {
            op("lambda:InvokeFunction", qualified(name))
        }
        (&M::POST, [_, "functions", name, "policy"]) => op("lambda:AddPermission", qualified(name)),
        (&M::GET, [_, "functions", name, "policy"]) => op("lambda:GetPolicy", qualified(name)),
        (&M::DELETE, [_, "functions", name, "policy", _]) => {
            op("lambda:RemovePermission", qualified(name))
        }
        (&M::POST, [_, "functions", name, "versions"]) => {
            op("lambda:PublishVersion", function_arn(id, name))
        }
        (&M::GET, [_, "functions", name, "versions"]) => {
            op("lambda:ListVersionsByFunction", function_arn(id, name))
        }
        (&M::POST, [_, "functions", name, "aliases"]) => {
            op("lambda:CreateAlias", function_arn(id, name))
        }
        (&M::GET, [_, "functions", name, "aliases"]) => {
            op("lambda:ListAliases", function_arn(id, name))
        }
        (&M::GET, [_, "functions", name, "aliases", _]) => {
            op("lambda:GetAlias", function_arn(id, name))
        }
        (&M::PUT, [_, "functions", name, "aliases", _]) => {
            op("lambda:UpdateAlias", function_arn(id, name))
        }
        (&M::DELETE, [_, "functions", name, "aliases", _]) => {
            op("lambda:DeleteAlias", function_arn(id, name))
        }
        (&M::PUT, [_, "functions", name, "concurrency"]) => {
            op("lambda:PutFunctionConcurrency", function_arn(id, name))
        }
        (&M::GET, [_, "functions", name, "concurrency"]) => {
            op("lambda:GetFunctionConcurrency", function_arn(id, name))
        }
        (&M::DELETE, [_, "functions", name, "concurrency"]) => {
            op("lambda:DeleteFunctionConcurrency", function_arn(id, name))
        }
        (&M::PUT, [_, "functions", name, "provisioned-concurrency"]) => {
            op("lambda:PutProvisionedConcurrencyConfig", qualified(name))
        }
        (&M::GET, [_, "functions", name, "provisioned-concurrency"])
            if query.and_then(|q| query_param(q, "List")).as_deref() == Some("ALL") =>
        {
            op(
                "lambda:ListProvisionedConcurrencyConfigs",
                function_arn(id, name),
            )
        }
        (&M::GET, [_, "functions", name, "provisioned-concurrency"]) => {
            op("lambda:GetProvisionedConcurrencyConfig", qualified(name))
        }
        (&M::DELETE, [_, "functions", name, "provisioned-concurrency"]) => {
            op("lambda:DeleteProvisionedConcurrencyConfig", qualified(name))
        }
        (method, [_, "functions", name, "event-invoke-config", ..]) => {
            let action = match (method, segs.len()) {
                (_, 5) => "lambda:ListFunctionEventInvokeConfigs",
                (&M::PUT, _) => "lambda:PutFunctionEventInvokeConfig",
                (&M::POST, _) => "lambda:UpdateFunctionEventInvokeConfig",
                (&M::DELETE, _) => "lambda:DeleteFunctionEventInvokeConfig",
                _ => "lambda:GetFunctionEventInvokeConfig",
            };
            op(action, qualified(name))
        }
        (method, [_, "functions", name, "recursion-config"]) => {
            let action = match *method {
                M::PUT => "lambda:PutFunctionRecursionConfig",
                _ => "lambda:GetFunctionRecursionConfig",
            };
            op(action, function_arn(id, name))
        }
        (method, [_, "tags", arn]) => {
            let action = match *method {
                M::POST => "lambda:TagResource",
                M::DELETE => "lambda:UntagResource",
                _ => "lambda:ListTags",
            };
            op(action, function_arn(id, arn))
        }
        (_, [_, "account-settings"]) => op("lambda:GetAccountSettings", "*"),
        _ => op("lambda:UnknownOperation", "*"),
    }
}

fn logs(target_op: &str, body: &[u8], id: &Identity) -> Option<Operation> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let group = v.get("logGroupName").and_then(|g| g.as_str());
    let stream = v.get("logStreamName").and_then(|g| g.as_str());
    let base = format!("arn:aws:logs:{}:{}:log-group:", id.region, id.account_id);
    let resource = match (group, stream) {
        (Some(g), Some(s)) => format!("{base}{g}:log-stream:{s}"),
        (Some(g), None) => format!("{base}{g}:*"),
        _ => "*".to_string(),
    };
    op(format!("logs:{target_op}"), resource)
}

/// EventBridge: the rule named by `Name` (rules) or `Rule` (targets).
fn events(target_op: &str, body: &[u8], id: &Identity) -> Option<Operation> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let resource = match v
        .get("Name")
        .or_else(|| v.get("Rule"))
        .and_then(|n| n.as_str())
    {
        Some(name) => format!("arn:aws:events:{}:{}:rule/{name}", id.region, id.account_id),
        None => "*".to_string(),
    };
    op(format!("events:{target_op}"), resource)
}

/// EventBridge Scheduler: `schedule/GROUP/NAME` and `schedule-group/NAME`.
fn scheduler(
    method: &http::Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    id: &Identity,
) -> Option<Operation> {
    use http::Method as M;
    let base = format!("arn:aws:scheduler:{}:{}", id.region, id.account_id);
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let group = query
        .and_then(|q| query_param(q, "groupName"))
        .or_else(|| {
            let v: serde_json::Value = serde_json::from_slice(body).ok()?;
            v.get("GroupName")?.as_str().map(String::from)
        })
        .unwrap_or_else(|| "default".into());
    match (method, segs.as_slice()) {
        (&M::GET, ["schedules"]) => op("scheduler:ListSchedules", "*"),
        (m, ["schedules", name]) => {
            let action = match *m {
                M::POST => "CreateSchedule",
                M::PUT => "UpdateSchedule",
                M::DELETE => "DeleteSchedule",
                _ => "GetSchedule",
            };
            op(
                format!("scheduler:{action}"),
                format!("{base}:schedule/{group}/{}", decode(name)),
            )
        }
        (&M::GET, ["schedule-groups"]) => op("scheduler:ListScheduleGroups", "*"),
        (m, ["schedule-groups", name]) => {
            let action = match *m {
                M::POST => "CreateScheduleGroup",
                M::DELETE => "DeleteScheduleGroup",
                _ => "GetScheduleGroup",
            };
            op(
                format!("scheduler:{action}"),
                format!("{base}:schedule-group/{}", decode(name)),
            )
        }
        _ => op("scheduler:UnknownOperation", "*"),
    }
}

fn form_param(body: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(body).split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn iam(body: &[u8], id: &Identity) -> Option<Operation> {
    let action = form_param(body, "Action").unwrap_or_default();
    let account = &id.account_id;
    let resource = if let Some(user) = form_param(body, "UserName") {
        format!("arn:aws:iam::{account}:user/{user}")
    } else if let Some(role) = form_param(body, "RoleName") {
        format!("arn:aws:iam::{account}:role/{role}")
    } else if let Some(arn) = form_param(body, "PolicyArn") {
        arn
    } else if let Some(name) = form_param(body, "PolicyName") {
        format!("arn:aws:iam::{account}:policy/{name}")
    } else {
        "*".to_string()
    };
    op(format!("iam:{action}"), resource)
}

fn sts(body: &[u8]) -> Option<Operation> {
    match form_param(body, "Action").as_deref() {
        // Anyone with valid credentials may ask who they are.
        Some("GetCallerIdentity") => None,
        Some(action) => op(
            format!("sts:{action}"),
            form_param(body, "RoleArn").unwrap_or_else(|| "*".into()),
        ),
        None => op("sts:UnknownOperation", "*"),
    }
}

/// The operation of a verified request for `service` (its scope's).
pub(crate) fn operation(
    service: &str,
    method: &http::Method,
    path: &str,
    query: Option<&str>,
    target: Option<&str>,
    body: &[u8],
    id: &Identity,
) -> Option<Operation> {
    match service {
        "lambda" => lambda(method, path, query, body, id),
        "logs" => logs(
            target
                .and_then(|t| t.split_once('.'))
                .map_or("", |(_, o)| o),
            body,
            id,
        ),
        "iam" => iam(body, id),
        "events" => events(
            target
                .and_then(|t| t.split_once('.'))
                .map_or("", |(_, o)| o),
            body,
            id,
        ),
        "scheduler" => scheduler(method, path, query, body, id),
        "sts" => sts(body),
        "nimbus" if path.starts_with("/_nimbus/dlq") => match *method {
            http::Method::GET => op("nimbus:ListDeadLetters", "*"),
            _ => op("nimbus:ReplayDeadLetters", "*"),
        },
        "nimbus" if path == "/_nimbus/triggers" => op("nimbus:ListTriggers", "*"),
        "nimbus" => op("nimbus:GetUsage", "*"),
        other => op(format!("{other}:UnknownOperation"), "*"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_and_rules_map_to_their_actions() {
        let id = Identity::default();
        let (r, a) = (id.region.clone(), id.account_id.clone());
        let run = |service: &str,
                   m: http::Method,
                   path: &str,
                   q: Option<&str>,
                   t: Option<&str>,
                   b: &str| {
            let o = operation(service, &m, path, q, t, b.as_bytes(), &id).expect("an operation");
            (o.action, o.resource)
        };
        assert_eq!(
            run(
                "scheduler",
                http::Method::POST,
                "/schedules/nightly",
                None,
                None,
                "{}"
            ),
            (
                "scheduler:CreateSchedule".into(),
                format!("arn:aws:scheduler:{r}:{a}:schedule/default/nightly")
            )
        );
        assert_eq!(
            run(
                "scheduler",
                http::Method::DELETE,
                "/schedules/n",
                Some("groupName=g"),
                None,
                ""
            ),
            (
                "scheduler:DeleteSchedule".into(),
                format!("arn:aws:scheduler:{r}:{a}:schedule/g/n")
            )
        );
        assert_eq!(
            run("scheduler", http::Method::GET, "/schedules", None, None, "").0,
            "scheduler:ListSchedules"
        );
        assert_eq!(
            run(
                "scheduler",
                http::Method::GET,
                "/schedule-groups/default",
                None,
                None,
                ""
            ),
            (
                "scheduler:GetScheduleGroup".into(),
                format!("arn:aws:scheduler:{r}:{a}:schedule-group/default")
            )
        );
        assert_eq!(
            run(
                "events",
                http::Method::POST,
                "/",
                None,
                Some("AWSEvents.PutRule"),
                r#"{"Name":"tick"}"#
            ),
            (
                "events:PutRule".into(),
                format!("arn:aws:events:{r}:{a}:rule/tick")
            )
        );
        assert_eq!(
            run(
                "events",
                http::Method::POST,
                "/",
                None,
                Some("AWSEvents.PutTargets"),
                r#"{"Rule":"tick"}"#
            ),
            (
                "events:PutTargets".into(),
                format!("arn:aws:events:{r}:{a}:rule/tick")
            )
        );
    }

    fn check(service: &str, method: http::Method, path: &str, body: &str) -> (String, String) {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let o = operation(
            service,
            &method,
            path,
            query,
            Some("Logs_20140328.PutLogEvents"),
            body.as_bytes(),
            &Identity::default(),
        )
        .expect("an operation");
        (o.action, o.resource)
    }

    #[test]
    fn requests_map_to_iam_actions_and_resources() {
        let f = "arn:aws:lambda:us-east-1:000000000000:function:demo";
        assert_eq!(
            check(
                "lambda",
                http::Method::POST,
                "/2015-03-31/functions/demo/invocations",
                ""
            ),
            ("lambda:InvokeFunction".into(), f.into())
        );
        assert_eq!(
            check(
                "lambda",
                http::Method::GET,
                "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Ademo/configuration",
                ""
            ),
            ("lambda:GetFunctionConfiguration".into(), f.into())
        );
        assert_eq!(
            check(
                "lambda",
                http::Method::POST,
                "/2015-03-31/functions",
                r#"{"FunctionName":"demo"}"#
            ),
            ("lambda:CreateFunction".into(), f.into())
        );
        assert_eq!(
            check("lambda", http::Method::GET, "/2015-03-31/functions/", ""),
            ("lambda:ListFunctions".into(), "*".into())
        );
        assert_eq!(
            check(
                "logs",
                http::Method::POST,
                "/",
                r#"{"logGroupName":"/aws/lambda/demo","logStreamName":"s"}"#
            ),
            (
                "logs:PutLogEvents".into(),
                "arn:aws:logs:us-east-1:000000000000:log-group:/aws/lambda/demo:log-stream:s"
                    .into()
            )
        );
        assert_eq!(
            check(
                "iam",
                http::Method::POST,
                "/",
                "Action=GetRole&RoleName=r&Version=2010-05-08"
            ),
            (
                "iam:GetRole".into(),
                "arn:aws:iam::000000000000:role/r".into()
            )
        );
        assert!(
            operation(
                "sts",
                &http::Method::POST,
                "/",
                None,
                None,
                b"Action=GetCallerIdentity",
                &Identity::default()
            )
            .is_none()
        );
    }

    #[test]
    fn versions_aliases_and_concurrency_map_to_their_actions() {
        let f = "arn:aws:lambda:us-east-1:000000000000:function:demo";
        let lambda = |m: http::Method, path: &str| check("lambda", m, path, "");
        use http::Method as M;
        let cases = [
            (
                M::POST,
                "/2015-03-31/functions/demo/versions",
                "PublishVersion",
                f.to_string(),
            ),
            (
                M::GET,
                "/2015-03-31/functions/demo/versions",
                "ListVersionsByFunction",
                f.into(),
            ),
            (
                M::POST,
                "/2015-03-31/functions/demo/aliases",
                "CreateAlias",
                f.into(),
            ),
            (
                M::GET,
                "/2015-03-31/functions/demo/aliases",
                "ListAliases",
                f.into(),
            ),
            (
                M::GET,
                "/2015-03-31/functions/demo/aliases/live",
                "GetAlias",
                f.into(),
            ),
            (
                M::PUT,
                "/2015-03-31/functions/demo/aliases/live",
                "UpdateAlias",
                f.into(),
            ),
            (
                M::DELETE,
                "/2015-03-31/functions/demo/aliases/live",
                "DeleteAlias",
                f.into(),
            ),
            (
                M::PUT,
                "/2017-10-31/functions/demo/concurrency",
                "PutFunctionConcurrency",
                f.into(),
            ),
            (
                M::GET,
                "/2019-09-30/functions/demo/concurrency",
                "GetFunctionConcurrency",
                f.into(),
            ),
            (
                M::DELETE,
                "/2017-10-31/functions/demo/concurrency",
                "DeleteFunctionConcurrency",
                f.into(),
            ),
            (
                M::PUT,
                "/2019-09-30/functions/demo/provisioned-concurrency?Qualifier=live",
                "PutProvisionedConcurrencyConfig",
                format!("{f}:live"),
            ),
            (
                M::GET,
                "/2019-09-30/functions/demo/provisioned-concurrency?Qualifier=3",
                "GetProvisionedConcurrencyConfig",
                format!("{f}:3"),
            ),
            (
                M::GET,
                "/2019-09-30/functions/demo/provisioned-concurrency?List=ALL",
                "ListProvisionedConcurrencyConfigs",
                f.into(),
            ),
            (
                M::DELETE,
                "/2019-09-30/functions/demo/provisioned-concurrency?Qualifier=live",
                "DeleteProvisionedConcurrencyConfig",
                format!("{f}:live"),
            ),
            (
                M::POST,
                "/2015-03-31/functions/demo/invocations?Qualifier=2",
                "InvokeFunction",
                format!("{f}:2"),
            ),
            (
                M::POST,
                "/2015-03-31/functions/demo:live/invocations",
                "InvokeFunction",
                format!("{f}:live"),
            ),
            (
                M::POST,
                "/2015-03-31/functions/demo/invocations",
                "InvokeFunction",
                f.into(),
            ),
            (
                M::GET,
                "/2015-03-31/functions/demo?Qualifier=%24LATEST",
                "GetFunction",
                format!("{f}:$LATEST"),
            ),
            (
                M::DELETE,
                "/2015-03-31/functions/demo?Qualifier=4",
                "DeleteFunction",
                format!("{f}:4"),
            ),
            (
                M::PUT,
                "/2019-09-25/functions/demo/event-invoke-config?Qualifier=live",
                "PutFunctionEventInvokeConfig",
                format!("{f}:live"),
            ),
            (
                M::POST,
                "/2019-09-25/functions/demo/event-invoke-config",
                "UpdateFunctionEventInvokeConfig",
                f.into(),
            ),
            (
                M::GET,
                "/2019-09-25/functions/demo/event-invoke-config/list",
                "ListFunctionEventInvokeConfigs",
                f.into(),
            ),
            (
                M::PUT,
                "/2024-08-31/functions/demo/recursion-config",
                "PutFunctionRecursionConfig",
                f.into(),
            ),
        ];
        for (method, path, action, resource) in cases {
            assert_eq!(
                lambda(method, path),
                (format!("lambda:{action}"), resource),
                "{path}"
            );
        }
    }
}
