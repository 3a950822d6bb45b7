//! Pure decisions: the [`snapshot::LoadSnapshot`] the load fetcher fills in, forecasting,
//! calibration, the search over candidate settings and the safety rules. No I/O.
//!
//! [`recommend`] runs one round: forecast the load, calibrate the request costs, search
//! the cheapest setting the queue model says meets every SLO, then decide by the safety
//! rules whether to change or hold.

pub mod calibrate;
mod error;
pub mod forecast;
pub mod memory;
pub mod policy;
pub mod recommendation;
mod round;
pub mod safety;
pub mod search;
pub mod setting;
pub mod snapshot;

pub use error::{RecommenderError, Result};
pub use policy::Policy;
pub use recommendation::Recommendation;
pub use round::recommend;
pub use setting::{ApiserverSettings, ClientSettings, CurrentSettings};
