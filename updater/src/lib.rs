//! Applies a `Recommendation` live or by sequential StatefulSet rolls, verifies and rolls back. Not built yet (issue 7).
