//! Request bodies: strict JSON with a `detail` that names the field and what is
//! wrong with it. (Their size, at most 16 KiB, is held by the router's body limit.)

use serde::de::DeserializeOwned;
use serde_json::Value;
use shared::domain::points::MAX_AMOUNT;
use shared::http::Problem;

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        Problem::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    if !value.is_object() {
        return Err(Problem::bad_request(
            "invalid_body",
            "the body must be a JSON object",
        ));
    }
    if let Some(amount) = value.get("amount") {
        check_amount(amount)?;
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let unknown_field = err.inner().to_string().starts_with("unknown field");
        let code = match path.as_str() {
            "user_id" | "to_user_id" if !unknown_field => "invalid_user_id",
            _ => "invalid_body",
        };
        let detail = if path == "." {
            err.inner().to_string()
        } else {
            format!("{path}: {}", err.inner())
        };
        Problem::bad_request(code, detail)
    })
}

/// Amounts get their own codes: the wrong type, a fraction, or a whole number out of range.
fn check_amount(amount: &Value) -> Result<(), Problem> {
    let out_of_range = |shown: String| {
        Problem::bad_request(
            "amount_out_of_range",
            format!("amount must be from 1 to {MAX_AMOUNT}, got {shown}"),
        )
    };
    match amount {
        Value::Number(number) => match (number.as_u64(), number.as_i64()) {
            (Some(n), _) if (1..=MAX_AMOUNT).contains(&n) => Ok(()),
            (Some(n), _) => Err(out_of_range(n.to_string())),
            (None, Some(n)) => Err(out_of_range(n.to_string())),
            // `30.0` and `3e1` are the whole number 30 (JSON Schema's `integer`).
            (None, None) => match number.as_f64() {
                Some(n) if n.fract() == 0.0 && (1.0..=MAX_AMOUNT as f64).contains(&n) => Ok(()),
                Some(n) if n.fract() == 0.0 => Err(out_of_range(number.to_string())),
                _ => Err(Problem::bad_request(
                    "invalid_amount",
                    format!("amount must be a whole number of points, got {number}"),
                )),
            },
        },
        other => Err(Problem::bad_request(
            "invalid_amount",
            format!("amount must be an integer, got {}", json_type(other)),
        )),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
