//! SQL expression strings, compiled once against a schema and evaluated vectorized on Arrow batches.
//!
//! Users write projections, filters and aggregate arguments as SQL (`"lower(word)"`, `"price * 0.908"`,
//! `"cnt > 5"`). We do not write an evaluator: DataFusion parses the string, coerces types against the
//! input schema, simplifies, and produces a [`PhysicalExpr`] that evaluates a whole batch at a time.
//! Validation at submission and execution on the TaskManagers use this same function, so a job that
//! validates compiles the same way everywhere.
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use crate::job::bounds::{shown, EXPRESSION_BYTES_MAX, EXPRESSION_NESTING_MAX, EXPRESSION_TOKENS_MAX};

mod growth;
pub use growth::FUNCTION_RESULT_BYTES_MAX;

/// A SQL expression compiled against one input schema.
#[derive(Debug, Clone)]
pub struct CompiledExpr {
    /// The source text, for messages.
    pub sql: String,
    /// The vectorized expression.
    pub physical: Arc<dyn PhysicalExpr>,
    /// The type of the values it produces.
    pub data_type: DataType,
    /// Whether it may produce nulls.
    pub nullable: bool,
}

/// An expression that does not parse, names an unknown column, or does not type-check.
#[derive(Debug, thiserror::Error)]
#[error("invalid SQL expression '{sql}': {message}")]
pub struct ExprError {
    /// The expression.
    pub sql: String,
    /// DataFusion's explanation, first line.
    pub message: String,
}

/// Compiles SQL expressions against schemas. Holds one DataFusion session (its function registry), which is
/// costly to create: make one per job or per operator, not per expression.
pub struct ExprCompiler {
    session: SessionContext,
}

impl Default for ExprCompiler {
    fn default() -> Self {
        Self::new()
    }
}

impl ExprCompiler {
    /// A compiler with DataFusion's built-in scalar functions, those whose result grows with an argument
    /// bounded ([`growth`]).
    pub fn new() -> Self {
        let session = SessionContext::new();
        growth::bound_growing_functions(&session);
        Self { session }
    }

    /// Parses, type-checks and plans `sql` against `schema`.
    pub fn compile(&self, sql: &str, schema: &SchemaRef) -> Result<CompiledExpr, ExprError> {
        let error = |e: datafusion::error::DataFusionError| ExprError { sql: sql.to_string(), message: first_line(&e) };
        if sql.trim().is_empty() {
            return Err(ExprError { sql: sql.to_string(), message: "the expression is empty".into() });
        }
        check_size(sql).map_err(|message| ExprError { sql: shown(sql), message })?;
        let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(error)?;
        let logical = self.session.parse_sql_expr(sql, &df_schema).map_err(error)?;
        let physical = self.session.create_physical_expr(logical, &df_schema).map_err(error)?;
        let data_type = physical.data_type(schema).map_err(error)?;
        let nullable = physical.nullable(schema).map_err(error)?;
        Ok(CompiledExpr { sql: sql.to_string(), physical, data_type, nullable })
    }

    /// Compiles `sql` over two records of `schema` named `a` and `b` ("a.amount + b.amount"): it evaluates on
    /// batches of [`pair_schema`]`(schema)`, a's columns then b's.
    pub fn compile_pair(&self, sql: &str, schema: &SchemaRef) -> Result<CompiledExpr, ExprError> {
        let error = |e: datafusion::error::DataFusionError| ExprError { sql: sql.to_string(), message: first_line(&e) };
        if sql.trim().is_empty() {
            return Err(ExprError { sql: sql.to_string(), message: "the expression is empty".into() });
        }
        check_size(sql).map_err(|message| ExprError { sql: shown(sql), message })?;
        let a = DFSchema::try_from_qualified_schema("a", schema.as_ref()).map_err(error)?;
        let b = DFSchema::try_from_qualified_schema("b", schema.as_ref()).map_err(error)?;
        let mut df_schema = a;
        df_schema.merge(&b);
        if df_schema.fields().len() != 2 * schema.fields().len() {
            return Err(ExprError { sql: sql.to_string(), message: "the input has duplicate column names".into() });
        }
        let logical = self.session.parse_sql_expr(sql, &df_schema).map_err(error)?;
        let physical = self.session.create_physical_expr(logical, &df_schema).map_err(error)?;
        let pair = pair_schema(schema);
        let data_type = physical.data_type(&pair).map_err(error)?;
        let nullable = physical.nullable(&pair).map_err(error)?;
        Ok(CompiledExpr { sql: sql.to_string(), physical, data_type, nullable })
    }
}

