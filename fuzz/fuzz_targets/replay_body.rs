//! A body, cut by the first input bytes, through the bbr-tower layer: the
//! inner service gets exactly the frames that went in, or the contract's
//! refusal. See `bbr_fuzz::check_replay`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bbr_fuzz::check_replay(data));
