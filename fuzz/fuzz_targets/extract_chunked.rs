//! The first input bytes choose the chunk boundaries; the chunked result
//! must equal the one-shot result. See `bbr_fuzz::check_chunked`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bbr_fuzz::check_chunked(data));
