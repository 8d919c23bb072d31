//! Answer text: a small deterministic random source, the simulator's
//! response-length histogram, its sentence bank, and echo.

use crate::tokenizer;

/// The simulator's fixed sentence bank (random mode).
const SENTENCES: [&str; 11] = [
    "Testing@, #testing 1$ ,2%,3^, [4&*5], 6~, 7-_ + (8 : 9) / \\ < > .",
    "Testing, testing 1,2,3.",
    "I am fine, how are you today?",
    "I am your AI assistant, how can I help you today?",
    "Today is a nice sunny day.",
    "The temperature here is twenty-five degrees centigrade.",
    "Today it is partially cloudy and raining.",
    "To be or not to be that is the question.",
    "Alas, poor Yorick! I knew him, Horatio: A fellow of infinite jest",
    "The rest is silence.",
    "Give a man a fish and you feed him for a day; teach a man to fish and you feed him for a lifetime",
];

/// SplitMix64: tiny, fast, and the same on every platform and version, so a
/// seed gives the same answers everywhere.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A source for request number `counter` of a server seeded with `seed`.
    pub(crate) fn for_request(seed: u64, counter: u64) -> Self {
        let mut rng = Self(seed ^ counter.wrapping_mul(0xA076_1D64_78BD_642F));
        rng.next_u64();
        rng
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..=hi` (`lo <= hi`).
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Normal with `mean` and `std_dev` (Box–Muller).
    pub(crate) fn gaussian(&mut self, mean: f64, std_dev: f64) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        mean + std_dev * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Why generation stopped, as in `finish_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// Generated answer: its tokens (joined = the text) and why it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Generated {
    pub(crate) tokens: Vec<String>,
    pub(crate) finish_reason: FinishReason,
}

impl Generated {
    pub(crate) fn text(&self) -> String {
        self.tokens.concat()
    }
}

/// Number of tokens to generate in random mode (simulator.md §2.5):
/// with `max_tokens` M > 6, buckets over 1..M−1 with probabilities
/// 0.2/0.3/0.2/0.05/0.1 (width ≤ 20, the 4th stretches) and 15 % exactly M;
/// M ≤ 6 uniform in 1..=M; no M: Gaussian(40, 20) within `1..=cap`.
pub(crate) fn response_length(
    rng: &mut Rng,
    max_tokens: Option<u64>,
    ignore_eos: bool,
    cap: u64,
) -> u64 {
    let Some(max) = max_tokens else {
        let cap = cap.max(1);
        return (rng.gaussian(40.0, 20.0).round().max(1.0) as u64).min(cap);
    };
    if ignore_eos || max <= 1 {
        return max.max(1);
    }
    if max <= 6 {
        return rng.range(1, max);
    }
    let values = max - 1;
    let width = (values / 5).clamp(1, 20);
    let p = rng.next_f64();
    let (lo, hi) = if p < 0.2 {
        (1, width)
    } else if p < 0.5 {
        (width + 1, 2 * width)
    } else if p < 0.7 {
        (2 * width + 1, 3 * width)
    } else if p < 0.75 {
        (3 * width + 1, values - width)
    } else if p < 0.85 {
        (values - width + 1, values)
    } else {
        return max;
    };
    rng.range(lo, hi)
}

/// Random-mode text of exactly `n` tokens from the sentence bank, the last
/// sentence cut at a token boundary.
pub(crate) fn random_tokens(rng: &mut Rng, n: u64) -> Vec<String> {
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    let mut tokens: Vec<String> = Vec::with_capacity(n.min(4096));
    while tokens.len() < n {
        let sentence = SENTENCES[rng.range(0, SENTENCES.len() as u64 - 1) as usize];
        if let Some(last) = tokens.last_mut() {
            last.push(' ');
        }
        let room = n - tokens.len();
        tokens.extend(
            tokenizer::tokenize(sentence)
                .into_iter()
                .take(room)
                .map(str::to_owned),
        );
    }
    if let Some(last) = tokens.last_mut() {
        last.truncate(last.trim_end().len());
    }
    tokens
}

