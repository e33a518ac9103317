//! `datagen`: a source that generates rows (sequences, random numbers, words, event times).
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType as ArrowType, Field as ArrowField, Schema, SchemaRef, TimeUnit};

use super::schema::{check_batch_size, unique_names};
use super::{OperatorSpec, Role, SchemaInput};
use crate::job::bounds::DATAGEN_WORDS_PER_VALUE_MAX;
use crate::proto::{self, generated_column::Generator};

impl OperatorSpec for proto::DatagenSource {
    const KIND: &'static str = "datagen";
    const ROLE: Role = Role::Source;

    fn output_schema(&self, input: &mut SchemaInput<'_, '_>) -> Option<SchemaRef> {
        let report = &mut *input.report;
        check_batch_size(self.batch_size, report);
        if !(self.rows_per_second >= 0.0 && self.rows_per_second.is_finite()) {
            report(format!("rows_per_second must be a finite number >= 0 (got {})", self.rows_per_second));
        }
        if self.columns.is_empty() {
            report("no columns; add at least one generated column".into());
            return None;
        }
        unique_names(self.columns.iter().map(|c| c.name.as_str()), "column", report);
        let mut fields = Vec::with_capacity(self.columns.len());
        for column in &self.columns {
            let data_type = match &column.generator {
                None => {
                    report(format!(
                        "column '{}' has no generator; give one of: sequence, random_int, random_float, words, event_time",
                        column.name
                    ));
                    continue;
                }
                Some(Generator::Sequence(_)) => ArrowType::Int64,
                Some(Generator::RandomInt(g)) => {
                    if g.min > g.max {
                        report(format!("column '{}': random_int min {} > max {}", column.name, g.min, g.max));
                    }
                    ArrowType::Int64
                }
                Some(Generator::RandomFloat(g)) => {
                    if !(g.min <= g.max && g.min.is_finite() && g.max.is_finite()) {
                        report(format!(
                            "column '{}': random_float needs finite min <= max (got {}, {})",
                            column.name, g.min, g.max
                        ));
                    }
                    ArrowType::Float64
                }
                Some(Generator::Words(g)) => {
                    if g.min_words > g.max_words && g.max_words != 0 {
                        report(format!(
                            "column '{}': words min_words {} > max_words {}",
                            column.name, g.min_words, g.max_words
                        ));
                    }
                    for (field, words) in [("min_words", g.min_words), ("max_words", g.max_words)] {
                        if words > DATAGEN_WORDS_PER_VALUE_MAX {
                            report(format!(
                                "column '{}': words {field} is {words}; the most allowed is \
                                 {DATAGEN_WORDS_PER_VALUE_MAX}",
                                column.name
                            ));
                        }
                    }
                    if g.vocabulary.iter().any(|w| w.is_empty() || w.contains(char::is_whitespace)) {
                        report(format!(
                            "column '{}': vocabulary words must be non-empty and contain no whitespace",
                            column.name
                        ));
                    }
                    ArrowType::Utf8
                }
                Some(Generator::EventTime(_) | Generator::WallClock(_)) => {
                    ArrowType::Timestamp(TimeUnit::Millisecond, None)
                }
            };
            fields.push(ArrowField::new(&column.name, data_type, false));
        }
        Some(Arc::new(Schema::new(fields)))
    }
}
