//! A checkpoint's `_metadata` file as the JobManager parses it before a restore: any bytes give metadata or
//! an error; metadata that parses writes back to metadata that parses the same.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_common::checkpoint_metadata::parse_metadata;

fuzz_target!(|data: &[u8]| {
    let Ok(metadata) = parse_metadata(data) else { return };
    let written = serde_json::to_vec_pretty(&metadata).expect("metadata serializes");
    let again = parse_metadata(&written).expect("written metadata parses");
    assert_eq!(again, metadata);
});
