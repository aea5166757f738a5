//! Schema versions of an event type: listing, adding a version, checking one.

use sluice_schema::CompatibilityMode;
use sluice_schema::event_type::EventTypeSchema;

use crate::Bus;
use crate::error::{BusError, Result};
use crate::registry::{evolve_schema, mode_name, same_json};

/// The answer of a compatibility check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compatibility {
    pub is_compatible: bool,
    pub compatibility_mode: CompatibilityMode,
    /// Why not, or what kind of change it is.
    pub reason: String,
    /// The version the schema would get.
    pub version: Option<String>,
}

impl Bus {
    /// Every schema version, newest first.
    pub fn schema_versions(&self, name: &str) -> Result<Vec<EventTypeSchema>> {
        let mut v = self.registry.schema_versions(name)?;
        v.reverse();
        Ok(v)
    }

    /// Adds a schema version (as a PUT of the event type with this schema would). With
    /// `fetch`, a schema equal to an existing version returns that version instead.
    pub async fn add_schema(
        &self,
        name: &str,
        schema: EventTypeSchema,
        fetch: bool,
    ) -> Result<EventTypeSchema> {
        if fetch
            && let Some(existing) = self
                .registry
                .schema_versions(name)?
                .into_iter()
                .find(|v| same_json(&v.schema, &schema.schema))
        {
            return Ok(existing);
        }
        let mut et = self.event_type(name)?;
        et.schema.schema = schema.schema;
        et.schema.schema_type = schema.schema_type;
        Ok(self.registry.update(name, et).await?.schema)
    }

    /// Whether `schema` could follow version `version` (or `latest`) of `name`.
    pub fn check_schema(&self, name: &str, version: &str, schema: &str) -> Result<Compatibility> {
        let mut et = self.event_type(name)?;
        if version != "latest" && version != et.schema.version {
            let old = self
                .registry
                .schema_versions(name)?
                .into_iter()
                .find(|v| v.version == version)
                .ok_or_else(|| {
                    BusError::SchemaVersionNotFound(name.to_string(), version.to_string())
                })?;
            et.schema = old;
        }
        let mode = et.compatibility_mode;
        Ok(match evolve_schema(&et, schema, mode) {
            Ok((next, level)) => Compatibility {
                is_compatible: true,
                compatibility_mode: mode,
                reason: format!(
                    "a {level:?} change under compatibility_mode {}",
                    mode_name(mode)
                )
                .to_lowercase(),
                version: Some(next),
            },
            Err(BusError::Unprocessable(problems)) => Compatibility {
                is_compatible: false,
                compatibility_mode: mode,
                reason: problems.join(" "),
                version: None,
            },
            Err(e) => return Err(e),
        })
    }
}
