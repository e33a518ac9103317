//! Writes the examples' sample inputs to `examples/data/` (see `sluice_examples::data`).
use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let sample = dir.join("sample.txt");
    let text = std::fs::read_to_string(&sample).with_context(|| format!("cannot read {}", sample.display()))?;
    let (orders, payments) = sluice_examples::data::orders_and_payments();
    let (clicks, profiles) = sluice_examples::data::clicks_and_profiles();
    let files = [
        ("lines.jsonl", sluice_examples::data::lines(&text)),
        ("sensors.jsonl", sluice_examples::data::sensors()),
        ("events.jsonl", sluice_examples::data::events()),
        ("page_views.jsonl", sluice_examples::data::page_views()),
        ("orders.jsonl", orders),
        ("payments.jsonl", payments),
        ("clicks.jsonl", clicks),
        ("profiles.jsonl", profiles),
        ("transactions.jsonl", sluice_examples::data::transactions()),
    ];
    for (name, contents) in files {
        let path = dir.join(name);
        std::fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
