//! Wire types: the request fields the simulator reads and the response
//! shapes it writes, with fields in the simulator's order.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::tokenizer;

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub(crate) include_usage: Option<bool>,
}

/// The fields of `/v1/chat/completions` the simulator reads; every other
/// field (`temperature`, `top_p`, `stop`, ...) is ignored. Text borrows from
/// the body where it has no escapes.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatRequest<'a> {
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default, borrow)]
    pub(crate) messages: Option<Vec<Message<'a>>>,
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
pub(crate) struct TextRequest<'a> {
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default, borrow)]
    pub(crate) prompt: Option<Cow<'a, str>>,
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
pub(crate) struct Message<'a> {
    #[serde(default, borrow)]
    pub(crate) role: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) content: Option<Content<'a>>,
}

/// Message content: a string or an array of typed blocks.
#[derive(Debug)]
pub(crate) enum Content<'a> {
    Text(Cow<'a, str>),
    Blocks(Vec<Block<'a>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> serde::de::Visitor<'de> for ContentVisitor<'a> {
            type Value = Content<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of content blocks")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Borrowed(text)))
            }

            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Owned(text.to_owned())))
            }

            fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Owned(text)))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut blocks = Vec::new();
                while let Some(block) = seq.next_element()? {
                    blocks.push(block);
                }
                Ok(Content::Blocks(blocks))
            }
        }

        deserializer.deserialize_any(ContentVisitor(std::marker::PhantomData))
    }
}

/// One content block; only `text` blocks contribute text.
#[derive(Debug, Deserialize)]
pub(crate) struct Block<'a> {
    #[serde(default, rename = "type", borrow)]
    pub(crate) kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub(crate) text: Option<Cow<'a, str>>,
}

impl<'a> Message<'a> {
    /// The message's text (text blocks joined with a space).
    pub(crate) fn text(&self) -> Cow<'a, str> {
        match &self.content {
            None => Cow::Borrowed(""),
            Some(Content::Text(text)) => text.clone(),
            Some(Content::Blocks(blocks)) => {
                Cow::Owned(self.text_blocks(blocks).collect::<Vec<_>>().join(" "))
            }
        }
    }

    fn text_blocks<'b>(&self, blocks: &'b [Block<'a>]) -> impl Iterator<Item = &'b str> {
        blocks
            .iter()
            .filter(|b| b.kind.as_deref().is_none_or(|k| k == "text"))
            .filter_map(|b| b.text.as_deref())
    }

    /// Prompt tokens of this message as the simulator renders it,
    /// `### <role>: <content>\n`, counted piece by piece without building
    /// the string: every piece boundary falls on a token boundary (the
    /// separators end in whitespace or start with punctuation), so the sum
    /// equals the count of the rendering (tested in the server module).
    pub(crate) fn prompt_tokens(&self) -> u64 {
        let role = self.role.as_deref().unwrap_or("");
        // "### " is 3 tokens, ": " is 1, "\n" is whitespace.
        let mut n = 3 + tokenizer::count(role) + 1;
        match &self.content {
            None => {}
            Some(Content::Text(text)) => n += tokenizer::count(text),
            // Blocks are joined with single spaces: also token boundaries.
            Some(Content::Blocks(blocks)) => {
                n += self.text_blocks(blocks).map(tokenizer::count).sum::<u64>();
            }
        }
        n
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
