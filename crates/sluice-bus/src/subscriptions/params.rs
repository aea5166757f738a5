//! The parameters of a subscription stream (query string of GET, body of POST), their
//! defaults and ranges (Nakadi's, except the commit timeout's maximum, which the
//! operator sets).

use std::time::Duration;

use serde::Deserialize;

/// A partition asked for by a stream (direct assignment).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PartitionRef {
    pub event_type: String,
    pub partition: String,
}

/// Stream parameters as the client sent them.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamParams {
    pub batch_limit: Option<i64>,
    pub stream_limit: Option<i64>,
    pub batch_flush_timeout: Option<i64>,
    pub stream_timeout: Option<i64>,
    pub stream_keep_alive_limit: Option<i64>,
    pub max_uncommitted_events: Option<i64>,
    pub commit_timeout: Option<i64>,
    /// Accepted for compatibility; batches are flushed by count and time only.
    pub batch_timespan: Option<i64>,
    #[serde(default)]
    pub partitions: Vec<PartitionRef>,
}

/// Stream parameters checked and with defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub batch_limit: u64,
    /// 0: unlimited.
    pub stream_limit: u64,
    pub batch_flush_timeout: Duration,
    pub stream_timeout: Duration,
    /// 0: unlimited.
    pub stream_keep_alive_limit: u64,
    pub max_uncommitted_events: u64,
    pub commit_timeout: Duration,
    pub partitions: Vec<PartitionRef>,
}

/// Nakadi's ceiling for stream_timeout, in seconds.
pub const MAX_STREAM_TIMEOUT_SEC: i64 = 4200;

impl StreamParams {
    /// Checks ranges; `max_commit_timeout` is the operator's ceiling (seconds).
    pub fn resolve(&self, max_commit_timeout: u64) -> Result<Resolved, Vec<String>> {
        let mut problems = Vec::new();
        let mut at_least = |name: &str, v: Option<i64>, min: i64, default: i64| -> i64 {
            match v {
                None => default,
                Some(v) if v < min => {
                    problems.push(format!("{name} must be at least {min}, not {v}"));
                    default
                }
                Some(v) => v,
            }
        };
        let batch_limit = at_least("batch_limit", self.batch_limit, 1, 1);
        let stream_limit = at_least("stream_limit", self.stream_limit, 0, 0);
        let flush = at_least("batch_flush_timeout", self.batch_flush_timeout, 0, 30);
        let stream_timeout = at_least("stream_timeout", self.stream_timeout, 0, 0);
        let keep_alive = at_least(
            "stream_keep_alive_limit",
            self.stream_keep_alive_limit,
            0,
            0,
        );
        let max_uncommitted =
            at_least("max_uncommitted_events", self.max_uncommitted_events, 1, 10);
        let commit = at_least("commit_timeout", self.commit_timeout, 0, 0);
        at_least("batch_timespan", self.batch_timespan, 0, 0);
        if stream_limit != 0 && stream_limit < batch_limit {
            problems.push(format!(
                "stream_limit ({stream_limit}) must be 0 (unlimited) or at least batch_limit ({batch_limit})"
            ));
        }
        if commit > max_commit_timeout as i64 {
            problems.push(format!(
                "commit_timeout must be at most {max_commit_timeout} seconds on this server, not {commit}"
            ));
        }
        // Nakadi: 0 or more than the maximum means "about an hour", spread so that a
        // fleet of consumers does not reconnect all at once.
        let stream_timeout = if stream_timeout == 0 || stream_timeout > MAX_STREAM_TIMEOUT_SEC {
            3600 + fastrand::i64(-600..=600)
        } else {
            stream_timeout
        };
        if stream_timeout < flush {
            problems.push(format!(
                "stream_timeout ({stream_timeout}) must be at least batch_flush_timeout ({flush})"
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let flush = if flush == 0 { 30 } else { flush };
        let commit = if commit == 0 {
            max_commit_timeout as i64
        } else {
            commit
        };
        Ok(Resolved {
            batch_limit: batch_limit as u64,
            stream_limit: stream_limit as u64,
            batch_flush_timeout: Duration::from_secs(flush as u64),
            stream_timeout: Duration::from_secs(stream_timeout as u64),
            stream_keep_alive_limit: keep_alive as u64,
            max_uncommitted_events: max_uncommitted as u64,
            commit_timeout: Duration::from_secs(commit as u64),
            partitions: self.partitions.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_nakadis() {
        let r = StreamParams::default().resolve(60).unwrap();
        assert_eq!(r.batch_limit, 1);
        assert_eq!(r.max_uncommitted_events, 10);
        assert_eq!(r.batch_flush_timeout, Duration::from_secs(30));
        assert_eq!(r.commit_timeout, Duration::from_secs(60));
        let t = r.stream_timeout.as_secs();
        assert!((3000..=4200).contains(&t), "{t}");
    }

    #[test]
    fn ranges_are_checked() {
        let p = StreamParams {
            batch_limit: Some(0),
            stream_limit: Some(5),
            commit_timeout: Some(61),
            ..StreamParams::default()
        };
        let e = p.resolve(60).unwrap_err().join("\n");
        assert!(e.contains("batch_limit must be at least 1"), "{e}");
        assert!(e.contains("at most 60"), "{e}");
        let p = StreamParams {
            batch_limit: Some(10),
            stream_limit: Some(5),
            ..StreamParams::default()
        };
        assert!(p.resolve(60).unwrap_err()[0].contains("stream_limit"));
        let p = StreamParams {
            commit_timeout: Some(600),
            ..StreamParams::default()
        };
        assert_eq!(
            p.resolve(900).unwrap().commit_timeout,
            Duration::from_secs(600),
            "the operator may allow more than 60 s"
        );
        let p = StreamParams {
            batch_flush_timeout: Some(10),
            stream_timeout: Some(5),
            ..StreamParams::default()
        };
        assert!(p.resolve(60).unwrap_err()[0].contains("stream_timeout"));
    }
}
