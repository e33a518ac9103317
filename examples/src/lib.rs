//! Example jobs, written with the builder API. `cargo run -p sluice-examples` writes each one to
//! `examples/jobs/<name>.json`; a test keeps the checked-in files equal to what these functions build.
use sluice_common::job::builder::{count, JobBuilder};
use sluice_common::proto::{
    generated_column::Generator, DataType, DatagenSource, Field, FileFormat, FileSource, GeneratedColumn, JobGraph,
    WordsGenerator,
};

/// Every example, by file name.
pub fn all() -> Vec<(&'static str, JobGraph)> {
    vec![("word_count", word_count()), ("datagen_word_count", datagen_word_count(10_000_000, 2))]
}

/// Word count over the bundled sample text: lines → words → lower-case → key by word → running count →
/// newline-JSON part files under `data/output/word_count` (relative to the TaskManagers' directory).
pub fn word_count() -> JobGraph {
    let job = JobBuilder::new("word_count");
    job.file_source(
        "lines",
        1,
        FileSource {
            path: "examples/data/sample.txt".into(),
            format: FileFormat::Lines as i32,
            schema: vec![Field { name: "line".into(), r#type: DataType::String as i32, nullable: false }],
            ..Default::default()
        },
    )
    .split("split", "line", "word")
    .select("normalize", &[("word", "lower(btrim(word, '.,;:!?\"()''-'))")])
    .filter("non_empty", "word <> ''")
    .key_by(&["word"])
    .aggregate("count", &[count("count")])
    .set_parallelism(2)
    .file_sink("sink", "data/output/word_count");
    job.build()
}

/// The benchmark's shape: generated lines of random words → split → lower-case → key by word → running
/// count → blackhole, at parallelism `parallelism`.
pub fn datagen_word_count(rows: u64, parallelism: u32) -> JobGraph {
    let job = JobBuilder::new("datagen_word_count");
    let words = WordsGenerator { vocabulary: vec![], min_words: 1, max_words: 1 };
    job.datagen(
        "lines",
        parallelism,
        DatagenSource {
            seed: 42,
            rows: Some(rows),
            batch_size: Some(4096),
            columns: vec![GeneratedColumn { name: "line".into(), generator: Some(Generator::Words(words)) }],
            ..Default::default()
        },
    )
    .split("split", "line", "word")
    .select("lower", &[("word", "lower(word)")])
    .key_by(&["word"])
    .aggregate("count", &[count("count")])
    .blackhole_sink("sink", 0.0);
    job.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_validates() {
        for (name, graph) in all() {
            if let Err(e) = sluice_common::job::validate(graph) {
                panic!("example {name} is invalid:\n{e}");
            }
        }
    }

    #[test]
    fn checked_in_job_files_match_the_builder_programs() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
        for (name, graph) in all() {
            let path = dir.join(format!("{name}.json"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let on_disk = sluice_common::job::parse_job_file(text.as_bytes());
            assert_eq!(
                on_disk.as_ref().ok(),
                Some(&graph),
                "{} is stale: run `cargo run -p sluice-examples`",
                path.display()
            );
        }
    }
}
