//! JSON text → [`Value`], with `jiter` (the parser pydantic-core uses) doing the reading.
//!
//! The result is what Python's `json.loads` gives for the same text: standard JSON (RFC 8259: `01`, `1.`,
//! `+1`, `.5`, trailing commas and unescaped control characters are errors) plus the `NaN`, `Infinity` and
//! `-Infinity` literals Python reads and writes; integers stay integers and any number with a fraction or
//! exponent is a float (correctly rounded, `1e400` is `inf`); objects keep their keys in first-seen order and a
//! repeated key takes the last value, as a Python dict built from the pairs does. Nesting is limited to 64
//! levels.
//!
//! Two things Python's `json` accepts have no exact [`Value`]: integers outside i64 and strings holding a lone
//! UTF-16 surrogate escape (`"\ud800"`; a Rust string cannot hold one). Rather than change them (the old
//! reader made such integers floats), the parser refuses them with [`JsonErrorKind::Unrepresentable`]; the
//! Python binding then reads that text with Python's own `json` module, so a Python user gets exactly what
//! `json.loads` gives.

use jiter::{Jiter, JiterError, JiterErrorType, JsonErrorType, Peek};

use crate::value::Value;

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 64;

/// Why a text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonErrorKind {
    /// Not JSON (or trailing text after the document).
    Syntax,
    /// Arrays/objects nested more than [`MAX_DEPTH`] levels.
    TooDeep,
    /// Valid for Python's `json`, but holding a value [`Value`] cannot represent exactly (see the module docs).
    Unrepresentable,
}

/// Errors from [`parse_json`], with the byte offset where the text went wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid JSON at byte {offset}: {message}")]
pub struct JsonError {
    pub kind: JsonErrorKind,
    pub offset: usize,
    pub message: String,
}

impl From<JiterError> for JsonError {
    fn from(e: JiterError) -> Self {
        let kind = match &e.error_type {
            // A lone surrogate escape (`"\ud800"`, `"\udc00"`): Python's json accepts it.
            JiterErrorType::JsonError(
                JsonErrorType::LoneLeadingSurrogateInHexEscape | JsonErrorType::UnexpectedEndOfHexEscape,
            ) => JsonErrorKind::Unrepresentable,
            _ => JsonErrorKind::Syntax,
        };
        JsonError { kind, offset: e.index, message: e.error_type.to_string() }
    }
}

/// Parse a JSON document into a [`Value`] (see the module docs for exactly what is accepted).
pub fn parse_json(text: &str) -> Result<Value, JsonError> {
    let mut j = Jiter::new(text.as_bytes()).with_allow_inf_nan();
    let peek = j.peek()?;
    let v = value(&mut j, peek, 0)?;
    j.finish()?;
    Ok(v)
}

fn value(j: &mut Jiter<'_>, peek: Peek, depth: usize) -> Result<Value, JsonError> {
    match peek {
        Peek::Null => {
            j.known_null()?;
            Ok(Value::Null)
        }
        Peek::True | Peek::False => Ok(Value::Bool(j.known_bool(peek)?)),
        Peek::String => Ok(Value::Str(j.known_str()?.to_owned())),
        Peek::Array | Peek::Object if depth >= MAX_DEPTH => Err(JsonError {
            kind: JsonErrorKind::TooDeep,
            offset: j.current_index(),
            message: format!("nested too deeply (more than {MAX_DEPTH} levels)"),
        }),
        Peek::Array => {
            let mut items = Vec::new();
            let mut next = j.known_array()?;
            while let Some(p) = next {
                items.push(value(j, p, depth + 1)?);
                next = j.array_step()?;
            }
            Ok(Value::List(items))
        }
        Peek::Object => object(j, depth),
        _ => number(j, peek),
    }
}

fn object(j: &mut Jiter<'_>, depth: usize) -> Result<Value, JsonError> {
    let mut items: Vec<(String, Value)> = Vec::new();
    // Large objects get a hash index so that many keys cost linear, not quadratic, time.
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut key = j.known_object()?.map(str::to_owned);
    while let Some(k) = key {
        let peek = j.peek()?;
        let v = value(j, peek, depth + 1)?;
        if items.len() == 32 && index.is_empty() {
            index = items.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
        }
        let found = if index.is_empty() { items.iter().position(|(ik, _)| *ik == k) } else { index.get(&k).copied() };
        match found {
            // A repeated key: the last value wins, in the place of the first (Python's dict semantics).
            Some(i) => items[i].1 = v,
            None => {
                if !index.is_empty() {
                    index.insert(k.clone(), items.len());
                }
                items.push((k, v));
            }
        }
        key = j.next_key()?.map(str::to_owned);
    }
    Ok(Value::Dict(items))
}

