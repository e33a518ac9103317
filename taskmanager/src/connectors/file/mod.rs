//! The file connector: a bounded source reading newline-delimited JSON, CSV or lines ([`source`]), and a
//! sink writing JSON-lines part files, at least once or exactly once by two-phase commit ([`sink`]).
mod sink;
mod source;

pub use sink::FileSinkWriter;
pub use source::FileSourceReader;
