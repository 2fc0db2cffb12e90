//! Config errors. Every error names the class and the key (its location), the value that was given and
//! what would have been accepted, so that a user can fix a `config.json` without reading our source.

use crate::value::Value;

/// Which Python exception an error maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A value of the wrong type, or a missing required argument (Python's `TypeError`).
    Type,
    /// A value of the right type that is not allowed (Python's `ValueError`).
    Value,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    pub kind: ErrorKind,
    /// Where the problem is: `["BitsAndBytesConfig", "llm_int8_threshold"]`.
    pub loc: Vec<String>,
    pub message: String,
}

impl ConfigError {
    pub fn type_error(loc: Vec<String>, message: String) -> Self {
        ConfigError { kind: ErrorKind::Type, loc, message }
    }
    pub fn value_error(loc: Vec<String>, message: String) -> Self {
        ConfigError { kind: ErrorKind::Value, loc, message }
    }
}

/// `Class.key` (or `Class.key[2]`) for messages.
pub fn loc_str(loc: &[String]) -> String {
    let mut s = String::new();
    for (i, part) in loc.iter().enumerate() {
        if part.starts_with('[') || i == 0 {
            s.push_str(part);
        } else {
            s.push('.');
            s.push_str(part);
        }
    }
    s
}

/// "expected X, got 'v' (str)".
pub fn wrong_type(loc: Vec<String>, expected: &str, got: &Value) -> ConfigError {
    let message = format!("{}: expected {}, got {} ({})", loc_str(&loc), expected, got.short_repr(), got.type_name());
    ConfigError::type_error(loc, message)
}

/// "got 'v'; allowed: a, b, c".
pub fn not_allowed(loc: Vec<String>, got: &Value, allowed: &str) -> ConfigError {
    let message = format!("{}: {} is not allowed; allowed: {}", loc_str(&loc), got.short_repr(), allowed);
    ConfigError::value_error(loc, message)
}
