//! Request and response bodies of the Lambda API, shaped as botocore's
//! `lambda/2015-03-31/service-2.json` describes them.

use std::collections::BTreeMap;

use base64::Engine as _;
use nimbus_core::function::FunctionSettings;
use nimbus_core::{FunctionSpec, FunctionState, Identity, LastUpdateStatus};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct EnvironmentShape {
    pub(crate) variables: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct EphemeralStorageShape {
    pub(crate) size: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct FunctionCodeShape {
    pub(crate) zip_file: Option<String>,
    pub(crate) s3_bucket: Option<String>,
    pub(crate) image_uri: Option<String>,
}

/// CreateFunctionRequest (members nimbus uses; others are accepted and
/// ignored as Lambda ignores what does not apply).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CreateFunctionRequest {
    pub(crate) function_name: Option<String>,
    pub(crate) runtime: Option<String>,
    pub(crate) role: Option<String>,
    pub(crate) handler: Option<String>,
    pub(crate) code: Option<FunctionCodeShape>,
    pub(crate) description: Option<String>,
    pub(crate) timeout: Option<i64>,
    pub(crate) memory_size: Option<i64>,
    pub(crate) environment: Option<EnvironmentShape>,
    pub(crate) package_type: Option<String>,
    pub(crate) architectures: Option<Vec<String>>,
    pub(crate) tags: Option<BTreeMap<String, String>>,
    pub(crate) ephemeral_storage: Option<EphemeralStorageShape>,
    pub(crate) publish: Option<bool>,
    pub(crate) dead_letter_config: Option<DeadLetterConfigShape>,
}

/// DeadLetterConfig.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DeadLetterConfigShape {
    pub(crate) target_arn: Option<String>,
}

/// UpdateFunctionConfigurationRequest.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UpdateConfigurationRequest {
    pub(crate) runtime: Option<String>,
    pub(crate) role: Option<String>,
    pub(crate) handler: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) timeout: Option<i64>,
    pub(crate) memory_size: Option<i64>,
    pub(crate) environment: Option<EnvironmentShape>,
    pub(crate) ephemeral_storage: Option<EphemeralStorageShape>,
    pub(crate) revision_id: Option<String>,
    pub(crate) dead_letter_config: Option<DeadLetterConfigShape>,
}

/// UpdateFunctionCodeRequest.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UpdateCodeRequest {
    pub(crate) zip_file: Option<String>,
    pub(crate) s3_bucket: Option<String>,
    pub(crate) image_uri: Option<String>,
    pub(crate) dry_run: Option<bool>,
    pub(crate) revision_id: Option<String>,
    pub(crate) architectures: Option<Vec<String>>,
    pub(crate) publish: Option<bool>,
}

impl UpdateConfigurationRequest {
    pub(crate) fn settings(self) -> (FunctionSettings, Option<String>) {
        let s = FunctionSettings {
            runtime: self.runtime,
            role: self.role,
            handler: self.handler,
            description: self.description,
            timeout_s: self.timeout,
            memory_mb: self.memory_size,
            ephemeral_storage_mb: self.ephemeral_storage.and_then(|e| e.size),
            // `Environment: {}` clears the variables, as in Lambda.
            environment: self.environment.map(|e| e.variables.unwrap_or_default()),
            // `DeadLetterConfig: {}` removes the target.
            dead_letter_target: self
                .dead_letter_config
                .map(|d| d.target_arn.unwrap_or_default()),
        };
        (s, self.revision_id)
    }
}

/// Lambda's timestamp format: `2024-01-31T12:00:00.000+0000`.
pub(crate) fn timestamp(t: &nimbus_core::function::Timestamp) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string()
}

