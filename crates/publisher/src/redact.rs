//! The redaction policy: secrets never leave the process.
//!
//! Two rules, applied to every string of an event (payload, scope values, key, correlation id):
//! - **Secret-like keys.** A value under a key whose words name a secret is masked whole. Keys are split into
//!   words at `_`, `-`, `.`, spaces and camelCase humps. A key is secret when its last word is a secret noun
//!   (`password`, `secret`, `token`, `credentials`, `cookie`, `authorization`, `dsn`, …), its last two words are a
//!   secret phrase (`api key`, `private key`, `access key`, `connection string`, …), or any word is a password
//!   word (`password`, `passwd`, `passphrase`). So `access_token` and `x-api-key` are secrets; `token_count`,
//!   `tokens_used` and `primary_key` are not.
//! - **Secret-shaped values**, anywhere in any string (log lines included): bearer tokens, JWTs, AWS access key
//!   ids, GitHub, Slack and Stripe tokens, PEM private keys, passwords in URLs, and `NAME=value` or `name: value`
//!   assignments whose name is a secret key by the rule above.
//!
//! Masking keeps keys and structure: the secret becomes `"[REDACTED]"` in place. The policy is extended with
//! [`Redactor::with_keys`] and [`Redactor::with_pattern`].

use std::borrow::Cow;
use std::sync::LazyLock;

use aho_corasick::AhoCorasick;
use regex::{Captures, Regex, RegexSet};
use serde_json::Value;

/// What a secret is replaced with.
pub const MASK: &str = "[REDACTED]";

const SECRET_NOUNS: [&str; 23] = [
    "password",
    "passwords",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "secrets",
    "token",
    "tokens",
    "credential",
    "credentials",
    "cookie",
    "cookies",
    "authorization",
    "auth",
    "apikey",
    "dsn",
    "jwt",
    "bearer",
    "privatekey",
    "otp",
    "signature",
    "sig",
];
const SECRET_PHRASES: [(&str, &str); 10] = [
    ("api", "key"),
    ("private", "key"),
    ("secret", "key"),
    ("access", "key"),
    ("signing", "key"),
    ("encryption", "key"),
    ("ssh", "key"),
    ("master", "key"),
    ("connection", "string"),
    ("session", "id"),
];
const PASSWORD_WORDS: [&str; 4] = ["password", "passwords", "passwd", "passphrase"];

/// Patterns of secret-shaped values, each replaced whole by its replacement (`$1` kept where a prefix is captured).
const VALUE_RULES: [(&str, &str); 9] = [
    // PEM private keys, including multi-line ones.
    (r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----", MASK),
    // Authorization header values.
    (r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]{8,}=*", "$1 [REDACTED]"),
    // JSON Web Tokens.
    (r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}", MASK),
    // AWS access key ids.
    (r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b", MASK),
    // GitHub tokens (classic and fine-grained).
    (r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})\b", MASK),
    // Slack tokens and webhook URLs.
    (r"\bxox[abposr]-[A-Za-z0-9-]{10,}|https://hooks\.slack\.com/services/[A-Za-z0-9/]+", MASK),
    // Stripe secret, restricted and webhook keys.
    (r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,}\b|\bwhsec_[A-Za-z0-9]{10,}\b", MASK),
    // Passwords in URLs: scheme://user:password@host keeps the user.
    (r"\b([a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]*:)[^\s@/]+@", "${1}[REDACTED]@"),
    // Google API keys.
    (r"\bAIza[0-9A-Za-z\-_]{35}\b", MASK),
];

static VALUE_PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    VALUE_RULES.iter().map(|(p, r)| (Regex::new(p).expect("the built-in patterns compile"), *r)).collect()
});

/// Whether any of `VALUE_RULES` matches, in one pass over the text: most strings have no secret shape at all.
static ANY_VALUE_PATTERN: LazyLock<RegexSet> =
    LazyLock::new(|| RegexSet::new(VALUE_RULES.iter().map(|(p, _)| p)).expect("the built-in patterns compile"));

