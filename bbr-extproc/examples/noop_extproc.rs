//! A no-op ext_proc processor: the floor the load benchmark
//! (`bench/run-load.sh`) compares bbr-extproc against. It does no JSON work
//! and holds nothing:
//!
//! - request headers are answered at once, setting `x-gateway-model-name`
//!   to the fixed `--model` with `clear_route_cache`, so Envoy recomputes
//!   the route and picks the same pool as bbr-extproc would (bbr-extproc
//!   holds this reply until it has read `model` from the body; not holding
//!   it is the point of the comparison);
//! - each request body chunk is echoed back at once as `streamed_response`
//!   (`FULL_DUPLEX_STREAMED`), as slices of the same buffer, split at
//!   [`MAX_CHUNK_BYTES`] and with `end_of_stream` preserved, exactly as
//!   bbr-extproc forwards chunks;
//! - trailers and response messages get empty replies (a response body is
//!   echoed when Envoy streams it in full duplex).
//!
//! With `--hold`, the headers reply and every request body chunk are held
//! until the body's last chunk (or its trailers), then sent in order: the
//! floor for any processor that must read the whole body before it can
//! route (a `model` after `messages`), still without JSON work. The
//! benchmark runs both, so holding and parsing are measured apart.
//!
//! The gRPC side is set up like bbr-extproc's (`TCP_NODELAY`, message size
//! limits, HTTP/2 windows, one task and reply channel per stream), so the
//! difference between the two is the body work and the held headers reply.
//! It takes the same global allocator as the binary (the `jemalloc`
//! feature), so the floor does not differ from bbr-extproc by its malloc.
//! Plaintext only; a benchmark baseline, not a product.
//!
//! ```text
//! cargo run --release -p bbr-extproc --example noop_extproc -- --port 9002 --model ski-resorts
//! ```

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use bbr_core::contract::MODEL_HEADER;
use bbr_extproc::MAX_CHUNK_BYTES;
use bbr_extproc::proto::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option,
};
use bbr_extproc::proto::envoy::extensions::filters::http::ext_proc::v3::processing_mode::BodySendMode;
use bbr_extproc::proto::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use bbr_extproc::proto::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpBody,
    ProcessingRequest, ProcessingResponse, StreamedBodyResponse, TrailersResponse, body_mutation,
    processing_request::Request as Message, processing_response::Response as Reply,
};
use bytes::Bytes;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// ext_proc port on 127.0.0.1 (0: any free port, printed on stderr).
    #[arg(long, default_value_t = 9002)]
    port: u16,
    /// Value set in `x-gateway-model-name` on every request. Empty: no
    /// header mutation at all (a processor behind BBR, in the endpoint
    /// picker's position, that leaves the route alone).
    #[arg(long, default_value = "ski-resorts")]
    model: String,
    /// Hold the headers reply and the request body until the body ends.
    #[arg(long)]
    hold: bool,
}

/// Same as bbr-extproc's `ServerConfig::local` defaults.
const MAX_GRPC_MESSAGE_BYTES: usize = 129 << 20;
const MAX_CONCURRENT_STREAMS: u32 = 4096;
const REPLY_BUFFER: usize = 32;

#[derive(Debug, Clone)]
struct NoopExtProc {
    model: Bytes,
    hold: bool,
}

