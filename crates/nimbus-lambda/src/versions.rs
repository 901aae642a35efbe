//! Versions and aliases: PublishVersion, ListVersionsByFunction, deleting
//! a version, CreateAlias / GetAlias / UpdateAlias / DeleteAlias /
//! ListAliases, and resolving a qualifier to the version it names.
//!
//! A published version is a frozen copy of `$LATEST`'s code and
//! configuration ([`FunctionSpec::snapshot`]), kept in the function's own
//! record so a function and its versions change together. Its package is
//! the blob (and unpacked directory) of the digest it was published with,
//! which stays as long as any version or `$LATEST` uses it.

use std::collections::BTreeMap;
use std::sync::Arc;

use nimbus_core::function::now;
use nimbus_core::{
    Alias, FunctionRef, FunctionSpec, LambdaError, LambdaResult, Qualifier, validate_alias_name,
};
use nimbus_runtime::FunctionHandle;

use crate::{LambdaService, Live};

/// A function as a qualifier names it, for GetFunction and
/// GetFunctionConfiguration.
#[derive(Debug, Clone)]
pub struct FunctionView {
    /// The code and configuration of the version named: `$LATEST`'s, or a
    /// published version's (`version` set).
    pub spec: FunctionSpec,
    /// The alias that named it, if one did.
    pub alias: Option<String>,
    /// The function's tags (they belong to the function, not a version).
    pub tags: BTreeMap<String, String>,
    /// The function's reserved concurrency.
    pub reserved_concurrency: Option<u32>,
}

/// A qualifier resolved against a live function.
pub(crate) struct Target {
    pub(crate) live: Arc<Live>,
    /// `None` for `$LATEST`.
    pub(crate) version: Option<u32>,
    /// The alias that named it, if one did.
    pub(crate) alias: Option<Alias>,
}

impl Target {
    /// The spec of the version named.
    pub(crate) fn spec(&self) -> &FunctionSpec {
        match self.version {
            None => &self.live.spec,
            Some(n) => self.live.spec.published(n).unwrap_or(&self.live.spec),
        }
    }

    /// How the engine runs the version an invocation goes to: the one
    /// named, or for an alias with routing weights, its additional version
    /// for that share of invocations.
    pub(crate) fn pick_version(&self) -> Arc<FunctionHandle> {
        let routed = self.alias.as_ref().and_then(|a| {
            let (version, weight) = a.additional_version.as_ref()?;
            (random_unit() < *weight)
                .then(|| version.parse::<u32>().ok())
                .flatten()
        });
        match routed.or(self.version) {
            None => self.live.handle.clone(),
            Some(n) => self
                .live
                .versions
                .get(&n)
                .cloned()
                .unwrap_or_else(|| self.live.handle.clone()),
        }
    }
}

/// A uniform number in [0, 1), from 53 of a v4 UUID's random bits (its
/// low 62 bits are random; the version and variant bits are above them).
fn random_unit() -> f64 {
    const BITS: u64 = (1 << 53) - 1;
    let bits = uuid::Uuid::new_v4().as_u128() as u64 & BITS;
    bits as f64 / (1u64 << 53) as f64
}

/// `$LATEST` or a version number, as an alias's `FunctionVersion`.
fn version_of(s: &str) -> Option<u32> {
    s.parse().ok()
}

impl LambdaService {
    pub(crate) fn not_found(&self, f: &FunctionRef) -> LambdaError {
        let arn = match &f.qualifier {
            Some(q) => self.identity.qualified_arn(&f.name, q),
            None => self.identity.function_arn(&f.name),
        };
        LambdaError::ResourceNotFound(format!("Function not found: {arn}"))
    }

