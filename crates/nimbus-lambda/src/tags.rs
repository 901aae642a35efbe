//! TagResource, UntagResource and ListTags on functions. Tags belong to the
//! function as a whole (every version); nimbus reads one itself,
//! `nimbus:network` ([`nimbus_core::function::NETWORK_TAG`]), when an
//! execution environment starts.

use std::collections::BTreeMap;

use nimbus_core::function::{NETWORK_TAG, validate_tags};
use nimbus_core::{LambdaError, LambdaResult};

use crate::LambdaService;

/// Lambda's limit of tags on one function.
const MAX_TAGS: usize = 50;

impl LambdaService {
    /// The function an ARN given to the tagging operations names.
    fn tagged_function(&self, arn: &str) -> LambdaResult<String> {
        let f = self.identity().parse_function_ref(arn, None)?;
        if let Some(q) = f.qualifier.as_deref().filter(|q| *q != "$LATEST") {
            return Err(LambdaError::InvalidParameterValue(format!(
                "Tags are not supported on versions or aliases ({q}); tag the function"
            )));
        }
        Ok(f.name)
    }

    /// TagResource: adds `tags` to the function (replacing values of keys
    /// it has).
    pub fn tag_resource(&self, arn: &str, tags: BTreeMap<String, String>) -> LambdaResult<()> {
        validate_tags(&tags)?;
        let name = self.tagged_function(arn)?;
        self.change_tags(&name, |t| t.extend(tags))
    }

    /// UntagResource: removes the tags with these keys.
    pub fn untag_resource(&self, arn: &str, keys: &[String]) -> LambdaResult<()> {
        let name = self.tagged_function(arn)?;
        self.change_tags(&name, |t| t.retain(|k, _| !keys.contains(k)))
    }

    /// ListTags: the function's tags.
    pub fn list_tags(&self, arn: &str) -> LambdaResult<BTreeMap<String, String>> {
        let name = self.tagged_function(arn)?;
        Ok(self
            .live(&nimbus_core::FunctionRef {
                name,
                qualifier: None,
            })?
            .spec
            .tags
            .clone())
    }

    fn change_tags(
        &self,
        name: &str,
        change: impl FnOnce(&mut BTreeMap<String, String>),
    ) -> LambdaResult<()> {
        let _w = self.write_guard();
        let f = nimbus_core::FunctionRef {
            name: name.to_string(),
            qualifier: None,
        };
        let mut spec = self.live(&f)?.spec.clone();
        let network_before = spec.tags.get(NETWORK_TAG).cloned();
        change(&mut spec.tags);
        if spec.tags.len() > MAX_TAGS {
            return Err(LambdaError::InvalidParameterValue(format!(
                "A function can have at most {MAX_TAGS} tags"
            )));
        }
        let network_changed = spec.tags.get(NETWORK_TAG) != network_before.as_ref();
        self.store
            .update_function(&spec)
            .map_err(LambdaError::internal)?;
        let versions: Vec<u32> = spec.versions.iter().filter_map(|v| v.version).collect();
        self.publish_live(spec);
        if network_changed {
            // Warm environments keep the network they started with: retire
            // them so the next invocation starts with the new one.
            self.engine.retire(name);
            for n in versions {
                self.engine.retire(&format!("{name}:{n}"));
            }
        }
        Ok(())
    }
}
