//! Concurrency controls: reserved concurrency (Put/Get/
//! DeleteFunctionConcurrency) and provisioned concurrency
//! (Put/Get/Delete/ListProvisionedConcurrencyConfigs), with the account's
//! arithmetic between them.
//!
//! Each function carves out of the account limit either its reservation
//! or, without one, the provisioned concurrency of its versions (which
//! counts toward a reservation when there is one). What is left is the
//! unreserved pool functions without a reservation share; a change that
//! would leave less than [`limits::min_unreserved_concurrency`] is refused
//! as Lambda refuses one that leaves less than 100. The engine enforces
//! the numbers (see `nimbus_runtime`'s engine).

use nimbus_core::function::{Timestamp, now};
use nimbus_core::{
    Alias, FunctionRef, FunctionSpec, LambdaError, LambdaResult, ProvisionedConcurrency, Qualifier,
    limits,
};
use nimbus_runtime::ProvisionedState;

use crate::LambdaService;

/// A provisioned concurrency configuration and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisionedConfig {
    /// The version's or alias's ARN.
    pub function_arn: String,
    pub requested: u32,
    /// Environments initialised and held for it.
    pub allocated: u32,
    /// Of those, how many can take invocations: all of them (Lambda's
    /// figures differ only while a weighted alias shifts).
    pub available: u32,
    pub state: ProvisionedState,
    pub last_modified: Timestamp,
}

/// What a function takes out of the account's concurrency.
fn carve_out(spec: &FunctionSpec) -> i64 {
    match spec.reserved_concurrency {
        Some(r) => i64::from(r),
        None => spec
            .provisioned
            .iter()
            .map(|p| i64::from(p.requested))
            .sum(),
    }
}

fn provisioned_total(spec: &FunctionSpec) -> u32 {
    spec.provisioned.iter().map(|p| p.requested).sum()
}

/// The version a provisioned configuration's qualifier stands for.
fn version_for(spec: &FunctionSpec, qualifier: &str) -> Option<String> {
    if qualifier.bytes().all(|b| b.is_ascii_digit()) {
        return Some(qualifier.to_string());
    }
    spec.alias(qualifier).map(|a| a.function_version.clone())
}

fn unpublished() -> LambdaError {
    LambdaError::InvalidParameterValue(
        "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
            .into(),
    )
}

fn config_not_found() -> LambdaError {
    LambdaError::ProvisionedConcurrencyConfigNotFound(
        "No Provisioned Concurrency Config found for this function".into(),
    )
}

impl LambdaService {
    /// The unreserved pool, with `proposed` in place of the stored spec of
    /// the same function (may be negative while checking a change).
    fn unreserved_with(&self, proposed: Option<&FunctionSpec>) -> i64 {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        let others: i64 = live
            .values()
            .filter(|l| proposed.is_none_or(|p| p.name != l.spec.name))
            .map(|l| carve_out(&l.spec))
            .sum();
        i64::from(self.engine.account_concurrency()) - others - proposed.map_or(0, carve_out)
    }

    /// `UnreservedConcurrentExecutions`: the account limit minus what
    /// every function carves out.
    pub(crate) fn unreserved_concurrency(&self, proposed: Option<&FunctionSpec>) -> u32 {
        u32::try_from(self.unreserved_with(proposed).max(0)).unwrap_or(0)
    }

    /// Tells the engine the size of the unreserved pool.
    pub(crate) fn update_unreserved(&self) {
        self.engine
            .set_unreserved_concurrency(self.unreserved_concurrency(None));
    }

    /// Refuses a change that would leave the unreserved pool below its
    /// minimum (one that shrinks it, that is: an account already below it,
    /// say after a restart with a lower `--concurrency`, may still give
    /// concurrency back).
    fn check_unreserved(&self, proposed: &FunctionSpec, field: &str) -> LambdaResult<()> {
        let min = i64::from(limits::min_unreserved_concurrency(
            self.engine.account_concurrency(),
        ));
        let after = self.unreserved_with(Some(proposed));
        if after < min && after < self.unreserved_with(None) {
            return Err(LambdaError::InvalidParameterValue(format!(
                "Specified {field} for function decreases account's UnreservedConcurrentExecution \
                 below its minimum value of [{min}]."
            )));
        }
        Ok(())
    }

