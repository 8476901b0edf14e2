#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ledger_fuzz::targets::digest_decode(data));
