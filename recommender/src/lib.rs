//! Pure decisions: the [`snapshot::LoadSnapshot`] the load fetcher fills in, forecasting,
//! calibration, the search over candidate settings and the safety rules. No I/O.

pub mod snapshot;