fn number(j: &mut Jiter<'_>, peek: Peek) -> Result<Value, JsonError> {
    let start = j.current_index();
    let bytes = j.known_number_bytes(peek)?;
    // jiter has checked the JSON number grammar (and the NaN/Infinity literals); the bytes are ASCII.
    let text = std::str::from_utf8(bytes).map_err(|_| JsonError {
        kind: JsonErrorKind::Syntax,
        offset: start,
        message: "invalid number".into(),
    })?;
    match text {
        "NaN" => return Ok(Value::Float(f64::NAN)),
        "Infinity" => return Ok(Value::Float(f64::INFINITY)),
        "-Infinity" => return Ok(Value::Float(f64::NEG_INFINITY)),
        _ => {}
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return text.parse::<i64>().map(Value::Int).map_err(|_| JsonError {
            kind: JsonErrorKind::Unrepresentable,
            offset: start,
            message: format!("the integer {text} does not fit in 64 bits"),
        });
    }
    // Rust's parse is correctly rounded, as Python's float() is (overflow gives ±inf, underflow ±0).
    text.parse::<f64>().map(Value::Float).map_err(|_| JsonError {
        kind: JsonErrorKind::Syntax,
        offset: start,
        message: format!("invalid number {text:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> JsonErrorKind {
        parse_json(text).unwrap_err().kind
    }

    #[test]
    fn json_round_trip() {
        let text = r#"{"a": [1, 2.5, true, null, "x\"y"], "b": {"c": -3}, "d": NaN}"#;
        let v = parse_json(text).unwrap();
        let back = parse_json(&v.to_json(None).unwrap()).unwrap();
        // NaN != NaN, so compare everything else.
        assert_eq!(v.get("a"), back.get("a"));
        assert_eq!(v.get("b"), back.get("b"));
        assert!(matches!(back.get("d"), Some(Value::Float(f)) if f.is_nan()));
    }

    #[test]
    fn json_objects_with_many_keys_and_duplicates() {
        let mut text = String::from("{");
        for i in 0..5000 {
            text.push_str(&format!("\"k{i}\": {i}, "));
        }
        text.push_str("\"k7\": -1}");
        let v = parse_json(&text).unwrap();
        let Value::Dict(items) = &v else { panic!() };
        assert_eq!(items.len(), 5000);
        assert_eq!(items[7], ("k7".to_string(), Value::Int(-1)), "last value, first position");
        assert_eq!(v.get("k4999"), Some(&Value::Int(4999)));
        let v = parse_json(r#"{"a": 1, "b": 2, "a": 3}"#).unwrap();
        assert_eq!(v, Value::Dict(vec![("a".into(), Value::Int(3)), ("b".into(), Value::Int(2))]));
    }

    #[test]
    fn json_errors_have_offsets() {
        let e = parse_json("{\"a\": [1, 2,, 3]}").unwrap_err();
        assert_eq!((e.kind, e.offset), (JsonErrorKind::Syntax, 12));
        assert!(parse_json("[").is_err());
        let e = parse_json(&"[".repeat(100)).unwrap_err();
        assert_eq!((e.kind, e.offset), (JsonErrorKind::TooDeep, 64));
        assert!(e.message.contains("deeply"));
        assert!(parse_json(&format!("{}1{}", "[".repeat(64), "]".repeat(64))).is_ok());
        assert_eq!(parse_json("{} x").unwrap_err().offset, 3);
    }

    #[test]
    fn standard_conforming_numbers() {
        for bad in ["01", "1.", ".5", "+1", "1e", "-", "0x10", "1.e3", "inf", "-NaN", "nan", "[1,]", "{\"a\":1,}"] {
            assert_eq!(kind(bad), JsonErrorKind::Syntax, "{bad}");
        }
        assert_eq!(parse_json("-0").unwrap(), Value::Int(0));
        assert_eq!(parse_json("-0.0").unwrap().to_json(None).unwrap(), "-0.0");
        assert_eq!(parse_json("1E2").unwrap(), Value::Float(100.0));
        assert_eq!(parse_json("1e400").unwrap(), Value::Float(f64::INFINITY));
        assert_eq!(parse_json("9223372036854775807").unwrap(), Value::Int(i64::MAX));
        assert_eq!(parse_json("-9223372036854775808").unwrap(), Value::Int(i64::MIN));
        assert_eq!(parse_json("0.1").unwrap(), Value::Float(0.1));
    }

    #[test]
    fn what_value_cannot_hold_is_refused_not_changed() {
        for text in ["9223372036854775808", "[-9223372036854775809]", r#""\ud800""#, r#"{"a": "x\udc00y"}"#] {
            assert_eq!(kind(text), JsonErrorKind::Unrepresentable, "{text}");
        }
        assert_eq!(parse_json(r#""\ud83d\ude00""#).unwrap(), Value::Str("\u{1f600}".into()));
    }

    #[test]
    fn strings_follow_the_standard() {
        assert_eq!(parse_json(r#""a\/b\u00e9\n""#).unwrap(), Value::Str("a/bé\n".into()));
        for bad in ["\"a\u{1}b\"", r#""\x""#, r#""\u12""#, "\"abc", "'a'"] {
            assert_eq!(kind(bad), JsonErrorKind::Syntax, "{bad:?}");
        }
    }
}
