//! Model rewrites (feature `adapters`): the picked target replaces the
//! `model` token in the held frames before the inner service is called.

use std::sync::Arc;

use bbr_adapters::rewrite::RewritePicker;
use bbr_core::rewrite::{ModelSplicer, SpliceError};
use bbr_core::{Limits, Model};
use http_body::Frame;

use crate::extension::ModelRewrite;
use crate::scan::{Held, HeldFrame};

/// A rewrite decided for one request.
#[derive(Debug)]
pub(crate) struct Rewrite {
    /// The name routed on (the target).
    pub(crate) target: Model,
    pub(crate) splicer: ModelSplicer,
}

/// What a matching rule decided: the record for the request's extensions,
/// and the splice when the target differs from the requested name.
#[derive(Debug)]
pub(crate) struct Picked {
    pub(crate) record: ModelRewrite,
    pub(crate) rewrite: Option<Rewrite>,
}

/// The decision for a request for `model`, when a rule matches and the
/// model's token is in the forwarded bytes (not for a compressed body or a
/// form field, which are forwarded and routed as requested: `None`, as if
/// no rule matched).
pub(crate) fn pick(
    picker: &RewritePicker,
    model: &Model,
    headers: &http::HeaderMap,
) -> Option<Picked> {
    let sticky = picker
        .sticky_header()
        .and_then(|name| headers.get(name))
        .map(http::HeaderValue::as_bytes);
    let decision = picker.pick(model.as_str(), sticky)?;
    let record = |target: Arc<str>| {
        ModelRewrite::from_shared(decision.rule_shared(), Arc::from(model.as_str()), target)
    };
    if decision.target() == model.as_str() {
        // A target keeping the requested name: the body stays as sent.
        return model.json_span().map(|_| Picked {
            record: record(decision.target_shared()),
            rewrite: None,
        });
    }
    let splicer = ModelSplicer::for_model(model, decision.target()).ok()?;
    // Rule targets are validated when the rules load.
    let target = Model::from_name(decision.target(), &Limits::new()).ok()?;
    Some(Picked {
        record: record(decision.target_shared()),
        rewrite: Some(Rewrite { target, splicer }),
    })
}

/// Replaces the token in the held frames: untouched frames stay as they
/// are, the deciding one is split around the token (slices, no copy); the
/// first piece of a frame keeps the frame's accounted cost. The new token
/// itself (at most a few hundred bytes) is not accounted.
pub(crate) fn splice_held(held: &mut Held, splicer: &mut ModelSplicer) -> Result<(), SpliceError> {
    let frames = std::mem::take(&mut held.frames);
    let mut bytes = 0;
    for HeldFrame { frame, cost } in frames {
        match frame.into_data() {
            Ok(data) => {
                let mut cost = cost;
                for piece in splicer.push(&data)? {
                    bytes += piece.len() as u64;
                    held.frames.push_back(HeldFrame {
                        frame: Frame::data(piece),
                        cost: std::mem::take(&mut cost),
                    });
                }
                if cost > 0 {
                    // A frame inside the token: nothing of it is left; its
                    // cost goes with the new token, given out before it.
                    match held.frames.back_mut() {
                        Some(previous) => previous.cost += cost,
                        None => held.frames.push_back(HeldFrame {
                            frame: Frame::data(bytes::Bytes::new()),
                            cost,
                        }),
                    }
                }
            }
            Err(frame) => held.frames.push_back(HeldFrame { frame, cost }),
        }
    }
    held.bytes = bytes;
    Ok(())
}
