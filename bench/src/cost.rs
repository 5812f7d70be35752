//! Dollars per million operations, from the units and requests a run counted
//! and the one price table below.

use serde::Serialize;

use crate::scenarios::Row;

/// On-demand list prices, us-east-1, as read on 2026-11-30 (first pricing
/// tier; free tiers left out). Sources in docs/capacity.md, "Prices".
pub struct Prices {
    pub region: &'static str,
    pub date: &'static str,
    pub dynamodb_per_million_write_units: f64,
    pub dynamodb_per_million_read_units: f64,
    pub sqs_standard_per_million_requests: f64,
    pub sqs_fifo_per_million_requests: f64,
    pub lambda_per_million_requests: f64,
    /// arm64, as the template deploys.
    pub lambda_per_gb_second: f64,
    pub http_api_per_million_requests: f64,
    /// EventBridge custom events: per million entries `PutEvents` takes, each
    /// entry billed per started 64 KB (aws.amazon.com/eventbridge/pricing).
    /// Archiving and DynamoDB Streams reads by Lambda are left out: the first
    /// is per GB (Tally's events are under 1 KB), the second free.
    pub eventbridge_per_million_events: f64,
}

pub const PRICES: Prices = Prices {
    region: "us-east-1",
    date: "2026-11-30",
    dynamodb_per_million_write_units: 0.625,
    dynamodb_per_million_read_units: 0.125,
    sqs_standard_per_million_requests: 0.40,
    sqs_fifo_per_million_requests: 0.50,
    lambda_per_million_requests: 0.20,
    lambda_per_gb_second: 0.000_013_333_4,
    http_api_per_million_requests: 1.00,
    eventbridge_per_million_events: 1.00,
};

/// Lambda gives a function one vCPU at 1,769 MB and a share in proportion
/// below it (Lambda Developer Guide, "Configuring function memory").
pub const MB_PER_VCPU: f64 = 1769.0;
/// What one DynamoDB or SQS request takes from inside the Region: an
/// assumption (DynamoDB's "single-digit millisecond"), not a measurement: the
/// emulator here answers 10–50× slower.
pub const ASSUMED_REQUEST_MS: f64 = 5.0;

/// Billed Lambda duration per operation on AWS, modelled: the CPU measured in
/// this run, stretched to the template's share of a vCPU, plus the requests
/// the functions wait on one after another at [`ASSUMED_REQUEST_MS`].
pub fn modelled_lambda_ms(cpu_us: f64, sequential_waits: f64) -> f64 {
    cpu_us / 1000.0 * MB_PER_VCPU / (lambda_memory_gb() * 1024.0)
        + sequential_waits * ASSUMED_REQUEST_MS
}

/// The functions' memory, as `template.yaml` configures it (Globals).
pub fn lambda_memory_gb() -> f64 {
    let template = include_str!("../../template.yaml");
    let mb: f64 = template
        .lines()
        .find_map(|line| line.trim().strip_prefix("MemorySize:"))
        .and_then(|mb| mb.trim().parse().ok())
        .expect("template.yaml sets MemorySize");
    mb / 1024.0
}

/// What one million operations of a kind cost, by service.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    pub scenario: String,
    pub kind: String,
    pub dynamodb: f64,
    pub sqs: f64,
    pub lambda: f64,
    pub api_gateway: f64,
    pub total: f64,
}

/// What a design asks of AWS per operation.
#[derive(Debug, Clone, Copy, Default)]
pub struct PerOp {
    pub write_units: f64,
    pub read_units: f64,
    pub sqs_requests: f64,
    pub sqs_fifo: bool,
    pub lambda_invocations: f64,
    pub lambda_ms: f64,
    pub api_requests: f64,
}

impl From<&Row> for PerOp {
    fn from(row: &Row) -> Self {
        Self {
            write_units: row.write_units_per_op,
            read_units: row.read_units_per_op,
            sqs_requests: row.sqs_requests_per_op,
            sqs_fifo: row.sqs_fifo,
            lambda_invocations: row.lambda_invocations_per_op,
            lambda_ms: modelled_lambda_ms(row.cpu_us_per_op, row.sequential_waits_per_op),
            api_requests: row.api_requests_per_op,
        }
    }
}

pub fn per_million(scenario: &str, kind: &str, op: PerOp) -> Cost {
    let p = &PRICES;
    let dynamodb = op.write_units * p.dynamodb_per_million_write_units
        + op.read_units * p.dynamodb_per_million_read_units;
    let sqs_price = if op.sqs_fifo {
        p.sqs_fifo_per_million_requests
    } else {
        p.sqs_standard_per_million_requests
    };
    let sqs = op.sqs_requests * sqs_price;
    // A million operations run for lambda_ms each at the template's memory.
    let gb_seconds = op.lambda_ms / 1000.0 * lambda_memory_gb() * 1e6;
    let lambda =
        op.lambda_invocations * p.lambda_per_million_requests + gb_seconds * p.lambda_per_gb_second;
    let api_gateway = op.api_requests * p.http_api_per_million_requests;
    Cost {
        scenario: scenario.to_owned(),
        kind: kind.to_owned(),
        dynamodb,
        sqs,
        lambda,
        api_gateway,
        total: dynamodb + sqs + lambda + api_gateway,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spend_like_operation_costs_what_its_units_say() {
        let op = PerOp {
            write_units: 9.0,
            read_units: 1.0,
            sqs_requests: 1.2,
            sqs_fifo: true,
            lambda_invocations: 1.1,
            lambda_ms: 20.0,
            api_requests: 1.0,
        };
        let cost = per_million("points", "spend", op);
        assert!((cost.dynamodb - (9.0 * 0.625 + 0.125)).abs() < 1e-9);
        assert!((cost.sqs - 0.6).abs() < 1e-9);
        let gb_s = 0.020 * 0.25 * 1e6;
        assert!((cost.lambda - (0.22 + gb_s * 0.000_013_333_4)).abs() < 1e-9);
        assert!((cost.total - (cost.dynamodb + cost.sqs + cost.lambda + 1.0)).abs() < 1e-9);
        assert_eq!(lambda_memory_gb(), 0.25);
    }
}