/// `name=value`, `name: value`, `"name": "value"` and `export NAME="value"` assignments inside text.
static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)(?P<quote>"?)(?P<sep>\s*[=:]\s*)(?P<value>"[^"]*"|'[^']*'|[^\s,;&"']+)"#,
    )
    .expect("the assignment pattern compiles")
});

/// Splits a key into lower-case words at separators and camelCase humps (`APIKey` → `api`, `key`).
fn words(key: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = key.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            continue;
        }
        let hump = c.is_uppercase()
            && !current.is_empty()
            && (chars[i - 1].is_lowercase()
                || chars[i - 1].is_ascii_digit()
                || chars.get(i + 1).is_some_and(|n| n.is_lowercase()));
        if hump {
            words.push(std::mem::take(&mut current));
        }
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// A redaction policy.
#[derive(Debug, Clone)]
pub struct Redactor {
    /// Extra secret key names (whole keys, compared by their words).
    extra_keys: Vec<Vec<String>>,
    extra_patterns: Vec<Regex>,
    /// One word of every rule that makes a key secret (each noun, the first word of each phrase and extra key),
    /// found in one pass, ignoring ASCII case: a key is secret only if one of them is one of its words, so an
    /// ASCII key (or text) in which none occurs holds no secret key, and skips the word-by-word rules.
    secret_words: AhoCorasick,
}

impl Default for Redactor {
    fn default() -> Self {
        // The built-in patterns compile here, when a service builds its redactor, rather than in its first publish
        // (several milliseconds, which that event's delivery would wait for).
        LazyLock::force(&VALUE_PATTERNS);
        LazyLock::force(&ANY_VALUE_PATTERN);
        LazyLock::force(&ASSIGNMENT);
        Self { extra_keys: Vec::new(), extra_patterns: Vec::new(), secret_words: secret_words(&[]) }
    }
}

/// The automaton of `Redactor::secret_words`.
fn secret_words(extra_keys: &[Vec<String>]) -> AhoCorasick {
    let words = SECRET_NOUNS
        .iter()
        .chain(SECRET_PHRASES.iter().map(|(first, _)| first))
        .copied()
        .chain(extra_keys.iter().filter_map(|key| key.first()).map(String::as_str));
    AhoCorasick::builder().ascii_case_insensitive(true).build(words).expect("a few short words always build")
}

