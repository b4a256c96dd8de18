//! Between the receiver and the exporters: admission into every exporter's bounded
//! buffer (all or nothing, so a refused request can be retried without duplicates),
//! the per-exporter delivery loop with retries and backoff, and the counters.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{BufferConfig, ReceiverConfig};
use crate::sinks::{Sink, SinkError};

/// What a request carried, kept in its OTLP form until each exporter renders it.
#[derive(Debug)]
pub enum Payload {
    Logs(ExportLogsServiceRequest),
    Spans(ExportTraceServiceRequest),
}

/// One accepted request, shared by every exporter that has yet to deliver it.
#[derive(Debug)]
pub struct Batch {
    pub payload: Payload,
    pub records: u64,
    _sender: SenderHold,
}

/// The bytes one connection has in the pipeline; released when every exporter is done.
#[derive(Debug)]
struct SenderHold {
    held: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for SenderHold {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A batch queued for one exporter; the permit is that exporter's buffer space.
#[derive(Debug)]
pub struct Item {
    pub batch: Arc<Batch>,
    _permit: OwnedSemaphorePermit,
}

#[derive(Debug, Default)]
pub struct SignalCounters {
    pub received: AtomicU64,
    pub rejected: AtomicU64,
    pub refused: AtomicU64,
}

#[derive(Debug)]
pub struct ExporterCounters {
    pub name: String,
    pub kind: &'static str,
    pub exported: AtomicU64,
    pub retried: AtomicU64,
    pub dropped: AtomicU64,
    pub rejected: AtomicU64,
    pub capacity: usize,
    space: Arc<Semaphore>,
}

impl ExporterCounters {
    pub fn buffered_bytes(&self) -> usize {
        self.capacity.saturating_sub(self.space.available_permits())
    }
}

/// Why a request was not admitted; every case is worth retrying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// This exporter's buffer has no room for the request.
    Full { exporter: String },
    /// This connection already holds its share of the buffers.
    SenderShare { held: usize, limit: usize },
    /// The sidecar is past its receiving window and flushing.
    Closed,
}

struct Queue {
    tx: mpsc::UnboundedSender<Item>,
    counters: Arc<ExporterCounters>,
}

pub struct Pipeline {
    queues: RwLock<Vec<Queue>>,
    exporters: Vec<Arc<ExporterCounters>>,
    senders: Mutex<HashMap<SocketAddr, Arc<AtomicUsize>>>,
    sender_limit: usize,
    pub logs: SignalCounters,
    pub spans: SignalCounters,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("exporters", &self.exporters)
            .finish_non_exhaustive()
    }
}

/// The running delivery loops; [`Workers::finish`] waits for them to drain.
pub struct Workers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    abandon: CancellationToken,
}

impl Pipeline {
    /// Starts one delivery loop per sink.
    pub fn start(
        receiver: &ReceiverConfig,
        sinks: Vec<(String, BufferConfig, Sink)>,
    ) -> (Arc<Self>, Workers) {
        let abandon = CancellationToken::new();
        let mut queues = Vec::new();
        let mut exporters = Vec::new();
        let mut tasks = Vec::new();
        let mut smallest = usize::MAX;
        for (name, buffer, sink) in sinks {
            // Permits are counted in u32 by tokio; 4 GiB per exporter is far past sensible.
            let capacity = buffer.max_bytes.clamp(1, u32::MAX as usize);
            smallest = smallest.min(capacity);
            let space = Arc::new(Semaphore::new(capacity));
            let counters = Arc::new(ExporterCounters {
                name,
                kind: sink.kind(),
                exported: AtomicU64::new(0),
                retried: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                capacity,
                space,
            });
            let (tx, rx) = mpsc::unbounded_channel();
            tasks.push(tokio::spawn(deliver_loop(
                sink,
                rx,
                counters.clone(),
                buffer,
                abandon.clone(),
            )));
            exporters.push(counters.clone());
            queues.push(Queue { tx, counters });
        }
        let share = receiver.sender_share.clamp(0.01, 1.0);
        let sender_limit = if smallest == usize::MAX {
            usize::MAX
        } else {
            ((smallest as f64) * share) as usize
        };
        let pipeline = Arc::new(Self {
            queues: RwLock::new(queues),
            exporters,
            senders: Mutex::new(HashMap::new()),
            sender_limit,
            logs: SignalCounters::default(),
            spans: SignalCounters::default(),
        });
        (pipeline, Workers { tasks, abandon })
    }

    pub fn exporters(&self) -> &[Arc<ExporterCounters>] {
        &self.exporters
    }

    fn hold_for(&self, peer: Option<SocketAddr>) -> Arc<AtomicUsize> {
        let Some(peer) = peer else {
            return Arc::new(AtomicUsize::new(0));
        };
        let mut senders = self.senders.lock().unwrap_or_else(|e| e.into_inner());
        if senders.len() > 4096 {
            // Connections come and go; forget the ones holding nothing.
            senders.retain(|_, h| h.load(Ordering::Acquire) > 0);
        }
        senders.entry(peer).or_default().clone()
    }

