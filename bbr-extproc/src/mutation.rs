//! Builders for every reply this server sends, each in exactly one place:
//! the routing header mutation, and the headers, body, streamed-body and
//! trailers responses for each direction. Header names come from
//! [`bbr_core::contract`].

use bytes::Bytes;

use crate::proto::envoy::config::core::v3::{HeaderValue, HeaderValueOption, header_value_option};
use crate::proto::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, ImmediateResponse,
    ProcessingResponse, StreamedBodyResponse, TrailersResponse, body_mutation,
    processing_response::Response,
};

/// Largest body chunk sent back to Envoy in one message (the upstream BBR's
/// `BodyByteLimit`: under the 64 KiB per-chunk limit some Envoy builds have).
pub const MAX_CHUNK_BYTES: usize = 62_000;

/// Which side of the exchange a reply is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Request,
    Response,
}

/// A header set that replaces any value the client sent.
pub(crate) fn set_header(key: &str, value: Bytes) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: String::new(),
            raw_value: value,
        }),
        append_action: header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..HeaderValueOption::default()
    }
}

/// The common part of a reply that changes routing headers. The route is
/// recomputed (`clear_route_cache`) only when a header actually changes.
pub(crate) fn routing_common(mutation: HeaderMutation) -> Option<CommonResponse> {
    if mutation.set_headers.is_empty() && mutation.remove_headers.is_empty() {
        return None;
    }
    Some(CommonResponse {
        header_mutation: Some(mutation),
        clear_route_cache: true,
        ..CommonResponse::default()
    })
}

pub(crate) fn headers_reply(dir: Direction, common: Option<CommonResponse>) -> ProcessingResponse {
    let headers = HeadersResponse { response: common };
    reply(match dir {
        Direction::Request => Response::RequestHeaders(headers),
        Direction::Response => Response::ResponseHeaders(headers),
    })
}

pub(crate) fn body_reply(dir: Direction, common: Option<CommonResponse>) -> ProcessingResponse {
    let body = BodyResponse { response: common };
    reply(match dir {
        Direction::Request => Response::RequestBody(body),
        Direction::Response => Response::ResponseBody(body),
    })
}

/// A trailers reply; `mutation` (removing client-sent routing headers from
/// the request trailers) is left out when it changes nothing.
pub(crate) fn trailers_reply(dir: Direction, mutation: HeaderMutation) -> ProcessingResponse {
    let changes = !mutation.set_headers.is_empty() || !mutation.remove_headers.is_empty();
    let trailers = TrailersResponse {
        header_mutation: changes.then_some(mutation),
    };
    reply(match dir {
        Direction::Request => Response::RequestTrailers(trailers),
        Direction::Response => Response::ResponseTrailers(trailers),
    })
}

/// A body mutation replacing the body (or chunk) with `body`; an empty one
/// clears it.
pub(crate) fn replace_body(body: Bytes) -> BodyMutation {
    BodyMutation {
        mutation: Some(if body.is_empty() {
            body_mutation::Mutation::ClearBody(true)
        } else {
            body_mutation::Mutation::Body(body)
        }),
    }
}

pub(crate) fn immediate_reply(response: ImmediateResponse) -> ProcessingResponse {
    reply(Response::ImmediateResponse(response))
}

/// Sends `chunk` back in `FULL_DUPLEX_STREAMED` mode as `streamed_response`
/// messages of at most [`MAX_CHUNK_BYTES`], as slices of the same buffer (no
/// copy). `end_of_stream` goes on the last piece; an empty chunk still gives
/// one message, so an end of stream is never lost.
pub(crate) fn push_streamed(
    out: &mut Vec<ProcessingResponse>,
    dir: Direction,
    chunk: &Bytes,
    end_of_stream: bool,
) {
    let mut start = 0;
    loop {
        let end = usize::min(start + MAX_CHUNK_BYTES, chunk.len());
        let last = end == chunk.len();
        let common = CommonResponse {
            body_mutation: Some(BodyMutation {
                mutation: Some(body_mutation::Mutation::StreamedResponse(
                    StreamedBodyResponse {
                        body: chunk.slice(start..end),
                        end_of_stream: end_of_stream && last,
                        ..StreamedBodyResponse::default()
                    },
                )),
            }),
            ..CommonResponse::default()
        };
        out.push(body_reply(dir, Some(common)));
        if last {
            return;
        }
        start = end;
    }
}

fn reply(response: Response) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(response),
        ..ProcessingResponse::default()
    }
}
