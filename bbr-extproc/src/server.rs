//! The tonic `ExternalProcessor` service. The process around it
//! (listeners, TLS, health, metrics, draining) is in `serve.rs`, behind the
//! `server` feature.
//!
//! Each ext_proc stream gets a task that reads Envoy's messages, drives a
//! [`StreamState`] and sends its replies on an `mpsc` channel, whose
//! receiver is the response stream. The task ends when Envoy closes its
//! side, when the stream answered with an `ImmediateResponse`, or when the
//! conversation is broken (then with a gRPC error status).
//!
//! The task also owns the stream's decision deadline: a timer armed when
//! the state machine starts [awaiting its decision]
//! (StreamState::awaiting_decision), dropped once it decided, and reported
//! to it with [`StreamState::on_deadline`] when it fires. Every stream of
//! one [`BbrExtProc`] holds its chunks in one [`HeldBudget`], and spools to
//! disk within a second one (the disk cap).
//!
//! With a disk spool ([`Settings::spool`]) the task runs the stream's
//! [`SpoolJob`]s on tokio's blocking pool, one at a time, and reads no
//! message from Envoy while [`StreamState::wants_request`] is false (a
//! write is behind, or a spooled body is being replayed): HTTP/2 flow
//! control then holds Envoy back. The next job is started before the
//! replies of the last one are sent, so a replay reads one piece ahead.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::held::{HeldBudget, SpoolDone, SpoolJob};
use crate::metrics::Metrics;
use crate::proto::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use crate::proto::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use crate::stream::{Settings, StreamState};
use crate::stream_trace::{StreamTrace, StreamTracer};

/// The gRPC service name reported by health checks.
pub const SERVICE_NAME: &str = "envoy.service.ext_proc.v3.ExternalProcessor";

/// Replies buffered per stream before the task waits for Envoy to read.
const REPLY_BUFFER: usize = 32;

/// The `ExternalProcessor` implementation.
#[derive(Debug, Clone)]
pub struct BbrExtProc {
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    budget: Arc<HeldBudget>,
    disk: Arc<HeldBudget>,
    decision_timeouts: Arc<AtomicU64>,
    tracer: Option<Arc<dyn StreamTracer>>,
}

impl BbrExtProc {
    /// A processor with these settings, recording into `metrics`; its
    /// streams share one [`HeldBudget`] of `settings.max_held_bytes`, and
    /// one of `settings.max_spooled_bytes` for the disk spool.
    pub fn new(settings: Arc<Settings>, metrics: Arc<Metrics>) -> Self {
        let budget = Arc::new(HeldBudget::new(settings.max_held_bytes));
        let disk = Arc::new(HeldBudget::new(settings.max_spooled_bytes));
        Self {
            settings,
            metrics,
            budget,
            disk,
            decision_timeouts: Arc::default(),
            tracer: None,
        }
    }

    /// Opens one span per stream with `tracer` (see [`StreamTracer`]).
    pub fn with_stream_tracer(mut self, tracer: Arc<dyn StreamTracer>) -> Self {
        self.tracer = Some(tracer);
        self
    }

    /// The budget every stream holds its chunks in: bytes held now (a
    /// gauge) and requests refused over the cap (a counter).
    pub fn held_budget(&self) -> &Arc<HeldBudget> {
        &self.budget
    }

    /// The disk cap every stream spools within: bytes on disk now (a
    /// gauge) and requests refused over the cap (a counter).
    pub fn spool_budget(&self) -> &Arc<HeldBudget> {
        &self.disk
    }

    /// Requests refused because the decision deadline passed (a counter).
    pub fn decision_timeouts(&self) -> u64 {
        self.decision_timeouts.load(Ordering::Relaxed)
    }
}

#[tonic::async_trait]
impl ExternalProcessor for BbrExtProc {
    type ProcessStream = ReceiverStream<Result<ProcessingResponse, Status>>;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(REPLY_BUFFER);
        let settings = self.settings.clone();
        let metrics = self.metrics.clone();
        let budget = self.budget.clone();
        let disk = self.disk.clone();
        let decision_timeouts = self.decision_timeouts.clone();
        let active = metrics.stream_started();
        let mut trace = StreamTrace::new(self.tracer.clone());
        tokio::spawn(async move {
            let _active = active;
            let deadline = settings.decision_deadline;
            let mut state = StreamState::with_budget(settings, budget).with_disk_budget(disk);
            let mut out = Vec::new();
            let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
            let mut job: Option<tokio::task::JoinHandle<SpoolDone>> = None;
            'stream: loop {
                let event = tokio::select! {
                    done = async { job.as_mut().expect("guarded").await }, if job.is_some() => {
                        job = None;
                        Event::Spooled(done.unwrap_or(SpoolDone::Lost))
                    }
                    () = async { timer.as_mut().expect("guarded").as_mut().await }, if timer.is_some() => {
                        Event::Deadline
                    }
                    // Without a job out nothing else can wake the task.
                    message = inbound.message(), if state.wants_request() || job.is_none() => {
                        Event::Message(message)
                    }
                };
                match event {
                    Event::Spooled(done) => state.on_spool_done(done, &mut out),
                    Event::Deadline => {
                        timer = None;
                        if state.on_deadline(&mut out) {
                            decision_timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Event::Message(Ok(Some(message))) => {
                        trace.on_message(&message);
                        if let Err(error) = state.on_request(message, &mut out) {
                            tracing::warn!(%error, "ext_proc conversation broken");
                            // The receiver may be gone already; nothing else to do.
                            let _ = tx.send(Err(error.into())).await;
                            break;
                        }
                    }
                    // Envoy ends side streams with RST_STREAM as often as
                    // with a clean half-close; both are a normal end here.
                    Event::Message(_) => break,
                }
                // Started before the replies go out: the next read runs
                // while they are sent.
                if job.is_none()
                    && let Some(next) = state.next_spool_job()
                {
                    job = Some(tokio::task::spawn_blocking(move || SpoolJob::run(next)));
                }
                trace.on_replies(&mut out, state.report());
                for reply in out.drain(..) {
                    if tx.send(Ok(reply)).await.is_err() {
                        break 'stream;
                    }
                }
                if state.is_finished() {
                    break;
                }
                if !state.awaiting_decision() {
                    timer = None;
                } else if timer.is_none() {
                    // Armed right after the message with the first body byte.
                    timer = Some(Box::pin(tokio::time::sleep(deadline)));
                }
            }
            let report = state.report();
            if let Some(verdict) = &report.verdict {
                tracing::debug!(outcome = verdict.label(), model = ?report_model(verdict),
                    body = ?report.body_kind, bytes = report.bytes_before_decision, "request decided");
            }
            trace.finish(report);
            metrics.record(report);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// What woke a stream's task.
// One lives on the stack per turn of the loop; boxing the message would
// allocate per message.
#[allow(clippy::large_enum_variant)]
enum Event {
    Message(Result<Option<ProcessingRequest>, Status>),
    Deadline,
    Spooled(SpoolDone),
}

fn report_model(verdict: &crate::stream::Verdict) -> Option<&str> {
    match verdict {
        crate::stream::Verdict::Found(model) => Some(model.as_str()),
        _ => None,
    }
}
