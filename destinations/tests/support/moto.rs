//! Test-only: the moto S3 server from `scripts/backends.sh` and a client for the tests' own setup
//! and checks.

#![allow(dead_code)]

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, ResponseChecksumValidation};
use rand::distr::Alphanumeric;
use rand::Rng;
use sluice_destinations::s3::{S3Config, S3Format};

/// The moto endpoint: `SLUICE_TEST_S3_ENDPOINT` or the one `scripts/backends.sh` starts. Panics
/// (never skips) when nothing answers there.
pub fn endpoint() -> String {
    let endpoint = std::env::var("SLUICE_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into());
    let host = endpoint.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/');
    if std::net::TcpStream::connect(host).is_err() {
        panic!("no S3 server at {endpoint} (SLUICE_TEST_S3_ENDPOINT): run `scripts/backends.sh start` first");
    }
    endpoint
}

pub fn client(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .force_path_style(true)
        // moto 5.1 returns a multipart object's composite CRC32 without S3's "-{parts}" suffix, so
        // the SDK would check it against the whole body and fail. The tests compare bodies anyway.
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A moto client, its endpoint and a new, empty bucket that no other test uses.
pub async fn fresh_bucket(test: &str) -> (aws_sdk_s3::Client, String, String) {
    let endpoint = endpoint();
    let client = client(&endpoint);
    let suffix: String = rand::rng().sample_iter(Alphanumeric).take(8).map(|c| char::from(c).to_ascii_lowercase()).collect();
    let bucket = format!("sluice-{test}-{suffix}").replace('_', "-");
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    (client, endpoint, bucket)
}

/// An `s3` sink writing gzip NDJSON under `events/raw/` in `bucket` on moto, with the documented
/// defaults for the rest.
pub fn sink_config(endpoint: &str, bucket: &str) -> S3Config {
    S3Config {
        bucket: bucket.into(),
        prefix: "events/raw/".into(),
        region: Some("us-east-1".into()),
        endpoint: Some(endpoint.into()),
        force_path_style: true,
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        session_token: None,
        format: S3Format::NdjsonGzip,
        gzip_level: None,
        multipart_threshold_bytes: 16 * 1024 * 1024,
        part_size_bytes: 8 * 1024 * 1024,
        timeout_ms: 60_000,
    }
}