#[tonic::async_trait]
impl ExternalProcessor for NoopExtProc {
    type ProcessStream = ReceiverStream<Result<ProcessingResponse, Status>>;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(REPLY_BUFFER);
        let model = self.model.clone();
        let hold = self.hold;
        tokio::spawn(async move {
            let mut response_full_duplex = false;
            let mut out = Vec::new();
            // Replies held until the request body ends (`--hold` only).
            let mut held: Option<Vec<ProcessingResponse>> = None;
            while let Ok(Some(message)) = inbound.message().await {
                if let Some(config) = &message.protocol_config {
                    response_full_duplex =
                        config.response_body_mode == BodySendMode::FullDuplexStreamed as i32;
                }
                match message.request {
                    Some(Message::RequestHeaders(headers)) => {
                        let routed = reply(Reply::RequestHeaders(HeadersResponse {
                            response: Some(route_to(&model)),
                        }));
                        if hold && !headers.end_of_stream {
                            held = Some(vec![routed]);
                        } else {
                            out.push(routed);
                        }
                    }
                    Some(Message::RequestBody(body)) => {
                        let end = body.end_of_stream;
                        match &mut held {
                            Some(replies) => echo(replies, body, Reply::RequestBody),
                            None => echo(&mut out, body, Reply::RequestBody),
                        }
                        if end {
                            out.extend(held.take().into_iter().flatten());
                        }
                    }
                    Some(Message::RequestTrailers(_)) => {
                        out.extend(held.take().into_iter().flatten());
                        out.push(reply(Reply::RequestTrailers(TrailersResponse::default())));
                    }
                    Some(Message::ResponseHeaders(_)) => {
                        out.push(reply(Reply::ResponseHeaders(HeadersResponse::default())));
                    }
                    Some(Message::ResponseBody(body)) if response_full_duplex => {
                        echo(&mut out, body, Reply::ResponseBody);
                    }
                    Some(Message::ResponseBody(_)) => {
                        out.push(reply(Reply::ResponseBody(BodyResponse::default())));
                    }
                    Some(Message::ResponseTrailers(_)) => {
                        out.push(reply(Reply::ResponseTrailers(TrailersResponse::default())));
                    }
                    None => {
                        let _ = tx
                            .send(Err(Status::invalid_argument("empty request")))
                            .await;
                        return;
                    }
                }
                if message.observability_mode {
                    out.clear();
                    held = None;
                }
                for response in out.drain(..) {
                    if tx.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Sets the model header and asks Envoy to recompute the route, as
/// bbr-extproc's headers reply does once it knows the model.
fn route_to(model: &Bytes) -> CommonResponse {
    if model.is_empty() {
        return CommonResponse::default();
    }
    CommonResponse {
        header_mutation: Some(HeaderMutation {
            set_headers: vec![HeaderValueOption {
                header: Some(HeaderValue {
                    key: MODEL_HEADER.to_owned(),
                    value: String::new(),
                    raw_value: model.clone(),
                }),
                append_action: header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd
                    as i32,
                ..HeaderValueOption::default()
            }],
            ..HeaderMutation::default()
        }),
        clear_route_cache: true,
        ..CommonResponse::default()
    }
}

/// Echoes `body` as `streamed_response` pieces of at most
/// [`MAX_CHUNK_BYTES`] (one piece for an empty chunk, so the end of stream
/// is never lost).
fn echo(out: &mut Vec<ProcessingResponse>, body: HttpBody, wrap: fn(BodyResponse) -> Reply) {
    let chunk = body.body;
    let mut start = 0;
    loop {
        let end = usize::min(start + MAX_CHUNK_BYTES, chunk.len());
        let last = end == chunk.len();
        let streamed = StreamedBodyResponse {
            body: chunk.slice(start..end),
            end_of_stream: body.end_of_stream && last,
            ..StreamedBodyResponse::default()
        };
        out.push(reply(wrap(BodyResponse {
            response: Some(CommonResponse {
                body_mutation: Some(BodyMutation {
                    mutation: Some(body_mutation::Mutation::StreamedResponse(streamed)),
                }),
                ..CommonResponse::default()
            }),
        })));
        if last {
            return;
        }
        start = end;
    }
}

fn reply(response: Reply) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(response),
        ..ProcessingResponse::default()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
    eprintln!("noop_extproc listening on {}", listener.local_addr()?);
    let processor = ExternalProcessorServer::new(NoopExtProc {
        model: Bytes::from(args.model),
        hold: args.hold,
    })
    .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
        .initial_stream_window_size(Some(1 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .add_service(processor)
        // Small replies must leave at once (Nagle plus delayed ACK stalls
        // a stream for ~40 ms otherwise).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await?;
    Ok(())
}
