//! The simulator's dummy tokenizer: a token is a run of word characters or
//! one other non-space character, together with the whitespace after it, so
//! joining the tokens gives back the text.

/// Character classes the tokenizer distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Letters, digits, `_`, and `'` (as the current simulator counts it).
    Word,
    Space,
    /// Anything else: a token of its own.
    Other,
}

/// Classes of ASCII bytes; bytes ≥ 0x80 start a multi-byte character and
/// are decoded.
const ASCII_CLASS: [Class; 128] = {
    let mut table = [Class::Other; 128];
    let mut b = 0;
    while b < 128 {
        let byte = b as u8;
        table[b] = if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'\'' {
            Class::Word
        } else if byte.is_ascii_whitespace() || byte == 0x0b {
            Class::Space
        } else {
            Class::Other
        };
        b += 1;
    }
    table
};

/// The class of the character starting at byte `i` and its length in
/// bytes; ASCII is a table lookup (the common case, and the whole cost of
/// counting a large prompt).
#[inline(always)]
fn class_at(text: &str, i: usize) -> (Class, usize) {
    let byte = text.as_bytes()[i];
    if byte < 0x80 {
        return (ASCII_CLASS[usize::from(byte)], 1);
    }
    let c = text[i..].chars().next().expect("i is a char boundary");
    let class = if c.is_alphanumeric() {
        Class::Word
    } else if c.is_whitespace() {
        Class::Space
    } else {
        Class::Other
    };
    (class, c.len_utf8())
}

/// The end of the run of `class` characters starting at byte `i`.
#[inline(always)]
fn skip(text: &str, mut i: usize, class: Class) -> usize {
    let bytes = text.as_bytes();
    while i < bytes.len() {
        let byte = bytes[i];
        if byte < 0x80 {
            if ASCII_CLASS[usize::from(byte)] != class {
                break;
            }
            i += 1;
        } else {
            let (next, width) = class_at(text, i);
            if next != class {
                break;
            }
            i += width;
        }
    }
    i
}

/// Calls `token(start, end)` for each token: a run of word characters or
/// one other non-space character, with the whitespace after it; leading
/// whitespace belongs to the first token.
fn scan(text: &str, mut token: impl FnMut(usize, usize)) {
    let len = text.len();
    let mut i = skip(text, 0, Class::Space);
    let mut start = 0;
    while i < len {
        let (class, width) = class_at(text, i);
        i += width;
        if class == Class::Word {
            i = skip(text, i, Class::Word);
        }
        i = skip(text, i, Class::Space);
        token(start, i);
        start = i;
    }
}

/// Splits `text` into tokens; each keeps its trailing whitespace, and
/// leading whitespace is kept on the first token, so `concat() == text`
/// whenever the text has a non-space character.
pub(crate) fn tokenize(text: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    scan(text, |start, end| tokens.push(&text[start..end]));
    tokens
}

/// The number of tokens in `text` (no allocation).
pub(crate) fn count(text: &str) -> u64 {
    let mut n = 0;
    scan(text, |_, _| n += 1);
    n
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
    fn count_agrees_with_tokenize_and_the_char_definition() {
        // Reference: the definition over chars, written the obvious way.
        fn reference(text: &str) -> usize {
            let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '\'';
            let chars: Vec<char> = text.chars().collect();
            let mut i = chars.iter().take_while(|c| c.is_whitespace()).count();
            let mut n = 0;
            while i < chars.len() {
                if is_word(chars[i]) {
                    while i < chars.len() && is_word(chars[i]) {
                        i += 1;
                    }
                } else {
                    i += 1;
                }
                while i < chars.len() && chars[i].is_whitespace() {
                    i += 1;
                }
                n += 1;
            }
            n
        }
        for text in [
            "",
            " ",
            "a",
            "a b",
            "  lead",
            "trail  ",
            "x\u{b}y",
            "Grüße,\u{a0}世界 — ok?!",
            "Testing@, #testing 1$ ,2%,3^, [4&*5], 6~, 7-_ + (8 : 9) / \\ < > .",
            "don't stop_me now\n\t### user: hi\n",
        ] {
            assert_eq!(count(text) as usize, reference(text), "{text:?}");
            assert_eq!(tokenize(text).len(), reference(text), "{text:?}");
            if !text.trim().is_empty() {
                assert_eq!(tokenize(text).concat(), text);
            }
        }
    }

    #[test]
    fn non_ascii_words_are_single_tokens() {
        assert_eq!(tokenize("Grüße, 世界"), ["Grüße", ", ", "世界"]);
    }
}
