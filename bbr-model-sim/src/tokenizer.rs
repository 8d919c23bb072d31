//! The simulator's dummy tokenizer: a token is a run of word characters or
//! one other non-space character, together with the whitespace after it, so
//! joining the tokens gives back the text.

/// Whether `c` continues a word token (letters, digits, `_`, and `'` as the
/// current simulator counts it).
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '\''
}

/// Splits `text` into tokens; each keeps its trailing whitespace, and
/// leading whitespace is kept on the first token, so `concat() == text`
/// whenever the text has a non-space character.
pub(crate) fn tokenize(text: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    // Leading whitespace belongs to the first token.
    while let Some(&(_, c)) = chars.peek() {
        if !c.is_whitespace() {
            break;
        }
        chars.next();
    }
    while let Some((_, c)) = chars.next() {
        if is_word(c) {
            while chars.peek().is_some_and(|&(_, next)| is_word(next)) {
                chars.next();
            }
        }
        while chars.peek().is_some_and(|&(_, next)| next.is_whitespace()) {
            chars.next();
        }
        let end = chars.peek().map_or(text.len(), |&(i, _)| i);
        tokens.push(&text[start..end]);
        start = end;
    }
    tokens
}

/// The number of tokens in `text`.
pub(crate) fn count(text: &str) -> u64 {
    tokenize(text).len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_trailing_whitespace_and_rejoin() {
        let text = "  Hello, world!  It's 42_x.\n";
        let tokens = tokenize(text);
        assert_eq!(
            tokens,
            ["  Hello", ", ", "world", "!  ", "It's ", "42_x", ".\n"]
        );
        assert_eq!(tokens.concat(), text);
        assert!(tokenize("").is_empty());
        assert!(tokenize("   ").is_empty());
    }

    #[test]
    fn seed_prompts_count_as_the_reference_says() {
        // simulator.md §2.5: completions prompts 9 / 4 / 10 tokens.
        assert_eq!(count("What is the best ski resort in Austria?"), 9);
        assert_eq!(count("Tell me about movies"), 4);
        assert_eq!(count("Write as if you were a critic: San Francisco"), 10);
    }

    #[test]
    fn non_ascii_words_are_single_tokens() {
        assert_eq!(tokenize("Grüße, 世界"), ["Grüße", ", ", "世界"]);
    }
}
