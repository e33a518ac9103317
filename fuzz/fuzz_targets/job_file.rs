//! A job file as the REST API receives it: parsed, then validated. Any bytes give a validated job or an
//! error naming the problems, never a panic (or a stack overflow, or a long stall: libFuzzer's `-timeout`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_common::job::{parse_job_file, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(graph) = parse_job_file(data) else { return };
    if let Err(error) = validate(graph) {
        assert!(!error.to_string().is_empty(), "a refused job must say why");
    }
});