    /// PutFunctionConcurrency: reserves `n` concurrent executions for the
    /// function (all versions); 0 throttles every invocation.
    pub fn put_function_concurrency(&self, f: &FunctionRef, n: i64) -> LambdaResult<u32> {
        if f.qualifier.is_some() {
            return Err(LambdaError::InvalidParameterValue(
                "PutFunctionConcurrency does not accept a qualified function name".into(),
            ));
        }
        let n = u32::try_from(n).map_err(|_| {
            LambdaError::Validation(format!(
                "1 validation error detected: Value '{n}' at 'reservedConcurrentExecutions' failed to satisfy \
                 constraint: Member must have value greater than or equal to 0"
            ))
        })?;
        let _w = self.write_guard();
        let mut spec = self.live(f)?.spec.clone();
        let provisioned = provisioned_total(&spec);
        if n < provisioned {
            return Err(LambdaError::InvalidParameterValue(format!(
                "ReservedConcurrentExecutions ({n}) must not be lower than the function's total \
                 provisioned concurrency ({provisioned})."
            )));
        }
        spec.reserved_concurrency = Some(n);
        self.check_unreserved(&spec, "ReservedConcurrentExecutions")?;
        self.store
            .update_function(&spec)
            .map_err(LambdaError::internal)?;
        self.engine.set_reserved_concurrency(&spec.name, Some(n));
        self.publish_live(spec);
        self.update_unreserved();
        Ok(n)
    }

    /// GetFunctionConcurrency.
    pub fn function_concurrency(&self, f: &FunctionRef) -> LambdaResult<Option<u32>> {
        if f.qualifier.is_some() {
            return Err(LambdaError::InvalidParameterValue(
                "GetFunctionConcurrency does not accept a qualified function name".into(),
            ));
        }
        Ok(self.live(f)?.spec.reserved_concurrency)
    }

    /// DeleteFunctionConcurrency: the function shares the unreserved pool
    /// again.
    pub fn delete_function_concurrency(&self, f: &FunctionRef) -> LambdaResult<()> {
        if f.qualifier.is_some() {
            return Err(LambdaError::InvalidParameterValue(
                "DeleteFunctionConcurrency does not accept a qualified function name".into(),
            ));
        }
        let _w = self.write_guard();
        let mut spec = self.live(f)?.spec.clone();
        if spec.reserved_concurrency.is_none() {
            return Ok(());
        }
        spec.reserved_concurrency = None;
        // Its provisioned concurrency now comes out of the unreserved pool.
        self.check_unreserved(&spec, "ProvisionedConcurrentExecutions")?;
        self.store
            .update_function(&spec)
            .map_err(LambdaError::internal)?;
        self.engine.set_reserved_concurrency(&spec.name, None);
        self.publish_live(spec);
        self.update_unreserved();
        Ok(())
    }

    /// The qualifier of a provisioned concurrency call, checked: a
    /// published version or an alias of one, not `$LATEST`.
    fn provisioned_qualifier(&self, f: &FunctionRef) -> LambdaResult<String> {
        let q = f.parsed_qualifier()?.ok_or_else(|| {
            LambdaError::Validation(
                "1 validation error detected: Value null at 'qualifier' failed to satisfy constraint: \
                 Member must not be null"
                    .into(),
            )
        })?;
        if q == Qualifier::Latest {
            self.live(&FunctionRef {
                name: f.name.clone(),
                qualifier: None,
            })?;
            return Err(unpublished());
        }
        let target = self.resolve(f)?;
        if target.version.is_none() {
            return Err(unpublished());
        }
        Ok(q.to_string())
    }

