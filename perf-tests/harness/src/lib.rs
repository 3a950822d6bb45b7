//! Starts and stops the real loopback control plane for integration tests.
