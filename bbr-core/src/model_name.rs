//! The rules a model name obeys, for values that arrive without JSON
//! around them (a form field, a header).

use crate::{ErrorKind, ExtractError, Limits};

/// Checks `value` as a model name, by the rules of the crate docs ("What
/// a model name is") that the JSON extractor applies to an unescaped
/// `model` string, and returns the name: leading and trailing spaces and
/// tabs trimmed; not empty after that; no control character in it (C0,
/// DEL, C1; a tab only counts once text follows it); valid UTF-8; at most
/// [`Limits::max_model_len`] bytes counted before trimming.
///
/// Errors are found in byte order, as in the JSON extractor: a control
/// character or invalid UTF-8 within the first `max_model_len` bytes is
/// reported at its index in `value`; a value that is longer than the limit
/// and clean up to it is [`ErrorKind::ModelTooLong`] at 0, an empty one
/// [`ErrorKind::EmptyModel`] at 0. Callers add the value's absolute offset.
///
/// ```
/// use bbr_core::{validate_model_name, ErrorKind, Limits};
/// let limits = Limits::new().with_max_model_len(10);
/// assert_eq!(validate_model_name(b" food-rev\t", &limits).unwrap(), "food-rev");
/// let err = validate_model_name(b"food-review", &limits).unwrap_err();
/// assert_eq!((err.kind(), err.offset()), (ErrorKind::ModelTooLong { limit: 10 }, 0));
/// let err = validate_model_name(b"ab\r\n", &limits).unwrap_err();
/// assert_eq!((err.kind(), err.offset()), (ErrorKind::ModelControlChar, 2));
/// let err = validate_model_name(b"a\tb", &limits).unwrap_err();
/// assert_eq!((err.kind(), err.offset()), (ErrorKind::ModelControlChar, 1));
/// assert_eq!(validate_model_name(b" \t", &limits).unwrap_err().kind(), ErrorKind::EmptyModel);
/// assert_eq!(validate_model_name(b"a\xff", &limits).unwrap_err().kind(), ErrorKind::InvalidUtf8);
/// ```
pub fn validate_model_name<'v>(value: &'v [u8], limits: &Limits) -> Result<&'v str, ExtractError> {
    let max = limits.max_model_len();
    let head = value.len().min(max.saturating_add(HEAD_SLACK));
    let name = check_prefix(&value[..head], value.len() > head, max)?;
    Ok(std::str::from_utf8(&value[name]).expect("checked above"))
}

/// Bytes kept past `max_model_len`: the character that crosses the limit
/// is judged whole (a control character there is reported as such, as
/// the JSON extractor does).
pub(crate) const HEAD_SLACK: usize = 4;

