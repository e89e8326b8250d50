/// Everything that can go wrong in the event log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("event log i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The disk budget is used up; the caller should back off (503 + Retry-After).
    #[error("event log is full: {used} of {budget} bytes on disk")]
    Full { used: u64, budget: u64 },
    /// A record in a sealed segment failed its checksum: the disk lost data under us.
    #[error("corrupt record in segment {segment} at byte {position}: {reason}")]
    Corrupt { segment: String, position: u64, reason: String },
    /// An earlier write failed half-way and the tail could not be cut back; no more appends.
    #[error("event log is unavailable after a failed write: {0}")]
    Poisoned(String),
    #[error("invalid event log setting: {0}")]
    Config(String),
    #[error("event log writer has stopped")]
    Closed,
    /// The log cannot take more right now (a producer queue at its bound); the caller should
    /// back off as for [`LogError::Full`] (503 + Retry-After).
    #[error("event log is busy: {0}")]
    Backlog(String),
    /// The log's store cannot be reached (a broker down, a timed-out acknowledgement): nothing
    /// of the append counts as durable (503 + Retry-After).
    #[error("event log is unavailable: {0}")]
    Unavailable(String),
}