    /// The function and version a reference names.
    pub(crate) fn resolve(&self, f: &FunctionRef) -> LambdaResult<Target> {
        let qualifier = f.parsed_qualifier()?;
        let live = self
            .live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&f.name)
            .cloned()
            .ok_or_else(|| self.not_found(f))?;
        match qualifier {
            None | Some(Qualifier::Latest) => Ok(Target {
                live,
                version: None,
                alias: None,
            }),
            Some(Qualifier::Version(n)) if live.versions.contains_key(&n) => Ok(Target {
                live,
                version: Some(n),
                alias: None,
            }),
            Some(Qualifier::Version(_)) => Err(self.not_found(f)),
            Some(Qualifier::Alias(name)) => {
                let alias = live
                    .spec
                    .alias(&name)
                    .cloned()
                    .ok_or_else(|| self.not_found(f))?;
                Ok(Target {
                    version: version_of(&alias.function_version),
                    alias: Some(alias),
                    live,
                })
            }
        }
    }

    /// GetFunction / GetFunctionConfiguration, of `$LATEST`, a version or
    /// the version an alias points at.
    pub fn get_function(&self, f: &FunctionRef) -> LambdaResult<FunctionView> {
        let t = self.resolve(f)?;
        Ok(FunctionView {
            spec: t.spec().clone(),
            alias: t.alias.map(|a| a.name),
            tags: t.live.spec.tags.clone(),
            reserved_concurrency: t.live.spec.reserved_concurrency,
        })
    }

    /// PublishVersion: freezes `$LATEST` as the next version. When
    /// `$LATEST` has not changed since the last version, that version is
    /// returned and nothing is published. `code_sha256` (hex) and
    /// `revision_id`, when given, must match `$LATEST`'s.
    pub fn publish_version(
        &self,
        f: &FunctionRef,
        code_sha256: Option<&str>,
        description: Option<String>,
        revision_id: Option<&str>,
    ) -> LambdaResult<FunctionSpec> {
        if f.qualifier.is_some() {
            return Err(LambdaError::InvalidParameterValue(
                "PublishVersion does not accept a qualified function name".into(),
            ));
        }
        if let Some(d) = &description
            && d.chars().count() > 256
        {
            return Err(LambdaError::Validation(format!(
                "1 validation error detected: Value '{d}' at 'description' failed to satisfy constraint: \
                 Member must have length less than or equal to 256"
            )));
        }
        let _w = self.write_guard();
        let spec = &self.live(f)?.spec;
        Self::check_revision(spec, revision_id)?;
        if let Some(sha) = code_sha256
            && sha != spec.code_sha256
        {
            return Err(LambdaError::InvalidParameterValue(
                "CodeSHA256 does not match the CodeSHA256 of $LATEST. Please try again with the CodeSHA256 of $LATEST."
                    .into(),
            ));
        }
        self.publish_locked(&f.name, description)
    }

    /// Publishes `$LATEST` of `name`; the caller holds the write guard.
    pub(crate) fn publish_locked(
        &self,
        name: &str,
        description: Option<String>,
    ) -> LambdaResult<FunctionSpec> {
        let f = FunctionRef {
            name: name.to_string(),
            qualifier: None,
        };
        let mut spec = self.live(&f)?.spec.clone();
        if let Some(last) = spec.versions.last()
            && last.same_code_and_configuration(&spec)
        {
            return Ok(last.clone());
        }
        let n = spec.last_version + 1;
        let version = spec.snapshot(n, description, uuid::Uuid::new_v4().to_string(), now());
        spec.last_version = n;
        spec.versions.push(version.clone());
        self.store
            .update_function(&spec)
            .map_err(LambdaError::internal)?;
        self.publish_live(spec);
        Ok(version)
    }

    /// ListVersionsByFunction: `$LATEST`, then the published versions in
    /// order; up to `max_items` after `marker` (the last version of the
    /// previous page), and the next page's marker.
    pub fn list_versions(
        &self,
        f: &FunctionRef,
        marker: Option<&str>,
        max_items: usize,
    ) -> LambdaResult<(Vec<FunctionSpec>, Option<String>)> {
        let live = self.live(f)?;
        let all: Vec<&FunctionSpec> = std::iter::once(&live.spec)
            .chain(&live.spec.versions)
            .collect();
        let start = match marker {
            None => 0,
            Some(m) => {
                all.iter()
                    .position(|s| s.version_label() == m)
                    .ok_or_else(|| {
                        LambdaError::InvalidParameterValue(format!("Invalid marker: {m}"))
                    })?
                    + 1
            }
        };
        let page: Vec<FunctionSpec> = all
            .iter()
            .skip(start)
            .take(max_items)
            .map(|s| (*s).clone())
            .collect();
        let next = (start + page.len() < all.len())
            .then(|| page.last().map(FunctionSpec::version_label))
            .flatten();
        Ok((page, next))
    }

    /// DeleteFunction with a version number: refused while an alias points
    /// at it; its provisioned concurrency goes with it.
    pub(crate) fn delete_version(&self, f: &FunctionRef, n: u32) -> LambdaResult<()> {
        let _w = self.write_guard();
        let target = self.resolve(f)?;
        let mut spec = target.live.spec.clone();
        let label = n.to_string();
        let users: Vec<&str> = spec
            .aliases
            .iter()
            .filter(|a| {
                a.function_version == label
                    || a.additional_version
                        .as_ref()
                        .is_some_and(|(v, _)| *v == label)
            })
            .map(|a| a.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(LambdaError::ResourceConflict(format!(
                "Unable to delete version because the following aliases reference it: [{}]",
                users.join(", ")
            )));
        }
        let Some(pos) = spec.versions.iter().position(|v| v.version == Some(n)) else {
            return Err(self.not_found(f));
        };
        let removed = spec.versions.remove(pos);
        spec.provisioned.retain(|p| p.qualifier != label);
        self.store
            .update_function(&spec)
            .map_err(LambdaError::internal)?;
        self.publish_live(spec);
        self.engine.retire_version(&f.name, &label);
        self.update_unreserved();
        self.collect_code(&removed.code_sha256);
        Ok(())
    }

    /// Checks an alias's versions: each exists; routing weights need two
    /// different published versions and a weight between 0 and 1.
    fn check_alias_target(
        &self,
        f: &FunctionRef,
        spec: &FunctionSpec,
        version: &str,
        routing: Option<&(String, f64)>,
    ) -> LambdaResult<()> {
        let exists =
            |v: &str| v == "$LATEST" || version_of(v).is_some_and(|n| spec.published(n).is_some());
        let valid_version = |v: &str| v == "$LATEST" || version_of(v).is_some();
        for v in std::iter::once(version).chain(routing.map(|(v, _)| v.as_str())) {
            if !valid_version(v) {
                return Err(LambdaError::Validation(format!(
                    "1 validation error detected: Value '{v}' at 'functionVersion' failed to satisfy constraint: \
                     Member must satisfy regular expression pattern: (\\$LATEST|[0-9]+)"
                )));
            }
            if !exists(v) {
                return Err(LambdaError::ResourceNotFound(format!(
                    "Function not found: {}",
                    self.identity.qualified_arn(&f.name, v)
                )));
            }
        }
        if let Some((extra, weight)) = routing {
            if !(0.0..=1.0).contains(weight) {
                return Err(LambdaError::Validation(format!(
                    "1 validation error detected: Value '{weight}' at 'routingConfig.additionalVersionWeights' \
                     failed to satisfy constraint: Map value must satisfy constraint: \
                     [Member must have value less than or equal to 1.0, Member must have value greater than or equal to 0.0]"
                )));
            }
            if version == "$LATEST" || extra == "$LATEST" {
                return Err(LambdaError::InvalidParameterValue(
                    "$LATEST is not supported for an alias pointing to more than 1 version".into(),
                ));
            }
            if extra == version {
                return Err(LambdaError::InvalidParameterValue(format!(
                    "Invalid function version {extra}. Function version {extra} is already included in routing configuration."
                )));
            }
        }
        Ok(())
    }

    /// CreateAlias.
    pub fn create_alias(
        &self,
        f: &FunctionRef,
        name: &str,
        function_version: &str,
        description: Option<String>,
        routing: Option<(String, f64)>,
    ) -> LambdaResult<Alias> {
        validate_alias_name(name)?;
        check_description(description.as_deref())?;
        let _w = self.write_guard();
        let mut spec = self.live(&unqualified(f)?)?.spec.clone();
        self.check_alias_target(f, &spec, function_version, routing.as_ref())?;
        if spec.alias(name).is_some() {
            return Err(LambdaError::ResourceConflict(format!(
                "Alias already exists: {}",
                self.identity.qualified_arn(&f.name, name)
            )));
        }
        let alias = Alias {
            name: name.to_string(),
            function_version: function_version.to_string(),
            description: description.unwrap_or_default(),
            additional_version: routing,
            revision_id: uuid::Uuid::new_v4().to_string(),
        };
        spec.aliases.push(alias.clone());
        spec.aliases.sort_by(|a, b| a.name.cmp(&b.name));
        self.store
            .update_function(&spec)
            .map_err(LambdaError::internal)?;
        self.publish_live(spec);
        Ok(alias)
    }

    /// GetAlias.
    pub fn get_alias(&self, f: &FunctionRef, name: &str) -> LambdaResult<Alias> {
        let live = self.live(&unqualified(f)?)?;
        live.spec
            .alias(name)
            .cloned()
            .ok_or_else(|| self.alias_not_found(&f.name, name))
    }

    fn alias_not_found(&self, function: &str, alias: &str) -> LambdaError {
        LambdaError::ResourceNotFound(format!(
            "Alias not found: {}",
            self.identity.qualified_arn(function, alias)
        ))
    }

    /// UpdateAlias: `None` keeps a field; `routing` of `Some(None)` removes
    /// the routing weights. Provisioned concurrency on the alias follows it
    /// to its new version.
    pub fn update_alias(
        &self,
        f: &FunctionRef,
        name: &str,
        function_version: Option<&str>,
        description: Option<String>,
        routing: Option<Option<(String, f64)>>,
        revision_id: Option<&str>,
    ) -> LambdaResult<Alias> {
        check_description(description.as_deref())?;
        let _w = self.write_guard();
        let mut spec = self.live(&unqualified(f)?)?.spec.clone();
        let Some(pos) = spec.aliases.iter().position(|a| a.name == name) else {
            return Err(self.alias_not_found(&f.name, name));
        };
        let old = spec.aliases[pos].clone();
        if revision_id.is_some_and(|r| r != old.revision_id) {
            return Err(LambdaError::PreconditionFailed(
                "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id".into(),
            ));
        }
        let mut alias = old.clone();
        if let Some(v) = function_version {
            alias.function_version = v.to_string();
        }
        if let Some(d) = description {
            alias.description = d;
        }
        if let Some(r) = routing {
            alias.additional_version = r;
        }
        self.check_alias_target(
            f,
            &spec,
            &alias.function_version,
            alias.additional_version.as_ref(),
        )?;
        let provisioned = spec
            .provisioned
            .iter()
            .find(|p| p.qualifier == name)
            .cloned();
        if let Some(p) = &provisioned {
            self.check_provisioned_alias(&spec, &alias, p.requested)?;
        }
        alias.revision_id = uuid::Uuid::new_v4().to_string();
        spec.aliases[pos] = alias.clone();
        self.store
            .update_function(&spec)
            .map_err(LambdaError::internal)?;
        self.publish_live(spec);
        if let Some(p) = provisioned
            && old.function_version != alias.function_version
        {
            self.engine.unprovision(&f.name, &old.function_version);
            self.provision_version(&f.name, &alias.function_version, p.requested);
        }
        Ok(alias)
    }

    /// DeleteAlias (nothing to do for an alias that does not exist, as in
    /// Lambda); its provisioned concurrency goes with it.
    pub fn delete_alias(&self, f: &FunctionRef, name: &str) -> LambdaResult<()> {
        let _w = self.write_guard();
        let mut spec = self.live(&unqualified(f)?)?.spec.clone();
        let Some(pos) = spec.aliases.iter().position(|a| a.name == name) else {
            return Ok(());
        };
        let alias = spec.aliases.remove(pos);
        let had_provisioned = spec.provisioned.iter().any(|p| p.qualifier == name);
        spec.provisioned.retain(|p| p.qualifier != name);
        self.store
            .update_function(&spec)
            .map_err(LambdaError::internal)?;
        self.publish_live(spec);
        if had_provisioned {
            self.engine.unprovision(&f.name, &alias.function_version);
            self.update_unreserved();
        }
        Ok(())
    }

    /// ListAliases, optionally only those pointing at `function_version`;
    /// up to `max_items` after `marker` (the last alias name of the
    /// previous page), and the next page's marker.
    pub fn list_aliases(
        &self,
        f: &FunctionRef,
        function_version: Option<&str>,
        marker: Option<&str>,
        max_items: usize,
    ) -> LambdaResult<(Vec<Alias>, Option<String>)> {
        let live = self.live(&unqualified(f)?)?;
        let all: Vec<&Alias> = live
            .spec
            .aliases
            .iter()
            .filter(|a| function_version.is_none_or(|v| a.function_version == v))
            .filter(|a| marker.is_none_or(|m| a.name.as_str() > m))
            .collect();
        let page: Vec<Alias> = all.iter().take(max_items).map(|a| (*a).clone()).collect();
        let next = (all.len() > page.len())
            .then(|| page.last().map(|a| a.name.clone()))
            .flatten();
        Ok((page, next))
    }
}

/// Alias operations name the function without a qualifier.
fn unqualified(f: &FunctionRef) -> LambdaResult<FunctionRef> {
    match f.qualifier.as_deref() {
        None => Ok(f.clone()),
        Some(_) => Err(LambdaError::InvalidParameterValue(
            "The function name must not be qualified for this operation".into(),
        )),
    }
}

fn check_description(d: Option<&str>) -> LambdaResult<()> {
    match d {
        Some(d) if d.chars().count() > 256 => Err(LambdaError::Validation(format!(
            "1 validation error detected: Value '{d}' at 'description' failed to satisfy constraint: \
             Member must have length less than or equal to 256"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_units_spread_over_zero_to_one() {
        let draws: Vec<f64> = (0..2000).map(|_| super::random_unit()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let low = draws.iter().filter(|d| **d < 0.5).count();
        assert!((800..1200).contains(&low), "{low} of 2000 below 0.5");
    }
}
