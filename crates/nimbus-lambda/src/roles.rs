//! Execution roles: each environment runs with temporary credentials of
//! its function's role, as Lambda's do.

use std::sync::Arc;
use std::time::Duration;

use nimbus_iam::{IamService, TrustedParty};
use nimbus_runtime::{CredentialSource, TempCredentials};

/// How long an environment's role session lasts. Environments stop taking
/// invocations 15 minutes before (the engine's margin), so a warm
/// environment is replaced, with fresh credentials, well before they lapse.
const SESSION: Duration = Duration::from_secs(6 * 3600);

/// The engine's [`CredentialSource`]: STS sessions for execution roles,
/// issued only while the role still trusts Lambda.
#[derive(Debug, Clone)]
pub struct ExecutionRoleCredentials(pub Arc<IamService>);

impl CredentialSource for ExecutionRoleCredentials {
    fn issue(&self, role_arn: &str, session_name: &str) -> Option<TempCredentials> {
        let role = self.0.role_by_arn(role_arn)?;
        if !self
            .0
            .trust_allows(&role, &TrustedParty::Service("lambda.amazonaws.com"))
        {
            return None;
        }
        let session = self
            .0
            .service_session(role_arn, session_name, SESSION.as_secs() as u32)
            .ok()?;
        Some(TempCredentials {
            access_key_id: session.access_key_id,
            secret_access_key: session.secret,
            session_token: session.token,
            valid_for: SESSION,
        })
    }
}
