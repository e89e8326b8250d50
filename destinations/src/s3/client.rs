//! The S3 client and the classification of its failures, shared by the `s3` sink and the
//! Snowflake sink's S3 stage so both get the same timeouts, credentials handling and retry rules.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::DeliveryError;

/// What a client is built from.
pub(crate) struct Settings<'a> {
    /// Unset: the standard chain (`AWS_REGION`, profile, instance metadata); with a custom
    /// `endpoint` and no region found, `us-east-1`.
    pub region: Option<&'a str>,
    /// An S3-compatible store (MinIO, Ceph, moto).
    pub endpoint: Option<&'a str>,
    pub force_path_style: bool,
    /// Static credentials, used only when both are set; else the standard chain.
    pub access_key_id: Option<&'a str>,
    pub secret_access_key: Option<&'a str>,
    pub session_token: Option<&'a str>,
    /// Bounds each request attempt (and, up to 10 s, the connect).
    pub timeout: Duration,
}

/// Builds a client from the settings and the standard AWS chain. Makes no request to S3, but the
/// chain may read profile files and query instance metadata for the region.
pub(crate) async fn build(settings: &Settings<'_>) -> Result<aws_sdk_s3::Client, DeliveryError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = settings.region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    if let Some(endpoint) = settings.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let (Some(key), Some(secret)) = (settings.access_key_id, settings.secret_access_key) {
        let token = settings.session_token.map(str::to_owned);
        loader = loader.credentials_provider(Credentials::new(key, secret, token, None, "sluice-config"));
    }
    let shared = loader.load().await;
    let mut builder = aws_sdk_s3::config::Builder::from(&shared).force_path_style(settings.force_path_style);
    if shared.region().is_none() {
        if settings.endpoint.is_none() {
            return Err(DeliveryError::Config("no AWS region: set `region` or AWS_REGION (or a profile region)".into()));
        }
        // S3-compatible stores ignore the region, but SigV4 signing needs one.
        builder = builder.region(Region::from_static("us-east-1"));
    }
    // Each request attempt is bounded by the batch timeout; the SDK retries a failed request
    // (one part, not the whole object) a few times before the batch fails.
    builder = builder.timeout_config(
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .operation_attempt_timeout(settings.timeout)
            .build(),
    );
    Ok(aws_sdk_s3::Client::from_conf(builder.build()))
}

/// S3 error codes that retrying the same batch cannot fix: the bucket is missing or misnamed, or
/// the credentials are wrong or lack permission. All need an operator to change the bucket, the
/// policy or the config; until then every attempt gets the same answer, so the batch goes to the
/// dead-letter store (to be replayed once fixed) instead of blocking this destination's retries.
const PERMANENT_CODES: [&str; 12] = [
    "AccessDenied",
    "AllAccessDisabled",
    "AccountProblem",
    "AuthorizationHeaderMalformed",
    "InvalidAccessKeyId",
    "InvalidBucketName",
    "InvalidBucketState",
    "NoSuchBucket",
    "PermanentRedirect",
    "SignatureDoesNotMatch",
    "InvalidArgument",
    "EntityTooLarge",
];

/// Codes that say "later": throttling, S3 overload, a slow client. Listed because some come with
/// a 4xx status (`RequestTimeout` is 400, `ExpiredToken` may be refreshed by the credentials chain).
const TEMPORARY_CODES: [&str; 9] = [
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "ExpiredToken",
    "NoSuchUpload",
];

/// Maps an SDK failure to the router's two classes. Anything not known to be permanent is
/// temporary: a wrong "temporary" costs retries, a wrong "permanent" dead-letters good data.
pub(crate) fn classify<E>(
    operation: &str,
    bucket: &str,
    key: &str,
    error: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> DeliveryError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let code = error.code().map(str::to_owned);
    let message = error.message().map(str::to_owned);
    let reason = match (&code, &message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.clone(),
        _ => DisplayErrorContext(&error).to_string(),
    };
    let status_text = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
    let reason = format!("{operation} s3://{bucket}/{key} failed{status_text}: {reason}");
    match (&error, code.as_deref()) {
        (_, Some(code)) if PERMANENT_CODES.contains(&code) => DeliveryError::permanent(reason),
        (_, Some(code)) if TEMPORARY_CODES.contains(&code) => DeliveryError::temporary(reason),
        // Timeouts, connection failures, unreadable responses: nothing says the next try fails.
        (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_), _) => {
            DeliveryError::temporary(reason)
        }
        // An unknown code: judge by the HTTP status like any HTTP destination.
        _ => DeliveryError::from_status(status, reason, None),
    }
}
