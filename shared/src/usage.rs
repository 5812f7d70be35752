//! What Tally asks of DynamoDB and SQS, counted where the calls are made: requests
//! per call, and the write and read units DynamoDB bills for them (items here
//! are under 1 KB but a post's counter, whose writes are metered by its size:
//! 1 write unit per item written, a failed condition included,
//! ×2 inside a transaction, +1 per index entry written or removed; reads 0.5 per
//! item eventually consistent, 1 strongly consistent, per 4 KB).

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Default, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Counts {
    pub requests: u64,
    pub write_units: f64,
    pub read_units: f64,
}

/// A meter shared by the adapters of one process (or one benchmark).
#[derive(Debug, Default)]
pub struct Usage {
    calls: Mutex<BTreeMap<&'static str, Counts>>,
}

impl Usage {
    pub fn record(&self, call: &'static str, write_units: f64, read_units: f64) {
        // A panic elsewhere while counting leaves the counts usable.
        let mut calls = self
            .calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let counts = calls.entry(call).or_default();
        counts.requests += 1;
        counts.write_units += write_units;
        counts.read_units += read_units;
    }

    /// Counts per call so far, keyed `service:Operation`.
    pub fn snapshot(&self) -> BTreeMap<&'static str, Counts> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Read units for `items` items of about `bytes` each, read in one request.
pub fn read_units(items: usize, bytes_each: usize, consistent: bool) -> f64 {
    let blocks = (items * bytes_each).div_ceil(4096).max(1) as f64;
    if consistent { blocks } else { blocks / 2.0 }
}
