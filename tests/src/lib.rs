//! End-to-end tests of the assembly. The binaries under `src/bin` are the sidecars'
//! own entry points, built here so the tests can run each as a separate process
//! (each with its own telemetry, as in the task definition).
