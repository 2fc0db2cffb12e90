//! A reader over the keys of a config dict: typed getters that record which keys were used and produce
//! located errors. Every schema is written with it.
//!
//! The typed getters never stop the parse: a bad value is recorded (see [`Fields::report`]) and the
//! getter hands back the default, so that one pass finds every problem in the dict; [`super::parse`]
//! turns the recorded problems into one [`ConfigError`].

use super::error::{loc_str, not_allowed, wrong_type, ConfigError};
use crate::value::Value;

/// Floating dtypes accepted for compute dtypes.
pub const FLOAT_DTYPES: &[&str] = &["float16", "bfloat16", "float32", "float64"];

pub struct Fields<'a> {
    class: &'static str,
    items: &'a [(String, Value)],
    used: Vec<bool>,
    /// Keys that may appear (diffusers writes them) and are checked elsewhere or ignored.
    known_extra: &'static [&'static str],
    /// Problems found so far, in order.
    errors: Vec<ConfigError>,
}

impl<'a> Fields<'a> {
    pub fn new(class: &'static str, items: &'a [(String, Value)], known_extra: &'static [&'static str]) -> Self {
        Fields { class, items, used: vec![false; items.len()], known_extra, errors: Vec::new() }
    }

    pub fn class(&self) -> &'static str {
        self.class
    }

    /// Record a problem and go on.
    pub fn report(&mut self, e: ConfigError) {
        self.errors.push(e);
    }

    /// The value of `r`, or `fallback` with the error recorded.
    pub fn or<T>(&mut self, r: Result<T, ConfigError>, fallback: T) -> T {
        r.unwrap_or_else(|e| {
            self.report(e);
            fallback
        })
    }

    /// How many problems are recorded so far (to skip checks that would only repeat one).
    pub fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// The problems recorded so far, taken out.
    pub fn take_errors(&mut self) -> Vec<ConfigError> {
        std::mem::take(&mut self.errors)
    }

    pub fn loc(&self, key: &str) -> Vec<String> {
        vec![self.class.to_string(), key.to_string()]
    }

    /// The value under `key`, marking it used. `None` when absent.
    pub fn get(&mut self, key: &str) -> Option<&'a Value> {
        let idx = self.items.iter().position(|(k, _)| k == key)?;
        self.used[idx] = true;
        Some(&self.items[idx].1)
    }

    /// Like [`get`](Self::get) but a Python `None` counts as absent.
    pub fn get_some(&mut self, key: &str) -> Option<&'a Value> {
        match self.get(key) {
            Some(Value::Null) | None => None,
            Some(v) => Some(v),
        }
    }

    pub fn bool(&mut self, key: &str, default: bool) -> bool {
        let r = self.try_bool(key, default);
        self.or(r, default)
    }

    fn try_bool(&mut self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(wrong_type(self.loc(key), "a bool (True or False)", v)),
        }
    }

    /// A float; Python ints are accepted and converted (bools are not).
    pub fn float(&mut self, key: &str, default: f64) -> f64 {
        let r = self.try_float(key, default);
        self.or(r, default)
    }

    fn try_float(&mut self, key: &str, default: f64) -> Result<f64, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Float(f)) => Ok(*f),
            Some(Value::Int(i)) => Ok(*i as f64),
            Some(v) => Err(wrong_type(self.loc(key), "a float", v)),
        }
    }

    pub fn opt_int(&mut self, key: &str) -> Option<i64> {
        let r = self.try_opt_int(key);
        self.or(r, None)
    }

    fn try_opt_int(&mut self, key: &str) -> Result<Option<i64>, ConfigError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Int(i)) => Ok(Some(*i)),
            Some(v) => Err(wrong_type(self.loc(key), "an int or None", v)),
        }
    }

    /// A string that must be one of `allowed`.
    pub fn choice(&mut self, key: &str, default: &'static str, allowed: &[&'static str]) -> &'static str {
        let r = self.try_choice(key, default, allowed);
        self.or(r, default)
    }

    fn try_choice(
        &mut self,
        key: &str,
        default: &'static str,
        allowed: &[&'static str],
    ) -> Result<&'static str, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v @ Value::Str(s)) => allowed
                .iter()
                .copied()
                .find(|a| a == s)
                .ok_or_else(|| not_allowed(self.loc(key), v, &allowed.join(", "))),
            Some(v) => Err(wrong_type(self.loc(key), &format!("a str (one of {})", allowed.join(", ")), v)),
        }
    }

    pub fn string(&mut self, key: &str, default: &str) -> String {
        match self.try_string(key, default) {
            Ok(v) => v,
            Err(e) => {
                self.report(e);
                default.to_string()
            }
        }
    }

    fn try_string(&mut self, key: &str, default: &str) -> Result<String, ConfigError> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(Value::Str(s)) => Ok(s.clone()),
            Some(v) => Err(wrong_type(self.loc(key), "a str", v)),
        }
    }

    /// `None` or a list of strings (module names). Copied: the caller's list is never shared.
    pub fn opt_str_list(&mut self, key: &str) -> Option<Vec<String>> {
        let r = self.try_opt_str_list(key);
        self.or(r, None)
    }

    fn try_opt_str_list(&mut self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::List(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::Str(s) => out.push(s.clone()),
                        v => {
                            let mut loc = self.loc(key);
                            loc.push(format!("[{i}]"));
                            return Err(wrong_type(loc, "a str (a module name)", v));
                        }
                    }
                }
                Ok(Some(out))
            }
            Some(Value::Str(s)) => {
                let loc = self.loc(key);
                Err(ConfigError::type_error(
                    loc.clone(),
                    format!("{}: expected a list of module names, got the str {:?}; write [{:?}]", loc_str(&loc), s, s),
                ))
            }
            Some(v) => Err(wrong_type(self.loc(key), "a list of str or None", v)),
        }
    }

    /// A dtype given as a `torch.dtype` or a string (`"bfloat16"` or `"torch.bfloat16"`); `None` gives
    /// the default. Returns the short name.
    pub fn dtype(&mut self, key: &str, default: &'static str, allowed: &[&'static str]) -> &'static str {
        let r = self.try_dtype(key, default, allowed);
        self.or(r, default)
    }

    fn try_dtype(
        &mut self,
        key: &str,
        default: &'static str,
        allowed: &[&'static str],
    ) -> Result<&'static str, ConfigError> {
        let v = match self.get(key) {
            None | Some(Value::Null) => return Ok(default),
            Some(v) => v,
        };
        let name = match v {
            Value::Dtype(s) | Value::Str(s) => s.strip_prefix("torch.").unwrap_or(s),
            v => {
                return Err(wrong_type(
                    self.loc(key),
                    &format!("a torch.dtype or its name (one of {})", allowed.join(", ")),
                    v,
                ))
            }
        };
        allowed.iter().copied().find(|a| *a == name).ok_or_else(|| not_allowed(self.loc(key), v, &allowed.join(", ")))
    }

    /// Keys that no getter asked for and that are not known extras, in input order.
    pub fn unknown_keys(&self) -> Vec<String> {
        self.items
            .iter()
            .zip(&self.used)
            .filter(|((k, _), used)| !**used && !self.known_extra.contains(&k.as_str()))
            .map(|((k, _), _)| k.clone())
            .collect()
    }
}
