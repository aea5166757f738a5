//! The event bus: the event type registry (kept in the log) and publishing. HTTP-free:
//! `sluice-http` maps its calls and errors onto Nakadi's API.

mod config;
mod error;
mod publish;
pub mod registry;

use std::sync::Arc;

use sluice_log::Log;
use sluice_schema::EventType;

pub use config::BusConfig;
pub use error::{BusError, Result};
pub use publish::{ItemOutcome, ItemStatus, Published, Publisher};
pub use registry::{Registered, Registry};

/// The bus over one log.
#[derive(Debug)]
pub struct Bus {
    log: Arc<dyn Log>,
    registry: Registry,
    config: BusConfig,
}

impl Bus {
    /// Opens the bus: replays the registry from the log.
    pub async fn open(log: Arc<dyn Log>, config: BusConfig) -> Result<Bus> {
        let registry = Registry::open(log.clone()).await?;
        Ok(Bus {
            log,
            registry,
            config,
        })
    }

    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    pub fn log(&self) -> &Arc<dyn Log> {
        &self.log
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub async fn create_event_type(&self, et: EventType) -> Result<EventType> {
        self.registry.create(et).await
    }

    pub async fn update_event_type(&self, name: &str, et: EventType) -> Result<EventType> {
        self.registry.update(name, et).await
    }

    pub async fn delete_event_type(&self, name: &str) -> Result<()> {
        self.registry.delete(name).await
    }

    pub fn event_type(&self, name: &str) -> Result<EventType> {
        Ok(self.registry.require(name)?.event_type().clone())
    }

    pub fn event_types(&self) -> Vec<EventType> {
        self.registry.list()
    }

    /// Publishes a JSON array of events to `name`, all or nothing on validation.
    pub async fn publish(
        &self,
        name: &str,
        body: &[u8],
        publisher: &Publisher,
    ) -> Result<Published> {
        publish::publish(
            &self.registry,
            &self.log,
            self.config.max_event_bytes,
            name,
            body,
            publisher,
        )
        .await
    }
}
