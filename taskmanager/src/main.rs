//! The `sluice-taskmanager` binary: a TaskManager with the built-in operators only.

fn main() -> anyhow::Result<()> {
    sluice_taskmanager::main_with_registry(sluice_taskmanager::operators::native::OperatorRegistry::new())
}
