/// Errors of the router and its dead-letter store.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error(transparent)]
    Log(#[from] sluice_eventlog::LogError),
    #[error(transparent)]
    Transform(#[from] sluice_transformer::TransformError),
    #[error("destination {destination}: {error}")]
    Destination { destination: String, error: sluice_destinations::DeliveryError },
    /// A dead-letter entry that cannot be replayed as it is (it stays in the store).
    #[error("replay: {0}")]
    Replay(String),
    #[error("dead-letter store: {0}")]
    DeadLetter(String),
    #[error("dead-letter store i/o: {0}")]
    Io(#[from] std::io::Error),
}