    /// Puts `payload` (`bytes` encoded, `records` records) in every exporter's buffer,
    /// or in none of them.
    pub fn admit(
        &self,
        payload: Payload,
        records: u64,
        bytes: usize,
        peer: Option<SocketAddr>,
    ) -> Result<(), Refusal> {
        let held = self.hold_for(peer);
        let before = held.fetch_add(bytes, Ordering::AcqRel);
        let hold = SenderHold { held, bytes };
        // A sender holding nothing always gets in, so one huge request still fits.
        if before > 0 && before + bytes > self.sender_limit {
            return Err(Refusal::SenderShare {
                held: before,
                limit: self.sender_limit,
            });
        }
        let queues = self.queues.read().unwrap_or_else(|e| e.into_inner());
        if queues.is_empty() {
            return Err(Refusal::Closed);
        }
        let mut permits = Vec::with_capacity(queues.len());
        for q in queues.iter() {
            let need = bytes.clamp(1, q.counters.capacity) as u32;
            match q.counters.space.clone().try_acquire_many_owned(need) {
                Ok(p) => permits.push(p),
                Err(_) => {
                    return Err(Refusal::Full {
                        exporter: q.counters.name.clone(),
                    });
                }
            }
        }
        let batch = Arc::new(Batch {
            payload,
            records,
            _sender: hold,
        });
        for (q, permit) in queues.iter().zip(permits) {
            let item = Item {
                batch: batch.clone(),
                _permit: permit,
            };
            if q.tx.send(item).is_err() {
                // The loop only ends after close(); count rather than lose silently.
                q.counters.dropped.fetch_add(records, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Stops admitting; the delivery loops finish what they hold and end.
    pub fn close(&self) {
        self.queues
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Workers {
    /// Waits for every loop to deliver what it holds, up to `timeout`; then the
    /// loops give up and count the rest as dropped.
    pub async fn finish(self, timeout: Duration) {
        let Workers { tasks, abandon } = self;
        let all = futures_join_all(tasks);
        tokio::pin!(all);
        if tokio::time::timeout(timeout, &mut all).await.is_err() {
            abandon.cancel();
            // Abandoning is immediate, so this returns at once.
            all.await;
        }
    }
}

async fn futures_join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        if let Err(e) = t.await {
            tracing::error!(error = %e, "an exporter task failed");
        }
    }
}

async fn deliver_loop(
    mut sink: Sink,
    mut rx: mpsc::UnboundedReceiver<Item>,
    counters: Arc<ExporterCounters>,
    cfg: BufferConfig,
    abandon: CancellationToken,
) {
    let max_records = cfg.batch_records.max(1) as u64;
    let mut next_allowed = Instant::now();
    loop {
        let first = tokio::select! {
            item = rx.recv() => item,
            () = abandon.cancelled() => None,
        };
        let Some(first) = first else { break };
        let mut records = first.batch.records;
        let mut items = vec![first];
        while records < max_records {
            match rx.try_recv() {
                Ok(item) => {
                    records += item.batch.records;
                    items.push(item);
                }
                Err(_) => break,
            }
        }
        if cfg.rate_limit > 0 {
            tokio::select! {
                () = tokio::time::sleep_until(next_allowed) => {}
                () = abandon.cancelled() => {
                    counters.dropped.fetch_add(records, Ordering::Relaxed);
                    break;
                }
            }
            let spend = Duration::from_secs_f64(records as f64 / f64::from(cfg.rate_limit));
            next_allowed = next_allowed.max(Instant::now()) + spend;
        }
        // One signal per export call, so a retry never resends the other signal's records.
        let (logs, spans): (Vec<Arc<Batch>>, Vec<Arc<Batch>>) = items
            .iter()
            .map(|i| i.batch.clone())
            .partition(|b| matches!(b.payload, Payload::Logs(_)));
        for group in [logs, spans] {
            if !group.is_empty() {
                let n = group.iter().map(|b| b.records).sum();
                deliver(&mut sink, &group, n, &counters, &cfg, &abandon).await;
            }
        }
        // Dropping the items frees their buffer space for senders waiting to retry.
        drop(items);
    }
    // Whatever is still queued after abandoning could not be delivered in time.
    rx.close();
    let mut left = 0;
    while let Ok(item) = rx.try_recv() {
        left += item.batch.records;
    }
    if left > 0 {
        counters.dropped.fetch_add(left, Ordering::Relaxed);
    }
    if let Err(e) = sink.close().await {
        tracing::warn!(exporter = %counters.name, error = %e, "exporter did not close cleanly");
    }
}

async fn deliver(
    sink: &mut Sink,
    batches: &[Arc<Batch>],
    records: u64,
    counters: &ExporterCounters,
    cfg: &BufferConfig,
    abandon: &CancellationToken,
) {
    let mut backoff = cfg.initial_backoff;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let result = tokio::select! {
            r = sink.export(batches) => r,
            () = abandon.cancelled() => Err(SinkError::permanent("flush deadline passed")),
        };
        match result {
            Ok(outcome) => {
                counters
                    .exported
                    .fetch_add(records - outcome.rejected.min(records), Ordering::Relaxed);
                if outcome.rejected > 0 {
                    counters
                        .rejected
                        .fetch_add(outcome.rejected, Ordering::Relaxed);
                    tracing::warn!(
                        exporter = %counters.name,
                        rejected = outcome.rejected,
                        reason = %outcome.message,
                        "destination rejected records"
                    );
                }
                return;
            }
            Err(e) if e.retryable && !abandon.is_cancelled() => {
                counters.retried.fetch_add(records, Ordering::Relaxed);
                let wait = e.retry_after.unwrap_or(backoff).min(cfg.max_backoff);
                if attempt == 1 || attempt.is_power_of_two() {
                    tracing::warn!(
                        exporter = %counters.name,
                        attempt,
                        records,
                        retry_in_ms = wait.as_millis() as u64,
                        error = %e,
                        "export failed; retrying"
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = abandon.cancelled() => {}
                }
                backoff = (backoff * 2).min(cfg.max_backoff);
            }
            Err(e) => {
                counters.dropped.fetch_add(records, Ordering::Relaxed);
                tracing::error!(
                    exporter = %counters.name,
                    records,
                    error = %e,
                    "export failed for good; records dropped"
                );
                return;
            }
        }
    }
}
