//! How a window is stored: its bounds in the state key's namespace (time-ordered bytes, so a key's windows
//! are one prefix and scan in time order), its accumulators and partial states in the value.
use crate::operator_api::OperatorError;
use crate::operators::accumulate::{Acc, ACC_BYTES};
use crate::state::{time_bytes, time_from_bytes};

/// The keyed state holding the windows' accumulators.
pub(super) const WINDOWS_STATE: &str = "windows";

/// The bytes a window's bounds take at the end of its state key: start, then end.
pub(super) const WINDOW_BYTES: usize = 16;

/// Window bounds as namespace bytes, in time order.
pub(super) fn encode_window(start: i64, end: i64) -> [u8; WINDOW_BYTES] {
    let mut bytes = [0u8; WINDOW_BYTES];
    bytes[..8].copy_from_slice(&time_bytes(start));
    bytes[8..].copy_from_slice(&time_bytes(end));
    bytes
}

/// Reads what [`encode_window`] wrote; `None` when `bytes` are not window bounds.
pub(super) fn decode_window(bytes: &[u8]) -> Option<(i64, i64)> {
    if bytes.len() != WINDOW_BYTES {
        return None;
    }
    Some((time_from_bytes(&bytes[..8])?, time_from_bytes(&bytes[8..])?))
}

/// A fired window: its full state key, accumulators and DataFusion partial states.
pub(super) type Fired = (Vec<u8>, Vec<Acc>, Vec<Vec<u8>>);

/// A window's stored value: the accumulators, then each DataFusion partial state with its length (u32 BE).
pub(super) fn encode_value(accs: &[Acc], states: &[Vec<u8>], out: &mut Vec<u8>) {
    Acc::encode(accs, out);
    for state in states {
        out.extend_from_slice(&(state.len() as u32).to_be_bytes());
        out.extend_from_slice(state);
    }
}

/// Decodes what [`encode_value`] wrote for `n` functions, `generic` of them DataFusion's; a value of another
/// shape is corrupt.
pub(super) fn decode_value(
    bytes: &[u8],
    (n, generic): (usize, usize),
    accs: &mut Vec<Acc>,
    states: &mut Vec<Vec<u8>>,
) -> Result<(), OperatorError> {
    let fixed = n * ACC_BYTES;
    let corrupt = || OperatorError::input(format!("corrupt window state: {} bytes for {n} aggregates", bytes.len()));
    Acc::decode(bytes.get(..fixed).ok_or_else(corrupt)?, n, accs)?;
    states.clear();
    let mut rest = &bytes[fixed..];
    while !rest.is_empty() {
        let (length, tail) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let length = u32::from_be_bytes(*length) as usize;
        states.push(tail.get(..length).ok_or_else(corrupt)?.to_vec());
        rest = &tail[length..];
    }
    if states.len() != generic {
        return Err(corrupt());
    }
    Ok(())
}
