//! The rules a model name obeys, for values that arrive without JSON
//! around them (a form field, a header).

use crate::{ErrorKind, ExtractError, Limits};

/// Checks `value` as a model name, by the rules the JSON extractor applies
/// to an unescaped `model` string ("What a model name is" in the crate
/// docs): leading and trailing spaces and tabs trimmed, then non-empty,
/// valid UTF-8, no control character (C0, including CR, LF, NUL and a tab
/// inside the name, DEL, C1), at most [`Limits::max_model_len`] bytes
/// (counted before trimming). Returns the trimmed name.
///
/// Errors are found in byte order, as in the JSON extractor: a control
/// character or invalid UTF-8 within the first `max_model_len` bytes is
/// reported at its index in `value`; a value that is longer than the limit
/// and clean up to it is [`ErrorKind::ModelTooLong`] at 0, an empty one
/// (or only spaces and tabs) [`ErrorKind::EmptyModel`] at 0. Callers add
/// the value's absolute offset.
///
/// ```
/// use bbr_core::{validate_model_name, ErrorKind, Limits};
/// let limits = Limits::new().with_max_model_len(8);
/// assert_eq!(validate_model_name(b"food-rev", &limits).unwrap(), "food-rev");
/// assert_eq!(validate_model_name(b" food\t", &limits).unwrap(), "food");
/// let err = validate_model_name(b"food-revi", &limits).unwrap_err();
/// assert_eq!((err.kind(), err.offset()), (ErrorKind::ModelTooLong { limit: 8 }, 0));
/// let err = validate_model_name(b"ab\r\n", &limits).unwrap_err();
/// assert_eq!((err.kind(), err.offset()), (ErrorKind::ModelControlChar, 2));
/// let err = validate_model_name(b"a\tb", &limits).unwrap_err();
/// assert_eq!((err.kind(), err.offset()), (ErrorKind::ModelControlChar, 1));
/// let err = validate_model_name("a\u{85}".as_bytes(), &limits).unwrap_err();
/// assert_eq!((err.kind(), err.offset()), (ErrorKind::ModelControlChar, 1));
/// assert_eq!(validate_model_name(b"", &limits).unwrap_err().kind(), ErrorKind::EmptyModel);
/// assert_eq!(validate_model_name(b" \t ", &limits).unwrap_err().kind(), ErrorKind::EmptyModel);
/// assert_eq!(validate_model_name(b"a\xff", &limits).unwrap_err().kind(), ErrorKind::InvalidUtf8);
/// ```
pub fn validate_model_name<'v>(value: &'v [u8], limits: &Limits) -> Result<&'v str, ExtractError> {
    let max = limits.max_model_len();
    let name = check_prefix(&value[..value.len().min(max)], value.len() > max, max)?;
    Ok(std::str::from_utf8(&value[name]).expect("checked above"))
}

/// Checks the first bytes of a value (at most `max`); `longer` says the
/// value went on past them. Returns the range of the trimmed name. Shared
/// by [`validate_model_name`] and the multipart extractor, which keeps only
/// that prefix.
pub(crate) fn check_prefix(
    prefix: &[u8],
    longer: bool,
    max: usize,
) -> Result<std::ops::Range<usize>, ExtractError> {
    let (valid, utf8_error) = match std::str::from_utf8(prefix) {
        Ok(_) => (prefix.len(), false),
        // A sequence cut by the limit is not an error when the value is too long anyway.
        Err(e) => (e.valid_up_to(), e.error_len().is_some() || !longer),
    };
    let text = std::str::from_utf8(&prefix[..valid]).expect("valid up to here");
    // In byte order, like the JSON extractor: a tab after text is an
    // error (at the tab) once more text follows it.
    let (mut start, mut end, mut tab) = (None, 0, None);
    for (at, ch) in text.char_indices() {
        if ch == ' ' || ch == '\t' {
            if start.is_some() && ch == '\t' && tab.is_none() {
                tab = Some(at);
            }
            continue;
        }
        if let Some(tab) = tab {
            return Err(ExtractError::new(ErrorKind::ModelControlChar, tab as u64));
        }
        if ch < ' ' || ('\u{7f}'..='\u{9f}').contains(&ch) {
            return Err(ExtractError::new(ErrorKind::ModelControlChar, at as u64));
        }
        start.get_or_insert(at);
        end = at + ch.len_utf8();
    }
    if utf8_error {
        return Err(ExtractError::new(ErrorKind::InvalidUtf8, valid as u64));
    }
    if longer {
        return Err(ExtractError::new(ErrorKind::ModelTooLong { limit: max }, 0));
    }
    match start {
        Some(start) => Ok(start..end),
        None => Err(ExtractError::new(ErrorKind::EmptyModel, 0)),
    }
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
        // A truncated sequence at the end of a short value: invalid.
        let err = validate_model_name(b"ab\xc3", &limits).unwrap_err();
        assert_eq!((err.kind(), err.offset()), (ErrorKind::InvalidUtf8, 2));
        assert_eq!(validate_model_name("é".as_bytes(), &limits).unwrap(), "é");
    }
}
