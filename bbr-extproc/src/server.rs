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
//! one [`BbrExtProc`] holds its chunks in one [`HeldBudget`].

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::held::HeldBudget;
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
    decision_timeouts: Arc<AtomicU64>,
    tracer: Option<Arc<dyn StreamTracer>>,
}

impl BbrExtProc {
    /// A processor with these settings, recording into `metrics`; its
    /// streams share one [`HeldBudget`] of `settings.max_held_bytes`.
    pub fn new(settings: Arc<Settings>, metrics: Arc<Metrics>) -> Self {
        let budget = Arc::new(HeldBudget::new(settings.max_held_bytes));
        Self {
            settings,
            metrics,
            budget,
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
        let decision_timeouts = self.decision_timeouts.clone();
        let active = metrics.stream_started();
        let mut trace = StreamTrace::new(self.tracer.clone());
        tokio::spawn(async move {
            let _active = active;
            let deadline = settings.decision_deadline;
            let mut state = StreamState::with_budget(settings, budget);
            let mut out = Vec::new();
            let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
            'stream: loop {
                let message = match timer.as_mut() {
                    Some(timer) => tokio::select! {
                        message = inbound.message() => Some(message),
                        () = timer.as_mut() => None,
                    },
                    None => Some(inbound.message().await),
                };
                match message {
                    None => {
                        timer = None;
                        if state.on_deadline(&mut out) {
                            decision_timeouts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some(Ok(Some(message))) => {
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
                    Some(_) => break,
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

fn report_model(verdict: &crate::stream::Verdict) -> Option<&str> {
    match verdict {
        crate::stream::Verdict::Found(model) => Some(model.as_str()),
        _ => None,
    }
}
