//! The found model replaced by an arbitrary target in arbitrary chunks:
//! only its token changes. See `bbr_fuzz::check_splice`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bbr_fuzz::check_splice(data));