/// Checks the head of a value (at most `max + HEAD_SLACK` bytes); `longer`
/// says the value went on past it. Returns the trimmed name's range.
/// Shared by [`validate_model_name`] and the multipart extractor, which
/// keeps only that head.
pub(crate) fn check_prefix(
    head: &[u8],
    longer: bool,
    max: usize,
) -> Result<std::ops::Range<usize>, ExtractError> {
    let control = |at: usize| Err(ExtractError::new(ErrorKind::ModelControlChar, at as u64));
    let too_long = || Err(ExtractError::new(ErrorKind::ModelTooLong { limit: max }, 0));
    let (valid, utf8_error) = match std::str::from_utf8(head) {
        Ok(_) => (head.len(), false),
        // A sequence cut by the end of the head is not an error when the
        // value goes on (it is too long anyway).
        Err(e) => (e.valid_up_to(), e.error_len().is_some() || !longer),
    };
    let text = std::str::from_utf8(&head[..valid]).expect("valid up to here");
    let mut name: Option<std::ops::Range<usize>> = None;
    // The first tab after the name started: an error once text follows.
    let mut tab = None;
    for (i, ch) in text.char_indices() {
        let end = i + ch.len_utf8();
        match ch {
            ' ' | '\t' => {
                if ch == '\t' && name.is_some() && tab.is_none() {
                    tab = Some(i);
                }
            }
            _ => {
                if let Some(at) = tab {
                    return control(at);
                }
                if ch.is_control() {
                    // C0, DEL and C1: `char::is_control` is exactly Cc.
                    return control(i);
                }
                name = Some(name.map_or(i..end, |range| range.start..end));
            }
        }
        if end > max {
            return too_long();
        }
    }
    if utf8_error {
        if valid >= max {
            return too_long();
        }
        return Err(ExtractError::new(ErrorKind::InvalidUtf8, valid as u64));
    }
    if longer || head.len() > max {
        return too_long();
    }
    name.ok_or(ExtractError::new(ErrorKind::EmptyModel, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_exactly_and_one_past() {
        let limits = Limits::new();
        let at = "m".repeat(Limits::DEFAULT_MAX_MODEL_LEN);
        assert_eq!(validate_model_name(at.as_bytes(), &limits).unwrap(), at);
        let past = "m".repeat(Limits::DEFAULT_MAX_MODEL_LEN + 1);
        assert_eq!(
            validate_model_name(past.as_bytes(), &limits).unwrap_err(),
            ExtractError::new(ErrorKind::ModelTooLong { limit: 256 }, 0)
        );
    }

    #[test]
    fn errors_in_byte_order() {
        let limits = Limits::new().with_max_model_len(4);
        // A control byte before the limit wins over the length.
        let err = validate_model_name(b"a\x7fbcdef", &limits).unwrap_err();
        assert_eq!((err.kind(), err.offset()), (ErrorKind::ModelControlChar, 1));
        // Invalid UTF-8 before a control byte.
        let err = validate_model_name(b"\xc0\x00", &limits).unwrap_err();
        assert_eq!((err.kind(), err.offset()), (ErrorKind::InvalidUtf8, 0));
        // A sequence cut by the limit in a too-long value: too long.
        let err = validate_model_name("abcé".as_bytes(), &limits).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModelTooLong { limit: 4 });
        // C1 controls, and trimming.
        let err = validate_model_name("a\u{85}".as_bytes(), &limits).unwrap_err();
        assert_eq!((err.kind(), err.offset()), (ErrorKind::ModelControlChar, 1));
        assert_eq!(validate_model_name(b"\t a ", &limits).unwrap(), "a");
        let err = validate_model_name("abcé".as_bytes(), &limits).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ModelTooLong { limit: 4 });
        // A truncated sequence at the end of a short value: invalid.
        let err = validate_model_name(b"ab\xc3", &limits).unwrap_err();
        assert_eq!((err.kind(), err.offset()), (ErrorKind::InvalidUtf8, 2));
        assert_eq!(validate_model_name("é".as_bytes(), &limits).unwrap(), "é");
    }

    proptest::proptest! {
        /// The same verdict as the JSON extractor on the same value (the
        /// value JSON-escaped into `{"model":...}`): kinds, and the name.
        #[test]
        fn agrees_with_the_json_extractor(
            chars in proptest::collection::vec(
                proptest::sample::select(vec!['a', 'Z', '-', ' ', '\t', '\r', '\n', '\u{7f}', 'é', '\u{85}', '\u{a0}', '"', '\\']),
                0..12,
            ),
            max in 1usize..12,
        ) {
            let value: String = chars.into_iter().collect();
            let limits = Limits::new().with_max_model_len(max);
            let mut json = String::from("{\"model\":\"");
            for ch in value.chars() {
                match ch {
                    '"' => json.push_str("\\\""),
                    '\\' => json.push_str("\\\\"),
                    c if (c as u32) < 0x20 => json.push_str(&format!("\\u{:04x}", c as u32)),
                    c => json.push(c),
                }
            }
            json.push_str("\"}");
            let ours = validate_model_name(value.as_bytes(), &limits)
                .map(str::to_owned)
                .map_err(|e| e.kind());
            let theirs = crate::extract_model(&bytes::Bytes::from(json), &limits)
                .map(|outcome| outcome.model().expect("a model").as_str().to_owned())
                .map_err(|e| e.kind());
            proptest::prop_assert_eq!(ours, theirs);
        }
    }
}