impl Redactor {
    /// The built-in policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds key names that are secrets in this service (`["license", "pin_code"]`), matched by their words.
    pub fn with_keys<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, keys: I) -> Self {
        self.extra_keys.extend(keys.into_iter().map(|k| words(k.as_ref())).filter(|w| !w.is_empty()));
        self.secret_words = secret_words(&self.extra_keys);
        self
    }

    /// Adds a pattern of secret-shaped values, masked wherever it matches.
    pub fn with_pattern(mut self, pattern: Regex) -> Self {
        self.extra_patterns.push(pattern);
        self
    }

    /// Whether a value under `key` is a secret.
    pub fn is_secret_key(&self, key: &str) -> bool {
        // Non-ASCII keys take the word-by-word rules: Unicode lower-casing can turn other letters into ASCII ones.
        (!key.is_ascii() || self.secret_words.is_match(key)) && self.is_secret_by_words(key)
    }

    /// `is_secret_key` by the rules themselves, word by word.
    fn is_secret_by_words(&self, key: &str) -> bool {
        let words = words(key);
        let Some(last) = words.last() else { return false };
        if SECRET_NOUNS.contains(&last.as_str()) || words.iter().any(|w| PASSWORD_WORDS.contains(&w.as_str())) {
            return true;
        }
        if let [.., a, b] = words.as_slice()
            && SECRET_PHRASES.iter().any(|(x, y)| a == x && b == y)
        {
            return true;
        }
        self.extra_keys.iter().any(|extra| words.ends_with(extra))
    }

    /// Masks secret-shaped values inside `text`.
    pub fn redact_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let shapes = !self.extra_patterns.is_empty() || ANY_VALUE_PATTERN.is_match(text);
        // An assignment's name is ASCII, and masking never joins text into a new name (the mask is bracketed):
        // with no secret word anywhere in the text, no assignment in it is a secret.
        let assignments = self.secret_words.is_match(text);
        self.redact_checked(text, shapes, assignments)
    }

    /// `redact_str`, told whether the text can hold a secret shape and a secret assignment.
    fn redact_checked<'a>(&self, text: &'a str, shapes: bool, assignments: bool) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        if !shapes && !assignments {
            return out;
        }
        for (pattern, replacement) in VALUE_PATTERNS.iter().filter(|_| shapes) {
            if let Cow::Owned(replaced) = pattern.replace_all(&out, *replacement) {
                out = Cow::Owned(replaced);
            }
        }
        for pattern in &self.extra_patterns {
            if let Cow::Owned(replaced) = pattern.replace_all(&out, MASK) {
                out = Cow::Owned(replaced);
            }
        }
        if !assignments {
            return out;
        }
        let assignments = ASSIGNMENT.replace_all(&out, |caps: &Captures<'_>| {
            let whole = caps.get(0).map_or("", |m| m.as_str()).to_owned();
            if !self.is_secret_key(&caps["name"]) || caps["value"].contains(MASK) {
                return whole;
            }
            format!("{}{}{}{}", &caps["name"], &caps["quote"], &caps["sep"], quoted_mask(&caps["value"]))
        });
        match assignments {
            Cow::Owned(replaced) => Cow::Owned(replaced),
            Cow::Borrowed(_) => out,
        }
    }

    /// Masks secrets in a JSON value in place: values under secret keys whole, secret shapes in every string.
    pub fn redact_value(&self, value: &mut Value) {
        match value {
            Value::String(text) => {
                if let Cow::Owned(redacted) = self.redact_str(text) {
                    *text = redacted;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_value(v)),
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if self.is_secret_key(key) && !v.is_null() && !matches!(v, Value::Bool(_)) {
                        *v = Value::String(MASK.to_owned());
                    } else {
                        self.redact_value(v);
                    }
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// Masks a plain string field in place.
    pub fn redact_field(&self, field: &mut String) {
        if let Cow::Owned(redacted) = self.redact_str(field) {
            *field = redacted;
        }
    }
}

fn quoted_mask(value: &str) -> String {
    match value.chars().next() {
        Some(q @ ('"' | '\'')) => format!("{q}{MASK}{q}"),
        _ => MASK.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn r() -> Redactor {
        Redactor::new()
    }

    /// Pieces of keys and texts: secret words and shapes, their near misses, separators, and letters that
    /// lower-case into ASCII (the Kelvin sign) or are not ASCII.
    const PIECES: [&str; 44] = [
        "token",
        "TOKEN",
        "Token",
        "tokens_used",
        "=",
        ": ",
        ":",
        "\"",
        "'",
        " ",
        ",",
        "_",
        "-",
        ".",
        "api",
        "Key",
        "apiKey",
        "password",
        "pwd",
        "secret",
        "session",
        "_id",
        "auth",
        "Bearer ",
        "basic ",
        "abcdefghijklmnop",
        "eyJhbGciOiJI.eyJzdWIiOiIx.c2lnbmF0dXJl",
        "AKIAABCDEFGHIJKLMNOP",
        "ghp_",
        "012345678901234567890123456789",
        "https://",
        "user:pw@host",
        "xoxb-0123456789ab",
        "sk_live_0123456789ab",
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----END RSA PRIVATE KEY-----",
        "é",
        "\u{212A}",
        "ey",
        "license",
        "pin",
        "\n",
        "status",
        "1",
    ];

    proptest::proptest! {
        #[test]
        fn the_quick_checks_never_change_what_is_masked(
            pieces in proptest::collection::vec(0..PIECES.len(), 0..14),
            extra in proptest::bool::ANY,
        ) {
            let text: String = pieces.iter().map(|&i| PIECES[i]).collect();
            let redactor = if extra { r().with_keys(["license", "pin_code", "\u{212A}ey_ring"]) } else { r() };
            proptest::prop_assert_eq!(redactor.redact_str(&text), redactor.redact_checked(&text, true, true));
            proptest::prop_assert_eq!(redactor.is_secret_key(&text), redactor.is_secret_by_words(&text));
        }
    }

    /// A key of one to four words, each in one of three cases, joined by one of five separators.
    fn key_of(parts: &[(usize, usize, u8)]) -> String {
        let vocabulary: Vec<&str> = SECRET_NOUNS
            .iter()
            .chain(SECRET_PHRASES.iter().flat_map(|(a, b)| [a, b]))
            .chain(&["license", "pin", "code", "count", "used", "primary", "x", "hash", "\u{212A}ey"])
            .copied()
            .collect();
        let mut key = String::new();
        for &(word, separator, case) in parts {
            key.push_str(["_", "-", ".", " ", ""][separator % 5]);
            let word = vocabulary[word % vocabulary.len()];
            key.push_str(&match case % 3 {
                0 => word.to_owned(),
                1 => word.to_uppercase(),
                _ => word.chars().take(1).flat_map(char::to_uppercase).chain(word.chars().skip(1)).collect(),
            });
        }
        key
    }

    proptest::proptest! {
        #[test]
        fn the_quick_check_of_keys_never_changes_which_are_secret(
            parts in proptest::collection::vec((0..100usize, 0..5usize, 0..3u8), 1..5),
            extra in proptest::bool::ANY,
        ) {
            let key = key_of(&parts);
            let redactor = if extra { r().with_keys(["license", "pin_code", "\u{212A}ey_ring"]) } else { r() };
            proptest::prop_assert_eq!(redactor.is_secret_key(&key), redactor.is_secret_by_words(&key));
            let text = format!("{key}=hunter2 and {key}: \"x\"");
            proptest::prop_assert_eq!(redactor.redact_str(&text), redactor.redact_checked(&text, true, true));
        }
    }

    #[test]
    fn text_without_a_secret_word_or_shape_is_passed_through_unread() {
        let redactor = r();
        assert!(!ANY_VALUE_PATTERN.is_match("deploy d-42 finished in 3.2 s: ok"));
        assert!(!redactor.secret_words.is_match("deploy d-42 finished in 3.2 s: ok"));
        assert!(redactor.secret_words.is_match("DB_PASSWORD=x") && redactor.secret_words.is_match("X-Api-Key"));
        assert!(r().with_keys(["license"]).secret_words.is_match("LICENSE: abc"));
    }

    #[test]
    fn keys_are_split_into_words_at_separators_and_humps() {
        assert_eq!(words("accessToken"), ["access", "token"]);
        assert_eq!(words("X-API-Key"), ["x", "api", "key"]);
        assert_eq!(words("APIKey"), ["api", "key"]);
        assert_eq!(words("db.password_hash"), ["db", "password", "hash"]);
    }

    #[test]
    fn secret_keys_are_recognised_by_whole_words() {
        for secret in [
            "password",
            "DB_PASSWORD",
            "access_token",
            "accessToken",
            "x-api-key",
            "apiKey",
            "client_secret",
            "Authorization",
            "set-cookie",
            "private_key",
            "aws_secret_access_key",
            "credentials",
            "connection_string",
            "DATABASE_DSN",
            "password_hash",
            "refresh_token",
            "github_tokens",
        ] {
            assert!(r().is_secret_key(secret), "{secret} should be secret");
        }
        for plain in [
            "tokens_used",
            "token_count",
            "tokenizer",
            "primary_key",
            "keyboard",
            "author",
            "passenger",
            "secretary",
            "cookie_banner_shown",
            "secret_santa_group",
            "key",
            "status",
            "run_id",
        ] {
            assert!(!r().is_secret_key(plain), "{plain} should pass");
        }
    }

    #[test]
    fn values_under_secret_keys_are_masked_in_place_keeping_structure() {
        let mut v = json!({"user": "ann", "password": "hunter2", "nested": [{"apiKey": 123, "tokens_used": 42}],
                           "headers": {"Authorization": "Bearer abcdefghijklmnop", "accept": "json"},
                           "token_count": 7, "has_password": true});
        r().redact_value(&mut v);
        assert_eq!(
            v,
            json!({"user": "ann", "password": MASK, "nested": [{"apiKey": MASK, "tokens_used": 42}],
                             "headers": {"Authorization": MASK, "accept": "json"},
                             "token_count": 7, "has_password": true})
        );
    }

    /// Real secret shapes (fake values of the real formats): each must be masked inside ordinary text.
    #[test]
    fn secret_shaped_values_are_masked_anywhere_in_text() {
        let corpus = [
            "Authorization: Bearer 4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c",
            "curl -H 'Authorization: Basic dXNlcjpwYXNzd29yZA=='",
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2lnbmF0dXJlLXZhbHVl here",
            "key AKIAIOSFODNN7EXAMPLE used",
            "pushed with ghp_16C7e42F292c6912E7710c838347Ae178B4a done",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789",
            "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
            "hook https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
            "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc and rk_test_51H8xyzABCDEFGHIJ",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
            "connecting to postgres://app:s3cr3tP4ss@db.internal:5432/app",
            "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "DB_PASSWORD=\"correct horse battery staple\"",
            "password: hunter2",
            "{\"client_secret\": \"abc123def456\"}",
            "GET /callback?code=1&access_token=abcdef123456&state=x",
            "maps AIzaSyA1234567890abcdefghijklmnopqrstuv",
        ];
        let secrets = [
            "4f9a8b7c6d5e",
            "dXNlcjpw",
            "c2lnbmF0",
            "AKIAIOSFODNN7",
            "ghp_16C7",
            "github_pat_11",
            "xoxb-1234",
            "T00000000/B0",
            "sk_live_4eC3",
            "rk_test_51H8",
            "MIIEpAIB",
            "b3BlbnNz",
            "s3cr3tP4ss",
            "wJalrXUt",
            "horse battery",
            "hunter2",
            "abc123def",
            "abcdef123456",
            "AIzaSyA123",
        ];
        for line in corpus {
            let out = r().redact_str(line);
            for secret in secrets {
                assert!(!out.contains(secret), "{secret} leaked from {line:?}: {out:?}");
            }
            assert!(out.contains(MASK), "nothing masked in {line:?}");
        }
    }

    /// Ordinary text that looks a bit like secrets must pass untouched.
    #[test]
    fn look_alikes_pass_untouched() {
        let corpus = [
            "compiling crate 12 of 140 (tokens_used=5301, token_count: 12)",
            "see https://docs.example.com/guide?page=2&sort=asc",
            "https://github.com/org/repo/pull/1234",
            "postgres://db.internal:5432/app",
            "user@example.com wrote: all good",
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "request 550e8400-e29b-41d4-a716-446655440000 took 35 ms",
            "primary_key=id, sort_key=created_at",
            "the token bucket refilled; authorized requests: 12",
            "the token generation finished in 3 s",
            "time: 12:00:01 status=ok",
            "eyJ is how base64 JSON starts",
        ];
        for line in corpus {
            assert_eq!(r().redact_str(line), line, "changed a look-alike");
        }
    }

    #[test]
    fn the_policy_takes_extra_keys_and_patterns() {
        let redactor =
            Redactor::new().with_keys(["license", "pin_code"]).with_pattern(Regex::new(r"ACME-\d{6}").unwrap());
        let mut v = json!({"license": "L-1", "user_pin_code": "1234", "note": "ticket ACME-123456 filed", "pin": 1});
        redactor.redact_value(&mut v);
        assert_eq!(
            v,
            json!({"license": MASK, "user_pin_code": MASK, "note": format!("ticket {MASK} filed"), "pin": 1})
        );
    }
}
