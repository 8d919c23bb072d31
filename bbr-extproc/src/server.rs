//! The tonic `ExternalProcessor` service. The process around it
//! (listeners, TLS, health, metrics, draining) is in `serve.rs`, behind the
//! `server` feature.
//!
//! Each ext_proc stream gets a task that reads Envoy's messages, drives a
//! [`StreamState`] and sends its replies on an `mpsc` channel, whose
//! receiver is the response stream. The task ends when Envoy closes its
//! side, when the stream answered with an `ImmediateResponse`, or when the
//! conversation is broken (then with a gRPC error status).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;
use crate::proto::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use crate::proto::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use crate::stream::{Settings, StreamState};

/// The gRPC service name reported by health checks.
pub const SERVICE_NAME: &str = "envoy.service.ext_proc.v3.ExternalProcessor";

/// Replies buffered per stream before the task waits for Envoy to read.
const REPLY_BUFFER: usize = 32;

/// The `ExternalProcessor` implementation.
#[derive(Debug, Clone)]
pub struct BbrExtProc {
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
}

impl BbrExtProc {
    /// A processor with these settings, recording into `metrics`.
    pub fn new(settings: Arc<Settings>, metrics: Arc<Metrics>) -> Self {
        Self { settings, metrics }
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
        let active = metrics.stream_started();
        tokio::spawn(async move {
            let _active = active;
            let mut state = StreamState::new(settings);
            let mut out = Vec::new();
            'stream: loop {
                // Envoy ends side streams with RST_STREAM as often as with a
                // clean half-close; both are a normal end here.
                let Ok(Some(message)) = inbound.message().await else {
                    break;
                };
                if let Err(error) = state.on_request(message, &mut out) {
                    tracing::warn!(%error, "ext_proc conversation broken");
                    // The receiver may be gone already; nothing else to do.
                    let _ = tx.send(Err(error.into())).await;
                    break;
                }
                for reply in out.drain(..) {
                    if tx.send(Ok(reply)).await.is_err() {
                        break 'stream;
                    }
                }
                if state.is_finished() {
                    break;
                }
            }
            let report = state.report();
            if let Some(verdict) = &report.verdict {
                tracing::debug!(outcome = verdict.label(), model = ?report_model(verdict),
                    bytes = report.bytes_before_decision, "request decided");
            }
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
