//! The password policy: what a user's password must be before the KDC
//! derives a key from it, at creation (`kdc principal add`, `POST
//! /admin/principals`), at rotation (`kdc principal rotate`, `POST
//! /admin/principals/{name}/rotate`) and for the bootstrap administrator
//! (`kdc init --admin-password-stdin`).
//!
//! A password is refused when it
//!
//! - has fewer than [`MIN_PASSWORD_CHARS`] characters (a passphrase of a few
//!   words passes easily; every guess an attacker makes costs an Argon2id
//!   derivation, but a short password is still within reach offline once a
//!   pre-authentication or a sealed reply is captured);
//! - is one of the most common passwords, also with digits, punctuation or
//!   spaces added before or after it, or repeated (`password1234`,
//!   `!!iloveyou2024`, `monkeymonkey`): these are what guessing starts with;
//! - is a keyboard or alphabet run or a short repeated pattern
//!   (`qwertyuiop123`, `123456789012`, `abababababab`);
//! - is the principal's own name, decorated or not.
//!
//! No composition rules (a digit, a capital, a symbol): they make passwords
//! harder to remember, not to guess (NIST SP 800-63B, section 3.1.1.2).
//!
//! The common passwords are Openwall's `password.lst` (John the Ripper 1.9.0,
//! 3546 entries, "assumed to be in the public domain"), embedded verbatim in
//! `common-passwords.txt`.

use std::collections::HashSet;
use std::sync::LazyLock;

use kdc_proto::Principal;
use thiserror::Error;

/// The fewest characters (Unicode scalar values) a password may have.
pub(crate) const MIN_PASSWORD_CHARS: usize = 12;

/// The longest password accepted, in bytes.
pub(crate) const MAX_PASSWORD_BYTES: usize = 1024;

/// Why a password was refused. The messages say what to change, never the
/// password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WeakPassword {
    /// Fewer than [`MIN_PASSWORD_CHARS`] characters.
    #[error("it has fewer than {MIN_PASSWORD_CHARS} characters (a passphrase of a few words is easy to remember)")]
    TooShort,
    /// More than [`MAX_PASSWORD_BYTES`] bytes.
    #[error("it is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// A common password, perhaps with digits or symbols around it.
    #[error("it is one of the most common passwords (digits or symbols around it do not help)")]
    Common,
    /// A keyboard or alphabet run, or a short repeated pattern.
    #[error("it is a keyboard or alphabet sequence or a repeated pattern")]
    Pattern,
    /// The principal's own name.
    #[error("it is the principal's own name")]
    Name,
}

/// Openwall's list, one password a line; `#!comment:` lines are its header.
const COMMON_PASSWORDS: &str = include_str!("common-passwords.txt");

/// The list, lower-cased.
static COMMON: LazyLock<HashSet<String>> = LazyLock::new(|| {
    COMMON_PASSWORDS.lines().filter(|l| !l.is_empty() && !l.starts_with("#!comment")).map(str::to_lowercase).collect()
});

/// Runs people type as passwords (each also checked reversed): digits (three
/// rounds, so a run may wrap past 0), the alphabet and keyboard rows and
/// columns.
const SEQUENCES: [&str; 7] = [
    "012345678901234567890123456789",
    "abcdefghijklmnopqrstuvwxyz",
    "qwertyuiopasdfghjklzxcvbnm",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
    "1q2w3e4r5t6y7u8i9o0p",
    "qazwsxedcrfvtgbyhnujmikolp",
    "zaq1xsw2cde3vfr4bgt5nhy6mju7ki8lo9",
];

/// The shortest unit `s` is a repetition of (itself when it repeats
/// nothing).
fn repeated_unit(s: &[char]) -> &[char] {
    let n = s.len();
    for p in 1..n {
        if n.is_multiple_of(p) && s.chunks(p).all(|c| c == s.get(..p).unwrap_or_default()) {
            return s.get(..p).unwrap_or(s);
        }
    }
    s
}

fn is_sequence(s: &str) -> bool {
    s.chars().count() >= 4 && SEQUENCES.iter().any(|q| q.contains(s) || q.chars().rev().collect::<String>().contains(s))
}