    /// Checks that an alias may carry `requested` provisioned environments:
    /// it points at one published version that has no other configuration.
    pub(crate) fn check_provisioned_alias(
        &self,
        spec: &FunctionSpec,
        alias: &Alias,
        _requested: u32,
    ) -> LambdaResult<()> {
        if alias.function_version == "$LATEST" {
            return Err(unpublished());
        }
        if alias.additional_version.is_some() {
            return Err(LambdaError::InvalidParameterValue(format!(
                "Alias {} routes invocations to two versions; nimbus provisions concurrency only for an \
                 alias that points at one version.",
                alias.name
            )));
        }
        self.check_one_config_per_version(spec, &alias.name, &alias.function_version)
    }

    /// A version has at most one configuration: its own or one alias's.
    fn check_one_config_per_version(
        &self,
        spec: &FunctionSpec,
        qualifier: &str,
        version: &str,
    ) -> LambdaResult<()> {
        let other = spec.provisioned.iter().find(|p| {
            p.qualifier != qualifier && version_for(spec, &p.qualifier).as_deref() == Some(version)
        });
        match other {
            Some(p) => Err(LambdaError::ResourceConflict(format!(
                "Version {version} already has provisioned concurrency through {}; \
                 delete that configuration first.",
                self.identity.qualified_arn(&spec.name, &p.qualifier)
            ))),
            None => Ok(()),
        }
    }

    /// Starts keeping `n` environments of a version initialised.
    pub(crate) fn provision_version(&self, function: &str, version: &str, n: u32) {
        let handle = self
            .live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(function)
            .and_then(|l| l.versions.get(&version.parse().ok()?).cloned());
        match handle {
            Some(h) => self.engine.provision((*h).clone(), n),
            None => tracing::warn!(
                function,
                version,
                "provisioned concurrency for a version that does not exist"
            ),
        }
    }

    fn provisioned_view(
        &self,
        spec: &FunctionSpec,
        p: &ProvisionedConcurrency,
    ) -> ProvisionedConfig {
        let status = version_for(spec, &p.qualifier)
            .and_then(|v| self.engine.provisioned_status(&spec.name, &v));
        let (allocated, state) = match status {
            Some(s) => (s.allocated.min(p.requested), s.state),
            None => (0, ProvisionedState::InProgress),
        };
        ProvisionedConfig {
            function_arn: self.identity.qualified_arn(&spec.name, &p.qualifier),
            requested: p.requested,
            allocated,
            available: allocated,
            state,
            last_modified: p.last_modified,
        }
    }

