//! The core's test suites (see each module).

mod harness;
mod headers;
mod nested;
mod oracle;
mod prop;
mod rewrite;
mod seeds;
mod zero_copy;