/// `CodeSha256` is the base64 of the digest, not hex.
pub(crate) fn code_sha256(hex_digest: &str) -> String {
    let raw = hex::decode(hex_digest).unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// A FunctionConfiguration: of `$LATEST`, or of a published version (its
/// `Version` is the number and its `FunctionArn` qualified with it).
pub(crate) fn configuration(spec: &FunctionSpec, id: &Identity) -> Value {
    let state = match spec.state {
        FunctionState::Pending => "Pending",
        FunctionState::Active => "Active",
        FunctionState::Inactive => "Inactive",
        FunctionState::Failed => "Failed",
    };
    let update = match spec.last_update_status {
        LastUpdateStatus::Successful => "Successful",
        LastUpdateStatus::Failed => "Failed",
        LastUpdateStatus::InProgress => "InProgress",
    };
    let mut v = json!({
        "FunctionName": spec.name,
        "FunctionArn": match spec.version {
            None => id.function_arn(&spec.name),
            Some(n) => id.qualified_arn(&spec.name, &n.to_string()),
        },
        "Runtime": spec.runtime.to_string(),
        "Role": spec.role,
        "Handler": spec.handler,
        "CodeSize": spec.code_size,
        "Description": spec.description,
        "Timeout": spec.timeout_s,
        "MemorySize": spec.memory_mb,
        "LastModified": timestamp(&spec.last_modified),
        "CodeSha256": code_sha256(&spec.code_sha256),
        "Version": spec.version_label(),
        "TracingConfig": {"Mode": "PassThrough"},
        "RevisionId": spec.revision_id,
        "State": state,
        "LastUpdateStatus": update,
        "PackageType": "Zip",
        "Architectures": spec.architectures,
        "EphemeralStorage": {"Size": spec.ephemeral_storage_mb},
        "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
        "LoggingConfig": {"LogFormat": "Text", "LogGroup": format!("/aws/lambda/{}", spec.name)},
    });
    if !spec.environment.is_empty() {
        v["Environment"] = json!({"Variables": spec.environment});
    }
    if let Some(arn) = &spec.dead_letter_target {
        v["DeadLetterConfig"] = json!({"TargetArn": arn});
    }
    v
}

/// An AliasConfiguration.
pub(crate) fn alias(function: &str, a: &nimbus_core::Alias, id: &Identity) -> Value {
    let mut v = json!({
        "AliasArn": id.qualified_arn(function, &a.name),
        "Name": a.name,
        "FunctionVersion": a.function_version,
        "Description": a.description,
        "RevisionId": a.revision_id,
    });
    if let Some((version, weight)) = &a.additional_version {
        v["RoutingConfig"] = json!({"AdditionalVersionWeights": {version.as_str(): weight}});
    }
    v
}

/// A provisioned concurrency configuration (the Get and Put responses;
/// the list items add `FunctionArn`).
pub(crate) fn provisioned(p: &nimbus_lambda::ProvisionedConfig, with_arn: bool) -> Value {
    use nimbus_lambda::ProvisionedState;
    let (status, reason) = match &p.state {
        ProvisionedState::InProgress => ("IN_PROGRESS", None),
        ProvisionedState::Ready => ("READY", None),
        ProvisionedState::Failed(r) => ("FAILED", Some(r.clone())),
    };
    let mut v = json!({
        "RequestedProvisionedConcurrentExecutions": p.requested,
        "AvailableProvisionedConcurrentExecutions": p.available,
        "AllocatedProvisionedConcurrentExecutions": p.allocated,
        "Status": status,
        "LastModified": p.last_modified.format("%Y-%m-%dT%H:%M:%S%z").to_string(),
    });
    if let Some(r) = reason {
        v["StatusReason"] = r.into();
    }
    if with_arn {
        v["FunctionArn"] = p.function_arn.clone().into();
    }
    v
}

/// One page of a Lambda listing: `{key: items}` plus `NextMarker` when
/// there is more.
pub(crate) fn page(key: &str, items: Vec<Value>, next: Option<String>) -> Value {
    let mut body = json!({ key: items });
    if let Some(n) = next {
        body["NextMarker"] = n.into();
    }
    body
}
