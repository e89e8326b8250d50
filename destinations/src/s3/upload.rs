//! Putting one object into S3 (single request or multipart).

use std::time::Instant;

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use tracing::{debug, warn};

use super::client::classify;
use super::S3Config;
use crate::DeliveryError;

/// Parts uploaded at the same time in a multipart upload.
const PART_CONCURRENCY: usize = 4;
/// S3's limit on parts per upload.
const MAX_PARTS: u64 = 10_000;

/// Where and how an object is stored.
pub(super) struct Object<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub content_type: &'static str,
    /// User metadata (`x-amz-meta-*`).
    pub metadata: [(&'static str, String); 4],
}

pub(super) async fn upload(
    client: &aws_sdk_s3::Client,
    object: &Object<'_>,
    body: Bytes,
    config: &S3Config,
    deadline: Instant,
) -> Result<(), DeliveryError> {
    let left = deadline.saturating_duration_since(Instant::now());
    let work = async {
        if (body.len() as u64) < config.multipart_threshold_bytes {
            put(client, object, body).await
        } else {
            multipart(client, object, body, config.part_size_bytes).await
        }
    };
    match tokio::time::timeout(left, work).await {
        Ok(result) => result,
        Err(_) => Err(DeliveryError::temporary(format!(
            "writing s3://{}/{} timed out after {} ms",
            object.bucket, object.key, config.timeout_ms
        ))),
    }
}

async fn put(client: &aws_sdk_s3::Client, object: &Object<'_>, body: Bytes) -> Result<(), DeliveryError> {
    let mut request = client
        .put_object()
        .bucket(object.bucket)
        .key(object.key)
        .content_type(object.content_type)
        .body(ByteStream::from(body));
    for (name, value) in &object.metadata {
        request = request.metadata(*name, value);
    }
    request.send().await.map_err(|e| classify("PutObject", object.bucket, object.key, e))?;
    Ok(())
}

async fn multipart(
    client: &aws_sdk_s3::Client,
    object: &Object<'_>,
    body: Bytes,
    part_size: u64,
) -> Result<(), DeliveryError> {
    let mut request = client
        .create_multipart_upload()
        .bucket(object.bucket)
        .key(object.key)
        .content_type(object.content_type)
        // Declared up front so each part's CRC32 (which the SDK computes anyway) is checked by S3
        // when the upload is completed.
        .checksum_algorithm(ChecksumAlgorithm::Crc32);
    for (name, value) in &object.metadata {
        request = request.metadata(*name, value);
    }
    let created = request.send().await.map_err(|e| classify("CreateMultipartUpload", object.bucket, object.key, e))?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| DeliveryError::temporary("CreateMultipartUpload answered without an upload id"))?
        .to_owned();

    // A dropped future (the router's timeout, shutdown) skips the abort below; the abort is
    // spawned so a timeout that fires during it does not cut it short.
    let result = upload_parts(client, object, &upload_id, body, part_size).await;
    if let Err(error) = &result {
        let (client, bucket, key, id) =
            (client.clone(), object.bucket.to_owned(), object.key.to_owned(), upload_id.clone());
        let reason = error.to_string();
        tokio::spawn(async move {
            match client.abort_multipart_upload().bucket(&bucket).key(&key).upload_id(&id).send().await {
                Ok(_) => debug!(%bucket, %key, %reason, "multipart upload aborted"),
                Err(e) => warn!(%bucket, %key, error = %DisplayErrorContext(&e), "aborting a multipart upload failed; a lifecycle rule will have to remove it"),
            }
        });
    }
    result
}

async fn upload_parts(
    client: &aws_sdk_s3::Client,
    object: &Object<'_>,
    upload_id: &str,
    body: Bytes,
    part_size: u64,
) -> Result<(), DeliveryError> {
    let len = body.len() as u64;
    // Bigger parts when the configured size would exceed S3's part count limit.
    let part_size = part_size.max(len.div_ceil(MAX_PARTS)) as usize;
    let parts = (0..body.len().max(1)).step_by(part_size).enumerate().map(|(i, start)| {
        let chunk = body.slice(start..(start + part_size).min(body.len()));
        async move {
            let number = i as i32 + 1;
            let done = client
                .upload_part()
                .bucket(object.bucket)
                .key(object.key)
                .upload_id(upload_id)
                .part_number(number)
                .checksum_algorithm(ChecksumAlgorithm::Crc32)
                .body(ByteStream::from(chunk))
                .send()
                .await
                .map_err(|e| classify("UploadPart", object.bucket, object.key, e))?;
            Ok::<_, DeliveryError>(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(done.e_tag().map(str::to_owned))
                    .set_checksum_crc32(done.checksum_crc32().map(str::to_owned))
                    .build(),
            )
        }
    });
    let mut completed: Vec<CompletedPart> =
        futures_util::stream::iter(parts).buffer_unordered(PART_CONCURRENCY).try_collect().await?;
    completed.sort_by_key(|p| p.part_number());
    let count = completed.len();
    client
        .complete_multipart_upload()
        .bucket(object.bucket)
        .key(object.key)
        .upload_id(upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
        .send()
        .await
        .map_err(|e| classify("CompleteMultipartUpload", object.bucket, object.key, e))?;
    debug!(bucket = object.bucket, key = object.key, parts = count, bytes = len, "multipart upload completed");
    Ok(())
}
