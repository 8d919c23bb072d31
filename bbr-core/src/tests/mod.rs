//! The core's test suites (see each module).

mod harness;
mod seeds;
