//! Third-party decoders run on bytes from outside. Arrow's IPC reader still panics on some malformed input
//! (`unimplemented!` for a schema field of type NONE: found by the `frame` fuzz target, issue 19). Malformed
//! input must be an error like any other, not a panic that fails a task with a confusing message or kills
//! the thread that read it; [`catch_panic`] turns such a panic into an error carrying its message.
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `decode`; a panic in it becomes `Err` with the panic's message. Only for pure decoding of owned or
/// borrowed input: nothing `decode` touches survives a panic half-updated (hence `AssertUnwindSafe`). The
/// process's panic hook still runs (and prints the panic) before the error is returned.
pub fn catch_panic<T>(decode: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(decode)).map_err(|payload| {
        if let Some(text) = payload.downcast_ref::<&str>() {
            (*text).to_string()
        } else if let Some(text) = payload.downcast_ref::<String>() {
            text.clone()
        } else {
            "a panic without a message".to_string()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message_and_a_value_passes_through() {
        assert_eq!(catch_panic(|| 7), Ok(7));
        let caught: Result<(), String> = catch_panic(|| unimplemented!("Type NONE not supported"));
        assert_eq!(caught, Err("not implemented: Type NONE not supported".to_string()));
    }
}
