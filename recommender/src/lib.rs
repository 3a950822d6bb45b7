//! Pure decisions: forecasting, calibration, the search over candidate settings and the safety rules. Not built yet (issue 6).
