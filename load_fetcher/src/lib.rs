//! Reads control-plane load from Prometheus or direct `/metrics` scrapes into `LoadSnapshot`s. Not built yet (issue 4).