/// The schema [`ExprCompiler::compile_pair`]'s expressions read: `schema`'s columns as `a.<name>`, then as
/// `b.<name>`.
pub fn pair_schema(schema: &SchemaRef) -> Schema {
    let fields = ["a", "b"]
        .iter()
        .flat_map(|q| schema.fields().iter().map(move |f| f.as_ref().clone().with_name(format!("{q}.{}", f.name()))))
        .collect::<Vec<_>>();
    Schema::new(fields)
}

impl CompiledExpr {
    /// Evaluates the expression on every row of `batch`.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<ArrayRef, ExprError> {
        let error =
            |e: datafusion::error::DataFusionError| ExprError { sql: self.sql.clone(), message: first_line(&e) };
        let value = self.physical.evaluate(batch).map_err(error)?;
        value.into_array(batch.num_rows()).map_err(error)
    }
}

/// Refuses an expression over [`EXPRESSION_BYTES_MAX`], [`EXPRESSION_TOKENS_MAX`] or
/// [`EXPRESSION_NESTING_MAX`], before DataFusion sees it: DataFusion recurses once per level of the syntax
/// tree, and a tree is never deeper than the expression has tokens. The scan is one linear pass that only
/// tells tokens apart roughly (a quoted string or identifier is one token, an operator one or two
/// characters); it can only over-count relative to SQL's own tokenizer, never under-count depth.
fn check_size(sql: &str) -> Result<(), String> {
    if sql.len() > EXPRESSION_BYTES_MAX {
        return Err(format!("the expression is {} bytes long; the most allowed is {EXPRESSION_BYTES_MAX}", sql.len()));
    }
    let (mut tokens, mut depth, mut depth_max) = (0usize, 0usize, 0usize);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        tokens += 1;
        match c {
            '(' | '[' => {
                depth += 1;
                depth_max = depth_max.max(depth);
            }
            ')' | ']' => depth = depth.saturating_sub(1),
            '\'' | '"' | '`' => {
                // A quoted literal or identifier, whose quote doubles to escape itself: one token.
                while let Some(d) = chars.next() {
                    if d == c && chars.peek() != Some(&c) {
                        break;
                    }
                    if d == c {
                        chars.next();
                    }
                }
            }
            c if c.is_alphanumeric() || c == '_' || c == '.' || c == '$' => {
                while chars.next_if(|d| d.is_alphanumeric() || *d == '_' || *d == '.' || *d == '$').is_some() {}
            }
            // An operator: one character, or two for the operators SQL spells with two (`||`, `<=`, ...).
            // Each other character counts alone, since `-+-x` nests one unary operator per character.
            _ => {
                if chars.peek().is_some_and(|d| TWO_CHARACTER_OPERATORS.contains(&[c, *d])) {
                    chars.next();
                }
            }
        }
    }
    if tokens > EXPRESSION_TOKENS_MAX {
        return Err(format!(
            "the expression has {tokens} terms (names, literals, operators, parentheses); the most allowed is \
             {EXPRESSION_TOKENS_MAX}"
        ));
    }
    if depth_max > EXPRESSION_NESTING_MAX {
        return Err(format!(
            "the expression nests parentheses {depth_max} deep; the most allowed is {EXPRESSION_NESTING_MAX}"
        ));
    }
    Ok(())
}

/// The operators SQL spells with two characters, each one token for [`check_size`].
const TWO_CHARACTER_OPERATORS: [[char; 2]; 8] =
    [['|', '|'], ['<', '='], ['>', '='], ['<', '>'], ['!', '='], [':', ':'], ['<', '<'], ['>', '>']];