/// Random mode: length from the histogram, text from the bank; `length`
/// exactly when the count reaches `max_tokens`.
pub(crate) fn random(
    rng: &mut Rng,
    max_tokens: Option<u64>,
    ignore_eos: bool,
    cap: u64,
) -> Generated {
    let n = response_length(rng, max_tokens, ignore_eos, cap);
    let finish_reason = match max_tokens {
        Some(max) if n >= max => FinishReason::Length,
        None if n >= cap => FinishReason::Length,
        _ => FinishReason::Stop,
    };
    Generated {
        tokens: random_tokens(rng, n),
        finish_reason,
    }
}

/// Echo mode: the text itself, cut to `max_tokens` tokens; `length` when it
/// has at least that many tokens.
pub(crate) fn echo(text: &str, max_tokens: Option<u64>) -> Generated {
    let mut tokens = tokenizer::tokenize(text);
    let mut finish_reason = FinishReason::Stop;
    if let Some(max) = max_tokens {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        if tokens.len() >= max {
            finish_reason = FinishReason::Length;
            tokens.truncate(max);
        }
    }
    Generated {
        tokens: tokens.into_iter().map(str::to_owned).collect(),
        finish_reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_text_other_seed_other_text() {
        let a = random(&mut Rng::for_request(7, 1), Some(50), false, 1024);
        let b = random(&mut Rng::for_request(7, 1), Some(50), false, 1024);
        let c = random(&mut Rng::for_request(8, 1), Some(50), false, 1024);
        assert_eq!(a, b);
        assert_ne!(a.text(), c.text());
    }

    #[test]
    fn random_lengths_stay_in_bounds_and_length_iff_max() {
        for max in [1u64, 2, 6, 7, 20, 100, 500] {
            let mut saw_length = false;
            let mut saw_stop = max == 1;
            for counter in 0..400 {
                let generated = random(&mut Rng::for_request(1, counter), Some(max), false, 1024);
                let n = generated.tokens.len() as u64;
                assert!((1..=max).contains(&n), "max {max}: {n}");
                assert_eq!(generated.finish_reason == FinishReason::Length, n == max);
                saw_length |= n == max;
                saw_stop |= n < max;
            }
            assert!(
                saw_length && saw_stop,
                "max {max}: both finish reasons occur"
            );
        }
    }

    #[test]
    fn ignore_eos_always_gives_max() {
        assert_eq!(
            response_length(&mut Rng::for_request(1, 1), Some(33), true, 1024),
            33
        );
    }

    #[test]
    fn no_max_tokens_stays_within_cap() {
        for counter in 0..200 {
            let n = response_length(&mut Rng::for_request(3, counter), None, false, 30);
            assert!((1..=30).contains(&n));
        }
    }

    #[test]
    fn random_text_is_made_of_bank_sentences() {
        let generated = random(&mut Rng::for_request(2, 2), Some(300), true, 1024);
        let text = generated.text();
        assert_eq!(tokenizer::count(&text), 300);
        assert!(!text.ends_with(' '));
        let first = SENTENCES
            .iter()
            .find(|s| text.starts_with(*s) || s.starts_with(&text));
        assert!(first.is_some(), "starts with a bank sentence: {text}");
    }

    #[test]
    fn echo_returns_the_text_cut_at_max_tokens() {
        let full = echo("one two three", None);
        assert_eq!(full.text(), "one two three");
        assert_eq!(full.finish_reason, FinishReason::Stop);
        let cut = echo("one two three", Some(2));
        assert_eq!(cut.tokens, ["one ", "two "]);
        assert_eq!(cut.finish_reason, FinishReason::Length);
        assert_eq!(
            echo("one two three", Some(3)).finish_reason,
            FinishReason::Length
        );
        assert_eq!(
            echo("one two three", Some(4)).finish_reason,
            FinishReason::Stop
        );
    }
}
