//! Wire types: the request fields the simulator reads and the response
//! shapes it writes, with fields in the simulator's order.

use serde::{Deserialize, Serialize};

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub(crate) include_usage: Option<bool>,
}

/// The fields of `/v1/chat/completions` the simulator reads; every other
/// field (`temperature`, `top_p`, `stop`, ...) is ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatRequest {
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) messages: Option<Vec<Message>>,
    #[serde(default)]
    pub(crate) stream: Option<bool>,
    #[serde(default)]
    pub(crate) stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub(crate) max_tokens: Option<i64>,
    #[serde(default)]
    pub(crate) max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub(crate) ignore_eos: Option<bool>,
}

/// The fields of `/v1/completions` the simulator reads.
#[derive(Debug, Deserialize)]
pub(crate) struct TextRequest {
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) prompt: Option<String>,
    #[serde(default)]
    pub(crate) stream: Option<bool>,
    #[serde(default)]
    pub(crate) stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub(crate) max_tokens: Option<i64>,
    #[serde(default)]
    pub(crate) ignore_eos: Option<bool>,
}

/// One chat message; any role string is accepted.
#[derive(Debug, Deserialize)]
pub(crate) struct Message {
    #[serde(default)]
    pub(crate) role: Option<String>,
    #[serde(default)]
    pub(crate) content: Option<Content>,
}

/// Message content: a string or an array of typed blocks.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    Text(String),
    Blocks(Vec<Block>),
}

/// One content block; only `text` blocks contribute text.
#[derive(Debug, Deserialize)]
pub(crate) struct Block {
    #[serde(default, rename = "type")]
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) text: Option<String>,
}

impl Message {
    /// The message's text (text blocks joined with a space).
    pub(crate) fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(text)) => text.clone(),
            Some(Content::Blocks(blocks)) => blocks
                .iter()
                .filter(|b| b.kind.as_deref().is_none_or(|k| k == "text"))
                .filter_map(|b| b.text.as_deref())
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// `usage`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
    pub(crate) total_tokens: u64,
    pub(crate) prompt_tokens_details: PromptTokensDetails,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct PromptTokensDetails {
    pub(crate) cached_tokens: u64,
}

impl Usage {
    pub(crate) const fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens: 0 },
        }
    }
}

/// A response or stream chunk envelope; `C` is the choice type.
#[derive(Debug, Serialize)]
pub(crate) struct Envelope<'a, C> {
    pub(crate) id: &'a str,
    pub(crate) model: &'a str,
    pub(crate) object: &'static str,
    pub(crate) created: u64,
    /// Non-streaming: always present. Streaming: `null` except in the
    /// usage chunk.
    pub(crate) usage: Option<Usage>,
    pub(crate) choices: Vec<C>,
}

/// A chat choice (non-streaming).
#[derive(Debug, Serialize)]
pub(crate) struct ChatChoice<'a> {
    pub(crate) index: u32,
    pub(crate) finish_reason: &'static str,
    pub(crate) message: ChatMessage<'a>,
}

/// The assistant message.
#[derive(Debug, Serialize)]
pub(crate) struct ChatMessage<'a> {
    pub(crate) role: &'static str,
    pub(crate) content: &'a str,
}

/// A chat stream choice.
#[derive(Debug, Serialize)]
pub(crate) struct ChatChunkChoice<'a> {
    pub(crate) index: u32,
    pub(crate) finish_reason: Option<&'static str>,
    pub(crate) delta: Delta<'a>,
}

/// A chat stream delta; both fields absent gives `{}`.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) content: Option<&'a str>,
}

/// A text choice, streaming or not.
#[derive(Debug, Serialize)]
pub(crate) struct TextChoice<'a> {
    pub(crate) index: u32,
    pub(crate) finish_reason: Option<&'static str>,
    pub(crate) text: &'a str,
}

/// `/v1/models`.
#[derive(Debug, Serialize)]
pub(crate) struct ModelList {
    pub(crate) object: &'static str,
    pub(crate) data: Vec<ModelCard>,
}

/// One `/v1/models` entry.
#[derive(Debug, Serialize)]
pub(crate) struct ModelCard {
    pub(crate) id: String,
    pub(crate) object: &'static str,
    pub(crate) created: u64,
    pub(crate) owned_by: &'static str,
    pub(crate) root: String,
    pub(crate) parent: Option<String>,
    pub(crate) max_model_len: u32,
}

/// `/v1/load_lora_adapter` and `/v1/unload_lora_adapter` bodies.
#[derive(Debug, Deserialize)]
pub(crate) struct LoraAdapterRequest {
    #[serde(default)]
    pub(crate) lora_name: Option<String>,
    #[serde(default)]
    pub(crate) lora_path: Option<String>,
}
