//! The synchronous state machine of the phase before the routing decision:
//! feed each frame to the extractor and hold it (the same `Bytes`, in the
//! same frame) until the extractor decides. The async glue in
//! [`future`](crate::future) only polls the body and calls [`Scan::push`]
//! / [`Scan::end`].

use std::collections::VecDeque;

use bbr_core::{ExtractError, Limits, Model, ModelExtractor, Outcome, Progress};
use bytes::Bytes;
use http_body::Frame;

/// Frames read before the decision, and the extractor reading them.
#[derive(Debug)]
pub(crate) struct Scan {
    extractor: ModelExtractor,
    held: VecDeque<Frame<Bytes>>,
    held_bytes: u64,
    ended: bool,
}

/// What the scan knows after a frame.
#[derive(Debug)]
pub(crate) enum Step {
    /// No decision yet: read the next frame.
    NeedMore,
    /// Decided; call the inner service.
    Decided(Decision),
    /// Refuse the request.
    Failed(ExtractError),
}

/// The routing decision.
#[derive(Debug)]
pub(crate) enum Decision {
    /// The top-level `model`.
    Found(Model),
    /// A valid object without a top-level `model`.
    Absent,
    /// The body ended without a single byte: there is nothing to route on.
    Empty,
}

/// Everything the replay body needs after the decision.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) frames: VecDeque<Frame<Bytes>>,
    pub(crate) bytes: u64,
    /// The body ended during the scan (no more frames to read from it).
    pub(crate) ended: bool,
    /// The extractor, to keep validating the rest of the body; `None` when
    /// the body already ended and was finished.
    pub(crate) validator: Option<ModelExtractor>,
}

impl Scan {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            extractor: ModelExtractor::new(limits),
            held: VecDeque::new(),
            held_bytes: 0,
            ended: false,
        }
    }

    /// Bytes held so far.
    pub(crate) fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// True once the body ended (no more frames to read from it).
    pub(crate) fn ended(&self) -> bool {
        self.ended
    }

    /// Feeds and holds one frame. A trailers frame ends the body.
    pub(crate) fn push(&mut self, frame: Frame<Bytes>) -> Step {
        match frame.into_data() {
            Ok(data) => {
                let progress = self.extractor.feed(&data);
                self.held_bytes += data.len() as u64;
                self.held.push_back(Frame::data(data));
                match progress {
                    Ok(Progress::Found(model)) => Step::Decided(Decision::Found(model)),
                    Ok(Progress::Absent) => Step::Decided(Decision::Absent),
                    // `Decided` only follows a `Found`/`Absent` we already acted on.
                    Ok(_) => Step::NeedMore,
                    Err(error) => Step::Failed(error),
                }
            }
            Err(trailers) => {
                self.held.push_back(trailers);
                self.end()
            }
        }
    }

    /// The body ended (no more frames).
    pub(crate) fn end(&mut self) -> Step {
        self.ended = true;
        if self.extractor.bytes_consumed() == 0 {
            return Step::Decided(Decision::Empty);
        }
        match self.extractor.finish() {
            Ok(Outcome::Found(model)) => Step::Decided(Decision::Found(model)),
            Ok(_) => Step::Decided(Decision::Absent),
            Err(error) => Step::Failed(error),
        }
    }

    pub(crate) fn into_held(self) -> Held {
        Held {
            frames: self.held,
            bytes: self.held_bytes,
            ended: self.ended,
            validator: (!self.ended).then_some(self.extractor),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_held_as_the_same_bytes_in_the_same_boundaries() {
        let mut scan = Scan::new(Limits::new());
        let chunks = [
            Bytes::from_static(b"{\"mo"),
            Bytes::new(),
            Bytes::from_static(b"del\":\"m\"}"),
        ];
        for chunk in &chunks {
            let _ = scan.push(Frame::data(chunk.clone()));
        }
        assert_eq!(scan.held_bytes(), 13);
        let held = scan.into_held();
        assert_eq!(held.frames.len(), 3);
        for (frame, chunk) in held.frames.iter().zip(&chunks) {
            let data = frame.data_ref().expect("data frame");
            assert_eq!(data.as_ptr(), chunk.as_ptr());
            assert_eq!(data.len(), chunk.len());
        }
        assert!(!held.ended);
        assert!(held.validator.is_some());
    }

    #[test]
    fn a_body_without_bytes_is_empty_not_an_error() {
        let mut scan = Scan::new(Limits::new());
        assert!(matches!(
            scan.push(Frame::data(Bytes::new())),
            Step::NeedMore
        ));
        assert!(matches!(scan.end(), Step::Decided(Decision::Empty)));
        let held = scan.into_held();
        assert!(held.ended);
        assert!(held.validator.is_none());
    }

    #[test]
    fn trailers_end_the_scan_and_are_held() {
        let mut scan = Scan::new(Limits::new());
        let _ = scan.push(Frame::data(Bytes::from_static(b"{\"model\":\"m\"}")));
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", http::HeaderValue::from_static("1"));
        let _ = scan.push(Frame::trailers(trailers));
        let held = scan.into_held();
        assert!(held.ended);
        assert!(held.frames.back().is_some_and(Frame::is_trailers));
    }
}
