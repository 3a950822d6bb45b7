//! Queueing models.