    /// PutProvisionedConcurrencyConfig: keeps `n` environments of a version
    /// (or an alias's version) initialised, started in the background; the
    /// result is IN_PROGRESS until they all are.
    pub fn put_provisioned_concurrency(
        &self,
        f: &FunctionRef,
        n: i64,
    ) -> LambdaResult<ProvisionedConfig> {
        let n = u32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
            LambdaError::Validation(format!(
                "1 validation error detected: Value '{n}' at 'provisionedConcurrentExecutions' failed to \
                 satisfy constraint: Member must have value greater than or equal to 1"
            ))
        })?;
        let _w = self.write_guard();
        let qualifier = self.provisioned_qualifier(f)?;
        let mut spec = self
            .live(&FunctionRef {
                name: f.name.clone(),
                qualifier: None,
            })?
            .spec
            .clone();
        let version = version_for(&spec, &qualifier).ok_or_else(|| self.not_found(f))?;
        match spec.alias(&qualifier) {
            Some(alias) => self.check_provisioned_alias(&spec, alias, n)?,
            None => self.check_one_config_per_version(&spec, &qualifier, &version)?,
        }
        let config = ProvisionedConcurrency {
            qualifier: qualifier.clone(),
            requested: n,
            last_modified: now(),
        };
        match spec
            .provisioned
            .iter_mut()
            .find(|p| p.qualifier == qualifier)
        {
            Some(p) => *p = config.clone(),
            None => spec.provisioned.push(config.clone()),
        }
        if let Some(reserved) = spec.reserved_concurrency {
            let total = provisioned_total(&spec);
            if total > reserved {
                return Err(LambdaError::InvalidParameterValue(format!(
                    "Requested Provisioned Concurrency ({total} in total for the function) should not be \
                     greater than the reservedConcurrentExecution for function ({reserved})."
                )));
            }
        } else {
            self.check_unreserved(&spec, "ProvisionedConcurrentExecutions")?;
        }
        self.store
            .update_function(&spec)
            .map_err(LambdaError::internal)?;
        self.publish_live(spec.clone());
        self.provision_version(&spec.name, &version, n);
        self.update_unreserved();
        Ok(self.provisioned_view(&spec, &config))
    }

    /// GetProvisionedConcurrencyConfig.
    pub fn provisioned_concurrency(&self, f: &FunctionRef) -> LambdaResult<ProvisionedConfig> {
        let qualifier = match f.parsed_qualifier()? {
            Some(Qualifier::Latest) => {
                self.resolve(f)?;
                return Err(config_not_found());
            }
            _ => self.provisioned_qualifier(f)?,
        };
        let live = self.resolve(f)?.live;
        let p = live
            .spec
            .provisioned
            .iter()
            .find(|p| p.qualifier == qualifier)
            .ok_or_else(config_not_found)?;
        Ok(self.provisioned_view(&live.spec, p))
    }

    /// DeleteProvisionedConcurrencyConfig: the environments are stopped.
    pub fn delete_provisioned_concurrency(&self, f: &FunctionRef) -> LambdaResult<()> {
        let _w = self.write_guard();
        let qualifier = self.provisioned_qualifier(f)?;
        let mut spec = self.resolve(f)?.live.spec.clone();
        let Some(pos) = spec
            .provisioned
            .iter()
            .position(|p| p.qualifier == qualifier)
        else {
            return Err(LambdaError::ResourceNotFound(
                "No Provisioned Concurrency Config found for this function".into(),
            ));
        };
        spec.provisioned.remove(pos);
        let version = version_for(&spec, &qualifier);
        self.store
            .update_function(&spec)
            .map_err(LambdaError::internal)?;
        self.publish_live(spec.clone());
        if let Some(v) = version {
            self.engine.unprovision(&spec.name, &v);
        }
        self.update_unreserved();
        Ok(())
    }

    /// ListProvisionedConcurrencyConfigs: up to `max_items` after `marker`
    /// (the last qualifier of the previous page), and the next page's
    /// marker.
    pub fn list_provisioned_concurrency(
        &self,
        f: &FunctionRef,
        marker: Option<&str>,
        max_items: usize,
    ) -> LambdaResult<(Vec<ProvisionedConfig>, Option<String>)> {
        if f.qualifier.is_some() {
            return Err(LambdaError::InvalidParameterValue(
                "ListProvisionedConcurrencyConfigs does not accept a qualified function name"
                    .into(),
            ));
        }
        let live = self.live(f)?;
        let mut all: Vec<&ProvisionedConcurrency> = live.spec.provisioned.iter().collect();
        all.sort_by(|a, b| a.qualifier.cmp(&b.qualifier));
        let all: Vec<&ProvisionedConcurrency> = all
            .into_iter()
            .filter(|p| marker.is_none_or(|m| p.qualifier.as_str() > m))
            .collect();
        let page: Vec<&ProvisionedConcurrency> = all.iter().take(max_items).copied().collect();
        let next = (all.len() > page.len())
            .then(|| page.last().map(|p| p.qualifier.clone()))
            .flatten();
        Ok((
            page.into_iter()
                .map(|p| self.provisioned_view(&live.spec, p))
                .collect(),
            next,
        ))
    }

    /// Starts the provisioned environments of every stored configuration
    /// (server start). Call once the API serves requests: functions may
    /// call it while they initialise.
    pub fn restore_provisioned_concurrency(&self) {
        let live: Vec<FunctionSpec> = self
            .live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|l| l.spec.clone())
            .collect();
        for spec in live {
            for p in &spec.provisioned {
                if let Some(v) = version_for(&spec, &p.qualifier) {
                    self.provision_version(&spec.name, &v, p.requested);
                }
            }
        }
    }
}
