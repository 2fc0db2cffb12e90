//! Config errors. Every error names the class and the key (its location), the value that was given and
//! what would have been accepted, so that a user can fix a `config.json` without reading our source.
//!
//! Parsing does not stop at the first problem: a [`ConfigError`] carries every problem found in the input
//! (the first in its own fields, the others in [`ConfigError::also`]), each with a location, a type, a
//! message and the offending input, the way pydantic-core reports validation errors.

use std::fmt;

use crate::value::Value;

/// Which Python exception an error maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A value of the wrong type, or a missing required argument (Python's `TypeError`).
    Type,
    /// A value of the right type that is not allowed (Python's `ValueError`).
    Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub kind: ErrorKind,
    /// Where the problem is: `["BitsAndBytesConfig", "llm_int8_threshold"]` (list items as `"[2]"`).
    pub loc: Vec<String>,
    /// A short machine-readable name of the problem: `"wrong_type"`, `"not_allowed"`, `"missing"`,
    /// `"value_error"`, `"type_error"`, `"unknown_method"`.
    pub type_: &'static str,
    /// The full message, starting with the location.
    pub message: String,
    /// The value that was refused, when there is one (boxed: errors stay small, and so every `Result`).
    pub input: Option<Box<Value>>,
    /// The other problems found in the same input, in the order they were found.
    pub also: Vec<ConfigError>,
}

impl ConfigError {
    pub fn type_error(loc: Vec<String>, message: String) -> Self {
        ConfigError { kind: ErrorKind::Type, loc, type_: "type_error", message, input: None, also: Vec::new() }
    }
    pub fn value_error(loc: Vec<String>, message: String) -> Self {
        ConfigError { kind: ErrorKind::Value, loc, type_: "value_error", message, input: None, also: Vec::new() }
    }
    /// The same error with another type name.
    pub fn with_type(mut self, type_: &'static str) -> Self {
        self.type_ = type_;
        self
    }
    /// The same error with the refused value attached.
    pub fn with_input(mut self, input: &Value) -> Self {
        self.input = Some(Box::new(input.clone()));
        self
    }

    /// One error from several, in order (the first gives the kind). `None` when `errors` is empty.
    pub fn combine(errors: Vec<ConfigError>) -> Option<ConfigError> {
        let mut flat = Vec::with_capacity(errors.len());
        for mut e in errors {
            let also = std::mem::take(&mut e.also);
            flat.push(e);
            flat.extend(also);
        }
        let mut it = flat.into_iter();
        let mut first = it.next()?;
        first.also = it.collect();
        Some(first)
    }

    /// Every problem, the first one included (each without its `also`).
    pub fn errors(&self) -> impl Iterator<Item = &ConfigError> {
        std::iter::once(self).chain(self.also.iter())
    }

    /// The message without its leading location (`"expected a bool, got 3 (int)"`).
    pub fn msg(&self) -> &str {
        let prefix = loc_str(&self.loc);
        self.message.strip_prefix(prefix.as_str()).and_then(|rest| rest.strip_prefix(": ")).unwrap_or(&self.message)
    }
}

/// One problem: its message. Several: the first, then each further one on its own line.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if !self.also.is_empty() {
            write!(
                f,
                "\n({} more problem{} in the same config:)",
                self.also.len(),
                if self.also.len() == 1 { "" } else { "s" }
            )?;
            for e in &self.also {
                write!(f, "\n  {}", e.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

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
    ConfigError::type_error(loc, message).with_type("wrong_type").with_input(got)
}

/// "got 'v'; allowed: a, b, c".
pub fn not_allowed(loc: Vec<String>, got: &Value, allowed: &str) -> ConfigError {
    let message = format!("{}: {} is not allowed; allowed: {}", loc_str(&loc), got.short_repr(), allowed);
    ConfigError::value_error(loc, message).with_type("not_allowed").with_input(got)
}