fn first_line(error: &datafusion::error::DataFusionError) -> String {
    let text = error.to_string();
    text.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("word", DataType::Utf8, false), Field::new("n", DataType::Int64, false)]))
    }

    #[test]
    fn compiles_and_evaluates_vectorized() -> Result<(), Box<dyn std::error::Error>> {
        let compiler = ExprCompiler::new();
        let expr = compiler.compile("lower(word)", &schema())?;
        assert_eq!(expr.data_type, DataType::Utf8);
        let batch = RecordBatch::try_new(
            schema(),
            vec![Arc::new(StringArray::from(vec!["Hello", "WORLD"])), Arc::new(Int64Array::from(vec![1, 7]))],
        )?;
        let out = expr.evaluate(&batch)?;
        let strings: Vec<_> = out.as_string::<i32>().iter().flatten().collect();
        assert_eq!(strings, vec!["hello", "world"]);
        let predicate = compiler.compile("n > 5", &schema())?;
        assert_eq!(predicate.data_type, DataType::Boolean);
        Ok(())
    }

    fn concatenation(terms: usize) -> String {
        vec!["word"; terms].join(" || ")
    }

    #[test]
    fn expressions_over_their_bounds_are_refused_by_name() {
        let compiler = ExprCompiler::new();
        let refused = |sql: &str| compiler.compile(sql, &schema()).err().map(|e| e.to_string()).unwrap_or_default();
        // 201 terms and 200 operators: 401 tokens.
        let text = refused(&concatenation(201));
        assert!(text.contains("has 401 terms") && text.contains("the most allowed is 400"), "{text}");
        assert!(text.len() < 300, "the message must not echo the expression: {text}");
        let text = refused(&concatenation(200_000));
        assert!(text.contains("bytes long; the most allowed is 16384"), "{text}");
        let nested = format!("{}word{}", "lower(".repeat(33), ")".repeat(33));
        let text = refused(&nested);
        assert!(text.contains("nests parentheses 33 deep; the most allowed is 32"), "{text}");
        // Quoted text is one token whatever it holds.
        let quoted = format!("word || '{}'", "a || ".repeat(1_000));
        assert!(compiler.compile(&quoted, &schema()).is_ok());
        assert!(compiler.compile("word || 'it''s' || \"word\"", &schema()).is_ok());
        // Each character of a run of unary operators nests one level: each is counted.
        let unary = format!("{}n", "-+".repeat(201));
        let text = refused(&unary);
        assert!(text.contains("has 403 terms"), "{text}");
    }

    /// The token bound keeps DataFusion's recursion shallow: the largest expression allowed compiles (and
    /// is dropped) on a thread with the 2 MiB stack of a tokio worker, in a debug build.
    #[test]
    fn expressions_at_the_token_bound_compile_on_a_small_stack() -> Result<(), Box<dyn std::error::Error>> {
        /// A tokio worker's default stack.
        const WORKER_STACK_BYTES: usize = 2 * 1024 * 1024;
        // 200 terms and 199 operators: 399 tokens, the deepest tree the bound lets through.
        let sql = concatenation(200);
        let compiled = std::thread::Builder::new()
            .stack_size(WORKER_STACK_BYTES)
            .spawn(move || ExprCompiler::new().compile(&sql, &schema()).map(|e| e.data_type))?
            .join()
            .map_err(|_| "compiling panicked")?;
        assert_eq!(compiled?, DataType::Utf8);
        Ok(())
    }

    #[test]
    fn pair_expressions_read_both_records() -> Result<(), Box<dyn std::error::Error>> {
        let compiler = ExprCompiler::new();
        let expr = compiler.compile_pair("a.n + b.n * 10", &schema())?;
        let pair = Arc::new(pair_schema(&schema()));
        let batch = RecordBatch::try_new(
            pair,
            vec![
                Arc::new(StringArray::from(vec!["x"])),
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(StringArray::from(vec!["y"])),
                Arc::new(Int64Array::from(vec![2])),
            ],
        )?;
        let out = expr.evaluate(&batch)?;
        assert_eq!(out.as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0), 21);
        assert!(compiler.compile_pair("c.n", &schema()).is_err(), "only a and b exist");
        Ok(())
    }

    #[test]
    fn an_unknown_column_is_named_in_the_error() {
        let err = ExprCompiler::new().compile("lower(wrd)", &schema()).err();
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("wrd"), "{message}");
    }

    #[test]
    fn a_syntax_error_is_an_error_not_a_panic() {
        assert!(ExprCompiler::new().compile("lower(word", &schema()).is_err());
        assert!(ExprCompiler::new().compile("", &schema()).is_err());
        assert!(ExprCompiler::new().compile("word +* 1", &schema()).is_err());
    }
}
