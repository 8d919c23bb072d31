//! Benchmark inputs (being written).
