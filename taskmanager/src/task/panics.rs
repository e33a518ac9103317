//! A panic in a task ends that task as FAILED, with what the panic said and where: never a tokio task that
//! silently vanishes while heartbeats go on showing it RUNNING.
//!
//! [`catch`] runs a task's body under `catch_unwind`. The panic's payload carries its message but not its
//! location, which only the panic hook sees; so a process-wide hook (installed once, chaining to the hook
//! before it, which still prints the panic) records message and location in a thread-local, and `catch`
//! takes it from there. That is sound because a panic unwinds on the thread that raised it, within the
//! poll that `catch_unwind` wraps: the hook and the catch run on the same thread, one right after the
//! other. A record whose message differs from the caught payload's (a panic caught elsewhere on this thread
//! earlier) is ignored, and the failure names the message only.
use std::cell::RefCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Once;

use futures::FutureExt as _;

/// The longest panic message reported (longer ones are cut at a character boundary): it becomes the job's
/// `failure_cause`, stored and shown by the REST API, and a panic that formats a whole batch must not make
/// that a megabyte.
pub const PANIC_MESSAGE_BYTES_MAX: usize = 4096;

/// A panic in a task's body: its message and, if the hook saw it, where it was raised (`file:line:column`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panic {
    pub message: String,
    pub location: Option<String>,
}

impl std::fmt::Display for Panic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(location) => write!(f, "the task panicked at {location}: {}", self.message),
            None => write!(f, "the task panicked: {}", self.message),
        }
    }
}

thread_local! {
    /// The last panic raised on this thread, as the hook saw it.
    static LAST_PANIC: RefCell<Option<Panic>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs the hook that records each panic's location (once per process; later calls do nothing).
fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            let panic = Panic { message: message(info.payload()), location };
            // `try_with`: a panic while this thread's locals are torn down has nowhere to go, and needs none.
            let _ = LAST_PANIC.try_with(|last| *last.borrow_mut() = Some(panic));
            previous(info);
        }));
    });
}

/// Runs `body`; a panic in it becomes `Err` with its message and location.
pub async fn catch<F: Future>(body: F) -> Result<F::Output, Panic> {
    install_hook();
    let caught = AssertUnwindSafe(body).catch_unwind().await;
    caught.map_err(|payload| {
        let message = message(payload.as_ref());
        let recorded = LAST_PANIC.try_with(|last| last.borrow_mut().take()).ok().flatten();
        let location = recorded.filter(|r| r.message == message).and_then(|r| r.location);
        Panic { message, location }
    })
}

/// The text of a panic payload (`panic!` makes a `&str` or a `String`), cut to [`PANIC_MESSAGE_BYTES_MAX`].
fn message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.as_str()
    } else {
        "a panic without a message"
    };
    let mut end = text.len().min(PANIC_MESSAGE_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_an_error_with_its_message_and_location() {
        let line = line!() + 1;
        let caught = catch(async { panic!("row {} is bad", 7) }).await;
        let panic = caught.err().unwrap_or_else(|| panic!("the panic was not caught"));
        assert_eq!(panic.message, "row 7 is bad");
        let location = panic.location.clone().unwrap_or_default();
        assert!(location.starts_with(&format!("{}:{line}:", file!())), "location {location:?}");
        assert!(panic.to_string().starts_with("the task panicked at "), "{panic}");
    }

    #[tokio::test]
    async fn a_body_that_does_not_panic_returns_its_output() {
        assert_eq!(catch(async { 42 }).await, Ok(42));
    }

    #[tokio::test]
    async fn a_panic_after_an_await_is_caught_too() {
        let caught = catch(async {
            tokio::task::yield_now().await;
            let empty: Vec<u8> = Vec::new();
            empty[3]
        })
        .await;
        let panic = caught.err().unwrap_or_else(|| panic!("the panic was not caught"));
        assert!(panic.message.contains("index out of bounds"), "{panic}");
        assert!(panic.location.is_some(), "{panic:?}");
    }

    #[test]
    fn a_long_message_is_cut_at_a_character_boundary() {
        let long = "é".repeat(PANIC_MESSAGE_BYTES_MAX);
        let payload: Box<dyn std::any::Any + Send> = Box::new(long);
        let cut = message(payload.as_ref());
        assert!(cut.len() <= PANIC_MESSAGE_BYTES_MAX && cut.len() + 2 > PANIC_MESSAGE_BYTES_MAX, "{}", cut.len());
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_payload_without_text_is_named_as_such() {
        let payload: Box<dyn std::any::Any + Send> = Box::new(17_u32);
        assert_eq!(message(payload.as_ref()), "a panic without a message");
    }
}