/// Checks `password` for `principal` against the policy.
pub(crate) fn check(password: &str, principal: &Principal) -> Result<(), WeakPassword> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(WeakPassword::TooLong);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(WeakPassword::TooShort);
    }
    let lower = password.to_lowercase();
    // What is left without the digits, punctuation and spaces around it:
    // `2024!iloveyou!!` → `iloveyou`.
    let core = lower.trim_matches(|c: char| !c.is_alphabetic());
    let name = principal.name().to_lowercase();
    let full = principal.to_string().to_lowercase();
    let candidates = [lower.as_str(), core];
    if candidates.iter().any(|c| *c == name || *c == full) {
        return Err(WeakPassword::Name);
    }
    for c in candidates.into_iter().filter(|c| !c.is_empty()) {
        let chars: Vec<char> = c.chars().collect();
        let unit: String = repeated_unit(&chars).iter().collect();
        if COMMON.contains(c) || COMMON.contains(&unit) {
            return Err(WeakPassword::Common);
        }
        if unit == name {
            return Err(WeakPassword::Name);
        }
        if unit.chars().count() <= 4 && unit.len() < c.len() {
            return Err(WeakPassword::Pattern);
        }
        if is_sequence(c) || is_sequence(&unit) {
            return Err(WeakPassword::Pattern);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn alice() -> Principal {
        "alice@EXAMPLE.TEST".parse().unwrap()
    }

    #[test]
    fn passphrases_and_random_strings_pass() {
        for ok in [
            "correct horse battery staple",
            "bootstrap-admin-pass-123",
            "carol has a long passphrase 42",
            "carol's password",
            "Ab3$kz!Q9wLm",
            "839201847362",
            "dragons are not real 1",
            "ünïcödé pässwörd",
        ] {
            assert_eq!(check(ok, &alice()), Ok(()), "{ok}");
        }
    }

    #[test]
    fn short_passwords_are_refused_by_characters_not_bytes() {
        assert_eq!(check("", &alice()), Err(WeakPassword::TooShort));
        assert_eq!(check("tr0ub4dor&3", &alice()), Err(WeakPassword::TooShort));
        // Eleven characters of two bytes each: still eleven.
        assert_eq!(check(&"é".repeat(11), &alice()), Err(WeakPassword::TooShort));
        assert_eq!(check(&"x".repeat(1025), &alice()), Err(WeakPassword::TooLong));
    }

    #[test]
    fn common_passwords_are_refused_with_decorations_too() {
        assert!(COMMON.len() > 3000, "the list is embedded whole");
        for common in [
            "winniethepooh",
            "password1234",
            "Password1234!",
            "!!iloveyou2024",
            "2024 starwars ",
            "monkeymonkey",
            "passwordpassword1",
            "   football   ",
            // On the list as they are, with the run going on after them.
            "qwertyuiop123",
            "ASDFGHJKL!!!!",
        ] {
            assert_eq!(check(common, &alice()), Err(WeakPassword::Common), "{common}");
        }
    }

    #[test]
    fn sequences_and_patterns_are_refused() {
        for pattern in [
            "123456789012",
            "098765432109",
            "abcdefghijkl",
            "poiuytrewq123",
            "MNBVCXZLKJH!!!!",
            "1q2w3e4r5t6y",
            "zaq1xsw2cde3",
            "bbbbbbbbbbbb",
            "abababababab",
            "123!123!123!",
        ] {
            assert_eq!(check(pattern, &alice()), Err(WeakPassword::Pattern), "{pattern}");
        }
    }

    #[test]
    fn the_principals_own_name_is_refused() {
        let svc: Principal = "jonathan.smith@EXAMPLE.TEST".parse().unwrap();
        assert_eq!(check("Jonathan.Smith", &svc), Err(WeakPassword::Name));
        assert_eq!(check("jonathan.smith2024!", &svc), Err(WeakPassword::Name));
        assert_eq!(check("jonathan.smith@example.test", &svc), Err(WeakPassword::Name));
        assert_eq!(check("jonathan.smithjonathan.smith", &svc), Err(WeakPassword::Name));
        // Another principal may use it (it is not on the common list).
        assert_eq!(check("jonathan.smith2024!", &alice()), Ok(()));
    }

    #[test]
    fn messages_never_contain_the_password() {
        for pw in ["short", "password1234", "123456789012", "alice1234567"] {
            let e = check(pw, &alice()).unwrap_err();
            assert!(!e.to_string().contains(pw), "{e}");
        }
    }
}
