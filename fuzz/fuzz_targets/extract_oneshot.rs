//! Any bytes through `extract_model` under every policy: no panic, and
//! agreement with serde_json whenever it parses the input. See
//! `bbr_fuzz::check_oneshot`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bbr_fuzz::check_oneshot(data));
