//! The crate's single error type.
//!
//! The router dead-letters an event with `TransformError::to_string()`, and `sluice validate` prints
//! it for a script that does not compile, so `Display` always names the transformation (id and
//! file), the line when Rhai knows it, and the message.

use std::fmt;
use std::path::PathBuf;

/// Which sandbox limit stopped a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Operations,
    CallDepth,
    StringSize,
    ArraySize,
    MapSize,
    WallClock,
    /// Expression nesting too deep (checked when compiling, and for code reached by `eval`).
    ExprDepth,
}

/// Where a message came from: the transformation id and its script file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptRef {
    pub id: String,
    pub file: PathBuf,
}

impl fmt::Display for ScriptRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transformation {} ({})", self.id, self.file.display())
    }
}

/// Formats " line N" when a line is known, so every variant reads the same way.
struct Line(Option<usize>);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, " line {line}"),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    /// The script file could not be read.
    #[error("{script}: cannot read script: {source}")]
    Read {
        script: ScriptRef,
        #[source]
        source: std::io::Error,
    },

    /// The script does not parse, or does not define `transform` / `transform_batch`.
    #[error("{script}{}: {message}", Line(*line))]
    Compile {
        script: ScriptRef,
        line: Option<usize>,
        message: String,
    },

    /// The script failed while running on an event (a thrown error, a type error, ...).
    #[error("{script}{}: {message}", Line(*line))]
    Runtime {
        script: ScriptRef,
        line: Option<usize>,
        message: String,
    },

    /// The script was stopped by one of its sandbox limits.
    #[error("{script}{}: {message}", Line(*line))]
    Limit {
        script: ScriptRef,
        kind: LimitKind,
        line: Option<usize>,
        message: String,
    },

    /// The script returned something that is not an event, `()` or an array of events.
    #[error("{script}: {message}")]
    BadOutput { script: ScriptRef, message: String },

    /// The stored event is not a JSON object (the script never ran).
    #[error("event is not a JSON object: {0}")]
    BadEvent(String),

    /// A chain names a transformation that is not configured.
    #[error("unknown transformation {0:?}")]
    UnknownTransformation(String),

    /// Two configured transformations share one id.
    #[error("transformation id {0:?} is configured twice")]
    DuplicateId(String),

    /// The `params` of a transformation cannot be handed to Rhai.
    #[error("{script}: invalid params: {message}")]
    Params { script: ScriptRef, message: String },

    /// Tooling (`sluice transform test`) could not read or parse its input files.
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
}

impl TransformError {
    /// True when a sandbox limit (operations, depth, sizes, wall clock) stopped the script: the
    /// event is not at fault in a way a retry could fix, and an operator may want to raise limits.
    pub fn is_limit(&self) -> bool {
        matches!(self, TransformError::Limit { .. })
    }

    /// The limit that stopped the script, if any.
    pub fn limit_kind(&self) -> Option<LimitKind> {
        match self {
            TransformError::Limit { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// The script line the error points at, when Rhai reported one.
    pub fn line(&self) -> Option<usize> {
        match self {
            TransformError::Compile { line, .. }
            | TransformError::Runtime { line, .. }
            | TransformError::Limit { line, .. } => *line,
            _ => None,
        }
    }

    /// Whether this error concerns a single event (dead-letter it, keep going) rather than the
    /// configuration (fail the start or the reload).
    pub fn is_event_error(&self) -> bool {
        matches!(
            self,
            TransformError::Runtime { .. }
                | TransformError::Limit { .. }
                | TransformError::BadOutput { .. }
                | TransformError::BadEvent(_)
        )
    }
}
