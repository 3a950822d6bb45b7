//! The one error type of the crate, and the argument checks that produce it.

/// Why a model could not be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueueModelError {
    /// An argument is outside its domain (negative, NaN, infinite, zero where that is meaningless).
    #[error("invalid argument `{name}` = {value}: {reason}")]
    InvalidArgument {
        name: &'static str,
        value: f64,
        reason: &'static str,
    },
    /// Arrivals meet or exceed the service capacity and nothing bounds the queue.
    #[error(
        "unstable system: arrival rate {arrival_rate} ≥ service capacity {capacity} and the queue is unbounded"
    )]
    Unstable { arrival_rate: f64, capacity: f64 },
}

pub type Result<T> = std::result::Result<T, QueueModelError>;

fn invalid(name: &'static str, value: f64, reason: &'static str) -> QueueModelError {
    QueueModelError::InvalidArgument {
        name,
        value,
        reason,
    }
}

/// A finite value ≥ 0.
pub(crate) fn non_negative(name: &'static str, value: f64) -> Result<f64> {
    if !value.is_finite() {
        return Err(invalid(name, value, "must be a finite number"));
    }
    if value < 0.0 {
        return Err(invalid(name, value, "must not be negative"));
    }
    Ok(value)
}

/// A finite value > 0.
pub(crate) fn positive(name: &'static str, value: f64) -> Result<f64> {
    non_negative(name, value)?;
    if value == 0.0 {
        return Err(invalid(name, value, "must be greater than zero"));
    }
    Ok(value)
}

/// A count ≥ 1.
pub(crate) fn at_least_one(name: &'static str, value: u32) -> Result<u32> {
    if value == 0 {
        return Err(invalid(name, 0.0, "must be at least 1"));
    }
    Ok(value)
}

/// A probability strictly inside (0, 1), as percentiles need.
pub(crate) fn open_unit(name: &'static str, value: f64) -> Result<f64> {
    if value.is_nan() || value <= 0.0 || value >= 1.0 {
        return Err(invalid(name, value, "must lie strictly between 0 and 1"));
    }
    Ok(value)
}

pub(crate) fn capacity_at_least_servers(capacity: u32, servers: u32) -> Result<()> {
    if capacity < servers {
        return Err(invalid(
            "capacity",
            f64::from(capacity),
            "must be at least the number of servers",
        ));
    }
    Ok(())
}
