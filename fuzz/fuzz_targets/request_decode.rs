#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ledger_fuzz::targets::request_decode(data));
