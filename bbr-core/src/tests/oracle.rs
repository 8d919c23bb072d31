//! The serde_json oracle: parse the whole body, read the top-level entries
//! in document order (duplicates kept), and derive the verdict the contract
//! asks for under each policy.
//!
//! The extractor may decide on a prefix of the body: under first-wins it
//! stops reading at the decision, and under reject it reports the decision
//! before it has seen the rest. Such an early decision is checked against
//! the oracle applied to that prefix (the bytes up to and including the
//! deciding byte, closed with `}` when the decision was a model): the
//! prefix must be valid JSON whose only top-level `model` is the found one
//! (see [`check_early_decision`]).

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::{DuplicateKeys, ExtractError, Limits, Outcome};

/// A verdict reduced to what the oracle can know: the model, or the kind of
/// error (serde_json has no offsets for our kinds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Found(String),
    Absent,
    Error(&'static str),
}

impl From<&Result<Outcome, ExtractError>> for Verdict {
    fn from(result: &Result<Outcome, ExtractError>) -> Self {
        match result {
            Ok(Outcome::Found(model)) => Verdict::Found(model.as_str().to_owned()),
            Ok(_) => Verdict::Absent,
            Err(error) => Verdict::Error(error.kind().as_str()),
        }
    }
}

/// The top-level entries of a JSON object, in order, duplicates kept.
#[derive(Debug)]
pub(crate) struct Entries(pub(crate) Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// serde_json's reading of `body`.
pub(crate) fn parse(body: &[u8]) -> Result<Entries, serde_json::Error> {
    serde_json::from_slice(body)
}

/// serde_json refuses some bodies that RFC 8259 allows and the extractor
/// accepts: numbers out of `f64` range and nesting past its recursion limit.
pub(crate) fn oracle_is_stricter(error: &serde_json::Error) -> bool {
    let message = error.to_string();
    message.contains("out of range") || message.contains("recursion limit")
}

/// The found name for an accepted value: spaces and tabs trimmed.
pub(crate) fn trimmed(name: &str) -> &str {
    name.trim_matches([' ', '\t'])
}

/// What the contract says a top-level `model` value gives ("What a model
/// name is" in the crate docs), written independently of the extractor.
fn model_verdict(value: &Value, max_len: usize) -> Verdict {
    let Value::String(name) = value else {
        return Verdict::Error("model_not_a_string");
    };
    // In stream order, as the extractor meets them: a tab after text is
    // an error only once more text follows it.
    let (mut len, mut text, mut inner_tab) = (0, false, false);
    for ch in name.chars() {
        let space = ch == ' ' || ch == '\t';
        if !space && (inner_tab || ch < ' ' || ('\u{7f}'..='\u{9f}').contains(&ch)) {
            return Verdict::Error("model_control_char");
        }
        len += ch.len_utf8();
        if len > max_len {
            return Verdict::Error("model_too_long");
        }
        if !space {
            text = true;
        } else if text && ch == '\t' {
            inner_tab = true;
        }
    }
    if !text {
        return Verdict::Error("empty_model");
    }
    Verdict::Found(trimmed(name).to_owned())
}

/// The verdict for a valid body.
pub(crate) fn expected(entries: &Entries, limits: &Limits) -> Verdict {
    let max = limits.max_model_len();
    let field = limits.field().as_str();
    let models: Vec<&Value> = entries
        .0
        .iter()
        .filter(|(key, _)| key == field)
        .map(|(_, value)| value)
        .collect();
    let (Some(first), Some(last)) = (models.first(), models.last()) else {
        return Verdict::Absent;
    };
    match limits.duplicate_keys() {
        DuplicateKeys::LastWins => model_verdict(last, max),
        DuplicateKeys::FirstWins => model_verdict(first, max),
        _ => match model_verdict(first, max) {
            Verdict::Found(_) if models.len() > 1 => Verdict::Error("duplicate_model"),
            verdict => verdict,
        },
    }
}

/// Checks an early decision (`Found`/`Absent` reported by `feed`) made at
/// byte index `decided_at` against the oracle on that prefix.
pub(crate) fn check_early_decision(
    body: &[u8],
    decided_at: usize,
    decision: &Verdict,
    limits: &Limits,
) {
    let field = limits.field().as_str();
    let prefix = &body[..=decided_at];
    match decision {
        Verdict::Found(model) => {
            let mut closed = prefix.to_vec();
            closed.push(b'}');
            let entries = match parse(&closed) {
                Ok(entries) => entries,
                // RFC 8259 allows what serde_json refuses here (`1e400`).
                Err(e) if oracle_is_stricter(&e) => return,
                Err(e) => panic!(
                    "found {model:?} on an invalid prefix {:?}: {e}",
                    String::from_utf8_lossy(prefix)
                ),
            };
            let models: Vec<&Value> = entries
                .0
                .iter()
                .filter(|(k, _)| k == field)
                .map(|(_, v)| v)
                .collect();
            assert_eq!(
                models.len(),
                1,
                "prefix {:?}",
                String::from_utf8_lossy(prefix)
            );
            let Value::String(sent) = models[0] else {
                panic!("found {model:?} for a value that is not a string")
            };
            assert_eq!(trimmed(sent), model);
            let (last_key, _) = entries.0.last().expect("one model entry");
            assert_eq!(
                last_key, field,
                "the decision is made by the last entry of the prefix"
            );
        }
        Verdict::Absent => match parse(prefix) {
            Ok(entries) => assert!(entries.0.iter().all(|(k, _)| k != field)),
            // RFC 8259 allows what serde_json refuses here (`1e400`).
            Err(e) if oracle_is_stricter(&e) => {}
            Err(e) => panic!(
                "absent on an invalid prefix {:?}: {e}",
                String::from_utf8_lossy(prefix)
            ),
        },
        Verdict::Error(kind) => panic!("an error ({kind}) is not an early decision"),
    }
}
