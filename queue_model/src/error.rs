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
    /// An argument is beyond what any real control plane has: the model's cost grows with
    /// it, so it is refused rather than left to run for minutes.
    #[error("`{name}` = {value} is above {limit}, {why}")]
    TooLarge {
        name: &'static str,
        value: f64,
        limit: f64,
        why: &'static str,
    },
    #[error(
        "unstable system: arrival rate {arrival_rate} ≥ service capacity {capacity} and the queue is unbounded"
    )]
    Unstable { arrival_rate: f64, capacity: f64 },
}

pub type Result<T> = std::result::Result<T, QueueModelError>;

/// Most CPU cores a model is evaluated on. Every evaluation runs Erlang's recurrence once per
/// core inside a root search (≈ 5 ms per setting at 1024 cores, 0.1 s at 4096), and no master
/// node has more: a larger value is millicores typed as cores.
pub const MAX_CORES: f64 = 1024.0;

/// Fewest CPU cores: Kubernetes' smallest CPU quantity, `1m`.
pub const MIN_CORES: f64 = 0.001;

/// Most servers of an M/M/c or M/M/c/K queue: Erlang's recurrence costs one step per server
/// and a percentile evaluates it dozens of times. DESIGN.md asks for 10⁴; this is ten times that.
pub const MAX_SERVERS: u32 = 100_000;

/// Most requests held at once in one queue, executing or waiting. Near full load a chain
/// costs a step (and memory) per state, so 4·10⁹ took 34 GB; the largest clusters run a few
/// thousand inflight and APF queues of about a thousand.
pub const MAX_CAPACITY: u32 = 100_000;

/// Shortest time one request may take: no apiserver request completes in under a
/// microsecond, and shorter ones turn the model's sums into 0/0.
pub const MIN_REQUEST_S: f64 = 1e-6;

/// Most requests per second of one apiserver request class: the largest clusters' apiservers
/// serve about 10⁴, so 10⁶ is beyond any node; past it the numbers lose meaning, not just time.
pub const MAX_REQUEST_RATE: f64 = 1e6;

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

/// At most `limit`, with the reason that limit exists.
pub(crate) fn at_most(
    name: &'static str,
    value: f64,
    limit: f64,
    why: &'static str,
) -> Result<f64> {
    if value > limit {
        return Err(QueueModelError::TooLarge {
            name,
            value,
            limit,
            why,
        });
    }
    Ok(value)
}

/// CPU cores within [`MIN_CORES`, `MAX_CORES`].
pub(crate) fn cores(name: &'static str, value: f64) -> Result<f64> {
    positive(name, value)?;
    if value < MIN_CORES {
        return Err(invalid(
            name,
            value,
            "is below 0.001 (1m), Kubernetes' smallest CPU quantity",
        ));
    }
    at_most(
        name,
        value,
        MAX_CORES,
        "more cores than any master node has (millicores typed as cores?)",
    )
}

/// A server count within [1, `MAX_SERVERS`].
pub(crate) fn servers(name: &'static str, value: u32) -> Result<u32> {
    at_least_one(name, value)?;
    at_most(
        name,
        f64::from(value),
        f64::from(MAX_SERVERS),
        "the model's cost grows with every server",
    )?;
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

/// At most [`MAX_CAPACITY`] requests in a queue.
pub(crate) fn capacity(name: &'static str, value: u32) -> Result<u32> {
    at_most(
        name,
        f64::from(value),
        f64::from(MAX_CAPACITY),
        "more requests at once than any apiserver holds; the model's cost grows with every one",
    )?;
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
