//! Nakadi's low-level API: reading an event type's partitions from cursors the client
//! keeps (no subscription, no commits), and arithmetic on cursors.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::cursor::{self, CursorOffset};
use crate::error::{BusError, Result};
use crate::subscriptions::{StreamParams, read_direct};
use crate::{Bus, PartitionInfo};

/// A position in one partition, as the low-level API names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub partition: String,
    pub offset: String,
}

fn bounds(infos: &[PartitionInfo], c: &Cursor) -> Result<(u32, CursorOffset, u64, u64), String> {
    let p = c
        .partition
        .parse::<u32>()
        .ok()
        .filter(|p| (*p as usize) < infos.len())
        .ok_or_else(|| format!("there is no partition {:?}", c.partition))?;
    let offset = CursorOffset::parse(&c.offset)
        .ok_or_else(|| format!("{:?} is not a cursor offset", c.offset))?;
    let info = &infos[p as usize];
    let oldest = match info.oldest {
        CursorOffset::At(o) => o,
        CursorOffset::Begin => 0,
    };
    Ok((p, offset, oldest, info.latest))
}

impl Bus {
    /// Streams `name` from `cursors` (each partition named once, read after its
    /// offset), or every partition from its newest event when `None`.
    pub async fn read_events(
        &self,
        name: &str,
        cursors: Option<&[Cursor]>,
        params: &StreamParams,
    ) -> Result<mpsc::Receiver<Bytes>> {
        let params = params
            .resolve(self.config.max_commit_timeout_sec)
            .map_err(BusError::Unprocessable)?;
        let infos = self.partitions(name).await?;
        let starts = match cursors {
            None => infos
                .iter()
                .map(|i| ((name.to_string(), i.partition), i.newest))
                .collect(),
            Some(list) => {
                let mut starts = Vec::new();
                let mut problems = Vec::new();
                for c in list {
                    match bounds(&infos, c).and_then(|(p, offset, oldest, latest)| {
                        cursor::position(offset, oldest, latest).map(|_| (p, offset))
                    }) {
                        Ok((p, _)) if starts.iter().any(|((_, q), _)| *q == p) => {
                            problems.push(format!("partition {p} is named twice"));
                        }
                        Ok((p, offset)) => starts.push(((name.to_string(), p), offset)),
                        Err(e) => problems.push(format!("partition {}: {e}", c.partition)),
                    }
                }
                if !problems.is_empty() {
                    return Err(BusError::PreconditionFailed(problems.join("; ")));
                }
                starts
            }
        };
        Ok(read_direct(self.log.clone(), starts, params))
    }

    /// Events between two cursors of one partition (`initial` exclusive, `last`
    /// inclusive; negative when `last` comes first).
    pub async fn cursor_distance(
        &self,
        name: &str,
        initial: &Cursor,
        last: &Cursor,
    ) -> Result<i64> {
        if initial.partition != last.partition {
            return Err(BusError::Unprocessable(vec![format!(
                "cursors of different partitions ({} and {})",
                initial.partition, last.partition
            )]));
        }
        let infos = self.partitions(name).await?;
        let pos = |c: &Cursor| {
            bounds(&infos, c)
                .and_then(|(_, o, oldest, latest)| cursor::position(o, oldest, latest))
                .map_err(|e| BusError::Unprocessable(vec![e]))
        };
        Ok((pos(last)? - pos(initial)?) as i64)
    }

    /// `c` moved by `shift` events.
    pub async fn shift_cursor(&self, name: &str, c: &Cursor, shift: i64) -> Result<Cursor> {
        let infos = self.partitions(name).await?;
        let moved = bounds(&infos, c)
            .and_then(|(_, o, oldest, latest)| cursor::shifted(o, shift, oldest, latest))
            .map_err(|e| BusError::Unprocessable(vec![e]))?;
        Ok(Cursor {
            partition: c.partition.clone(),
            offset: moved.to_string(),
        })
    }

    /// The partition of `c` and the events after it.
    pub async fn cursor_lag(&self, name: &str, c: &Cursor) -> Result<(PartitionInfo, u64)> {
        let infos = self.partitions(name).await?;
        let (p, offset, oldest, latest) =
            bounds(&infos, c).map_err(|e| BusError::Unprocessable(vec![e]))?;
        cursor::position(offset, oldest, latest).map_err(|e| BusError::Unprocessable(vec![e]))?;
        let info = infos[p as usize].clone();
        let lag = info.unconsumed_after(offset);
        Ok((info, lag))
    }
}
