//! A TaskManager binary with a native operator compiled in: the stock TaskManager plus
//! `fraud_detector` (see `sluice_examples::fraud`). It takes the same flags and environment as
//! `sluice-taskmanager`.

fn main() -> anyhow::Result<()> {
    sluice_taskmanager::main_with_registry(sluice_examples::fraud::registry())
}
