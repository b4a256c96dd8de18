//! CloudWatch Logs through `PutLogEvents`, in requests within its limits, creating
//! the log group and stream when missing.

use std::sync::Arc;

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;

use super::{Outcome, SinkError};
use crate::config::CloudWatchConfig;
use crate::pipeline::Batch;
use crate::render::render;

/// `PutLogEvents` limits: events per request, bytes per request (message bytes plus
/// 26 per event), bytes per event.
const MAX_EVENTS: usize = 10_000;
const MAX_REQUEST_BYTES: usize = 1_048_576;
const EVENT_OVERHEAD: usize = 26;
const MAX_EVENT_BYTES: usize = 256 * 1024 - EVENT_OVERHEAD;
/// Events in one request must span less than 24 hours.
const MAX_SPAN_MS: i64 = 24 * 3600 * 1000 - 1;

pub struct CloudWatch {
    client: Client,
    group: String,
    stream: String,
    create: bool,
    /// Requests of the batch being delivered that already went through, so a retry
    /// after a partial failure sends the rest only: (first batch's address, count, done).
    progress: Option<(usize, usize, usize)>,
}

impl CloudWatch {
    pub async fn new(cfg: &CloudWatchConfig) -> Self {
        use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
        // rustls on ring, as in fargo's deploy client: the SDK's default TLS needs a long C build.
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_secs(3))
                    .operation_attempt_timeout(std::time::Duration::from_secs(20))
                    .build(),
            )
            // The delivery loop retries with its own backoff and deadline.
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2));
        if let Some(region) = &cfg.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &cfg.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let conf = loader.load().await;
        Self {
            client: Client::new(&conf),
            group: cfg.log_group.clone(),
            stream: cfg.log_stream.clone(),
            create: cfg.create,
            progress: None,
        }
    }

    pub async fn export(&mut self, batches: &[Arc<Batch>]) -> Result<Outcome, SinkError> {
        let key = (
            batches.first().map_or(0, |b| Arc::as_ptr(b) as usize),
            batches.len(),
        );
        let requests = build_requests(batches);
        let mut done = match self.progress {
            Some((ptr, len, done)) if (ptr, len) == key => done,
            _ => 0,
        };
        let mut outcome = Outcome::default();
        while done < requests.len() {
            let events = &requests[done];
            let rejected = match self.put(events.clone()).await {
                Err(e) if e.code() == Some("ResourceNotFoundException") && self.create => {
                    self.ensure_destination().await?;
                    self.put(events.clone()).await
                }
                r => r,
            };
            match rejected {
                Ok(n) => {
                    if n > 0 {
                        outcome.rejected += n;
                        outcome.message = "events outside CloudWatch's accepted time range".into();
                    }
                    done += 1;
                    self.progress = Some((key.0, key.1, done));
                }
                Err(e) => return Err(classify(&e)),
            }
        }
        self.progress = None;
        Ok(outcome)
    }

    /// One `PutLogEvents`; the number of events CloudWatch refused for their timestamps.
    async fn put(
        &self,
        events: Vec<InputLogEvent>,
    ) -> Result<u64, SdkError<aws_sdk_cloudwatchlogs::operation::put_log_events::PutLogEventsError>>
    {
        let n = events.len() as i64;
        let out = self
            .client
            .put_log_events()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .set_log_events(Some(events))
            .send()
            .await?;
        let Some(info) = out.rejected_log_events_info() else {
            return Ok(0);
        };
        let mut rejected = 0i64;
        let old = info
            .too_old_log_event_end_index()
            .max(info.expired_log_event_end_index());
        if let Some(end) = old {
            rejected += i64::from(end) + 1;
        }
        if let Some(start) = info.too_new_log_event_start_index() {
            rejected += n - i64::from(start);
        }
        Ok(rejected.clamp(0, n) as u64)
    }

    async fn ensure_destination(&self) -> Result<(), SinkError> {
        let r = self
            .client
            .create_log_group()
            .log_group_name(&self.group)
            .send()
            .await;
        if let Err(e) = r
            && e.code() != Some("ResourceAlreadyExistsException")
        {
            return Err(classify(&e));
        }
        let r = self
            .client
            .create_log_stream()
            .log_group_name(&self.group)
            .log_stream_name(&self.stream)
            .send()
            .await;
        if let Err(e) = r
            && e.code() != Some("ResourceAlreadyExistsException")
        {
            return Err(classify(&e));
        }
        tracing::info!(group = %self.group, stream = %self.stream, "created CloudWatch log destination");
        Ok(())
    }
}

/// Renders `batches` as events sorted by time (CloudWatch requires it) and cut into
/// requests within its count, size and time-span limits.
fn build_requests(batches: &[Arc<Batch>]) -> Vec<Vec<InputLogEvent>> {
    let mut buf = Vec::new();
    let mut lines: Vec<(i64, std::ops::Range<usize>)> = Vec::new();
    for b in batches {
        render(&b.payload, &mut buf, |t, r| lines.push((t, r)));
    }
    lines.sort_by_key(|(t, _)| *t);
    let mut requests = Vec::new();
    let mut current: Vec<InputLogEvent> = Vec::new();
    let mut bytes = 0;
    let mut first_ts = 0;
    for (ts, range) in lines {
        let msg = truncate(String::from_utf8_lossy(&buf[range]).into_owned());
        let size = msg.len() + EVENT_OVERHEAD;
        if !current.is_empty()
            && (current.len() == MAX_EVENTS
                || bytes + size > MAX_REQUEST_BYTES
                || ts - first_ts > MAX_SPAN_MS)
        {
            requests.push(std::mem::take(&mut current));
            bytes = 0;
        }
        if current.is_empty() {
            first_ts = ts;
        }
        bytes += size;
        let Ok(event) = InputLogEvent::builder().timestamp(ts).message(msg).build() else {
            continue;
        };
        current.push(event);
    }
    if !current.is_empty() {
        requests.push(current);
    }
    requests
}

/// Cuts an event to CloudWatch's per-event limit on a character boundary.
fn truncate(mut msg: String) -> String {
    if msg.len() > MAX_EVENT_BYTES {
        let marker = "...[truncated]";
        let mut cut = MAX_EVENT_BYTES - marker.len();
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg.truncate(cut);
        msg.push_str(marker);
    }
    msg
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> SinkError {
    let detail = match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            format!(
                "{}: {}",
                err.code().unwrap_or("service error"),
                err.message().unwrap_or("")
            )
        }
        other => format!("{other}"),
    };
    let message = format!("CloudWatch Logs: {detail}");
    match e {
        SdkError::ServiceError(s) => match s.err().code() {
            Some(
                "ThrottlingException"
                | "ServiceUnavailableException"
                | "LimitExceededException"
                | "ResourceNotFoundException",
            ) => SinkError::retryable(message),
            _ => SinkError::permanent(message),
        },
        // Timeouts, connection failures and unparseable responses may pass.
        _ => SinkError::retryable(message),
    }
}
