//! The upload endpoints (`/v1/audio/transcriptions`,
//! `/v1/audio/translations`, `/v1/images/edits`): a `multipart/form-data`
//! body parsed as it streams (multer), files hashed and never held, and an
//! OpenAI-shaped answer that names the model and, so tests can prove
//! byte-identical forwarding, the length and SHA-256 of the first file and
//! of the whole body.

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::RequestError;
use crate::observe::hex;
use crate::server::{SimState, json_response, unix_seconds};

/// Text fields (`model`, `prompt`, `language`, ...) are held: 64 KiB each
/// at most. Files are streamed.
pub(crate) const MAX_TEXT_FIELD_BYTES: u64 = 64 << 10;

/// Which endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FormKind {
    Transcription,
    Translation,
    ImageEdit,
}

/// Length and digest of a stream of bytes.
#[derive(Debug, Default)]
struct Digested {
    bytes: u64,
    sha256: Sha256,
}

impl Digested {
    fn update(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        self.sha256.update(chunk);
    }

    fn summary(self, name: Option<String>) -> Received {
        Received {
            name,
            bytes: self.bytes,
            sha256: hex(&self.sha256.finalize()),
        }
    }
}

/// What the answer reports about a file or the whole body.
#[derive(Debug, Serialize)]
struct Received {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    bytes: u64,
    sha256: String,
}

#[derive(Debug, Serialize)]
struct FormAnswer {
    #[serde(flatten)]
    shape: Shape,
    model: String,
    /// The first file part.
    file: Option<Received>,
    /// The whole form, as received.
    body: Received,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Shape {
    /// `audio.transcriptions` / `audio.translations`, `response_format=json`.
    Text { text: String },
    /// `images.edit`.
    Images { created: u64, data: Vec<Image> },
}

#[derive(Debug, Serialize)]
struct Image {
    b64_json: &'static str,
    revised_prompt: String,
}

/// A 1×1 transparent PNG: a valid image for clients that decode it.
const PIXEL_PNG: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";

pub(crate) async fn transcriptions(State(sim): State<Arc<SimState>>, request: Request) -> Response {
    answer_form(sim, FormKind::Transcription, request).await
}

pub(crate) async fn translations(State(sim): State<Arc<SimState>>, request: Request) -> Response {
    answer_form(sim, FormKind::Translation, request).await
}

pub(crate) async fn image_edits(State(sim): State<Arc<SimState>>, request: Request) -> Response {
    answer_form(sim, FormKind::ImageEdit, request).await
}

async fn answer_form(sim: Arc<SimState>, kind: FormKind, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let raw = Arc::new(Mutex::new(Digested::default()));
    let result = read_form(&sim, &parts.headers, body, &raw).await;
    let raw = std::mem::take(&mut *raw.lock().unwrap_or_else(PoisonError::into_inner));
    let body = raw.summary(None);
    let model = result.as_ref().ok().map(|(model, _)| model.clone());
    sim.observer.record_digest(
        &parts.method,
        parts.uri.path(),
        &parts.headers,
        body.bytes,
        body.sha256.clone(),
        model,
    );
    let (model, file) = match result {
        Ok(read) => read,
        Err(error) => return error.into_response(),
    };
    if sim.resolve(&model).is_none() {
        return RequestError::UnknownModel(model).into_response();
    }
    let shape = match kind {
        FormKind::Transcription | FormKind::Translation => Shape::Text {
            text: format!(
                "simulated {} by {model}",
                match kind {
                    FormKind::Transcription => "transcription",
                    _ => "translation",
                }
            ),
        },
        FormKind::ImageEdit => Shape::Images {
            created: unix_seconds(),
            data: vec![Image {
                b64_json: PIXEL_PNG,
                revised_prompt: format!("simulated edit by {model}"),
            }],
        },
    };
    json_response(&FormAnswer {
        shape,
        model,
        file,
        body,
    })
}

/// Streams the form: the `model` field (announced to the observer the
/// moment it is complete), the first file hashed.
async fn read_form(
    sim: &SimState,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    raw: &Arc<Mutex<Digested>>,
) -> Result<(String, Option<Received>), RequestError> {
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| multer::parse_boundary(value).ok())
        .ok_or_else(|| {
            RequestError::Parse("expected multipart/form-data with a boundary".to_owned())
        })?;
    let tap = Arc::clone(raw);
    let stream = body.into_data_stream().map(move |chunk| {
        if let Ok(chunk) = &chunk {
            tap.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .update(chunk);
        }
        chunk
    });
    let mut form = multer::Multipart::new(stream, boundary);
    let parse = |error: multer::Error| RequestError::Parse(error.to_string());
    let mut model = None;
    let mut file = None;
    while let Some(mut field) = form.next_field().await.map_err(parse)? {
        let name = field.name().map(str::to_owned);
        let filename = field.file_name().map(str::to_owned);
        if filename.is_some() {
            let mut digest = Digested::default();
            while let Some(chunk) = field.chunk().await.map_err(parse)? {
                digest.update(&chunk);
            }
            if file.is_none() {
                file = Some(digest.summary(filename));
            }
            continue;
        }
        let value = read_text(&mut field).await?;
        if name.as_deref() == Some("model") {
            if model.is_some() {
                return Err(RequestError::Parse("more than one model field".to_owned()));
            }
            let value = String::from_utf8(value.to_vec())
                .map_err(|_| RequestError::Parse("model is not UTF-8".to_owned()))?;
            sim.observer.form_model_seen();
            model = Some(value);
        }
    }
    let model =
        model.ok_or_else(|| RequestError::Parse("the model field is required".to_owned()))?;
    Ok((model, file))
}

async fn read_text(field: &mut multer::Field<'_>) -> Result<Bytes, RequestError> {
    let mut value = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|error| RequestError::Parse(error.to_string()))?
    {
        if (value.len() + chunk.len()) as u64 > MAX_TEXT_FIELD_BYTES {
            return Err(RequestError::Parse(format!(
                "a text field is longer than {MAX_TEXT_FIELD_BYTES} bytes"
            )));
        }
        value.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(value))
}
