//! A small dynamic value model: what a quantization config dict can hold.
//!
//! The binding converts Python objects (or [`parse_json`] JSON text) into [`Value`]s; the config schema
//! validates them. Keys keep their insertion order so that `to_dict()` output is stable and readable.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// An object the core cannot look inside (a Python callable, a live torchao config, an int too large
/// for i64, ...). The core only sees its type name and whether it is callable; the binding keeps the
/// real object in `handle` and gets it back unchanged.
#[derive(Clone)]
pub struct Opaque {
    /// The object's type name, e.g. `"function"`, used in error messages.
    pub type_name: String,
    /// Whether the object can be called (checked for `forward_loop`).
    pub callable: bool,
    /// Identity of the object (Python's `id()`), used for equality.
    pub id: usize,
    /// The object itself, owned by whoever made the value.
    pub handle: Arc<dyn Any + Send + Sync>,
    /// How to compare two opaque objects (the binding supplies Python's `==`); `None` compares identity.
    pub eq: Option<fn(&Opaque, &Opaque) -> bool>,
}

impl fmt::Debug for Opaque {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} object at {:#x}>", self.type_name, self.id)
    }
}

impl PartialEq for Opaque {
    fn eq(&self, other: &Self) -> bool {
        if self.id == other.id {
            return true;
        }
        match self.eq {
            Some(f) => f(self, other),
            None => false,
        }
    }
}

/// A dynamically typed value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    /// A mapping with string keys, in insertion order.
    Dict(Vec<(String, Value)>),
    /// A `torch.dtype`, by its short name (`"bfloat16"`).
    Dtype(String),
    Opaque(Opaque),
}

impl Value {
    /// A short name of the value's type, as a Python user would call it.
    pub fn type_name(&self) -> &str {
        match self {
            Value::Null => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Dtype(_) => "torch.dtype",
            Value::Opaque(o) => &o.type_name,
        }
    }

    /// Look a key up in a dict value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Python truthiness, as diffusers applies it to the `load_in_*` flags.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Dict(d) => !d.is_empty(),
            Value::Dtype(_) | Value::Opaque(_) => true,
        }
    }

    /// A short Python-like rendering for error messages (long values are abbreviated).
    pub fn short_repr(&self) -> String {
        let mut s = String::new();
        self.write_repr(&mut s, 0, true);
        if s.len() > 80 {
            let mut cut = 77;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push_str("...");
        }
        s
    }

    /// The full Python-like rendering (for `repr()` of a config), nothing abbreviated.
    pub fn repr(&self) -> String {
        let mut s = String::new();
        self.write_repr(&mut s, 0, false);
        s
    }

    fn write_repr(&self, out: &mut String, depth: usize, short: bool) {
        use fmt::Write;
        if short && depth > 4 {
            out.push_str("...");
            return;
        }
        match self {
            Value::Null => out.push_str("None"),
            Value::Bool(true) => out.push_str("True"),
            Value::Bool(false) => out.push_str("False"),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => out.push_str(&format_float(*f)),
            Value::Str(s) => write_py_str(out, s),
            Value::List(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write_repr(out, depth + 1, short);
                    if short && out.len() > 100 {
                        out.push_str(", ...");
                        break;
                    }
                }
                out.push(']');
            }
            Value::Dict(items) => {
                out.push('{');
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    Value::Str(k.clone()).write_repr(out, depth + 1, short);
                    out.push_str(": ");
                    v.write_repr(out, depth + 1, short);
                    if short && out.len() > 100 {
                        out.push_str(", ...");
                        break;
                    }
                }
                out.push('}');
            }
            Value::Dtype(d) => {
                let _ = write!(out, "torch.{d}");
            }
            Value::Opaque(o) => {
                let _ = write!(out, "<{}>", o.type_name);
            }
        }
    }

    /// Serialize as JSON (dtypes as their name strings). Opaque values cannot be serialized.
    pub fn to_json(&self, indent: Option<usize>) -> Result<String, String> {
        let mut out = String::new();
        self.write_json(&mut out, indent, 0, "")?;
        Ok(out)
    }

    fn write_json(&self, out: &mut String, indent: Option<usize>, level: usize, path: &str) -> Result<(), String> {
        use fmt::Write;
        let newline = |out: &mut String, level: usize| {
            if let Some(n) = indent {
                out.push('\n');
                for _ in 0..n * level {
                    out.push(' ');
                }
            }
        };
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => {
                if f.is_finite() {
                    out.push_str(&format_float(*f));
                } else if f.is_nan() {
                    out.push_str("NaN");
                } else if *f > 0.0 {
                    out.push_str("Infinity");
                } else {
                    out.push_str("-Infinity");
                }
            }
            Value::Str(s) | Value::Dtype(s) => write_json_str(out, s),
            Value::List(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                        if indent.is_none() {
                            out.push(' ');
                        }
                    }
                    newline(out, level + 1);
                    v.write_json(out, indent, level + 1, &format!("{path}[{i}]"))?;
                }
                if !items.is_empty() {
                    newline(out, level);
                }
                out.push(']');
            }
            Value::Dict(items) => {
                out.push('{');
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                        if indent.is_none() {
                            out.push(' ');
                        }
                    }
                    newline(out, level + 1);
                    write_json_str(out, k);
                    out.push_str(": ");
                    let sub = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    v.write_json(out, indent, level + 1, &sub)?;
                }
                if !items.is_empty() {
                    newline(out, level);
                }
                out.push('}');
            }
            Value::Opaque(o) => {
                return Err(format!("{path}: a {} object cannot be written as JSON", o.type_name));
            }
        }
        Ok(())
    }
}

/// Write a string the way Python's `repr` does (single quotes, backslash escapes).
fn write_py_str(out: &mut String, s: &str) {
    use fmt::Write;
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('\'');
}

/// Format a float exactly as Python's `repr` does: the shortest digits that round-trip, positional notation
/// for 1e-4 <= |f| < 1e16 (always with a `.`), scientific notation otherwise with a signed, at least two-digit
/// exponent (`1e+16`, `1.5e-07`), and `nan` / `inf` / `-inf`.
pub fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // Rust's `Debug` gives the same shortest digits and switches to scientific notation at the same
    // magnitudes as Python; only the exponent is written differently (`1e16`, `1e-7`).
    let s = format!("{f:?}");
    match s.split_once('e') {
        None => s,
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
    }
}

fn write_json_str(out: &mut String, s: &str) {
    use fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub use crate::json::{parse_json, JsonError, JsonErrorKind};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_of_any_string_is_safe() {
        for s in ["\"", "é\u{1}\u{85}x", "a\\b", "\u{10ffff}", &"ü".repeat(60)] {
            let v = Value::Str(s.to_string());
            assert!(v.repr().starts_with('\''));
            assert!(v.short_repr().len() <= 84);
        }
        assert_eq!(Value::Str("a\"b\u{1}".into()).repr(), "'a\"b\\x01'");
    }

    #[test]
    fn floats_format_as_python_repr() {
        // (value, Python's repr(value))
        for (f, want) in [
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5e300, "-2.5e+300"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (6.0, "6.0"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(format_float(f), want, "{f:e}");
        }
    }

    #[test]
    fn repr_is_pythonic() {
        let v = Value::Dict(vec![(
            "k".into(),
            Value::List(vec![Value::Bool(true), Value::Null, Value::Str("a'b".into())]),
        )]);
        assert_eq!(v.short_repr(), r#"{'k': [True, None, 'a\'b']}"#);
    }
}
