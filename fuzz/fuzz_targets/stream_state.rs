//! A body, cut into `request_body` messages, through the bbr-extproc state
//! machine in every body mode. See `bbr_fuzz::check_stream`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bbr_fuzz::check_stream(data));
