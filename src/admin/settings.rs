//! SHOW CONFIG's rows: every general setting with its value and default as PgBouncer prints
//! them. PgBouncer keeps times as numbers of seconds printed with C's `%g` (`30`, `0.5`, `120`),
//! booleans as integers (`1`, `0`) and lists as the text they were written in (`a, b`); a
//! setting left unset is an empty value.

use crate::config::General;
use serde::de::{self, Deserialize, Visitor};
use std::collections::{BTreeMap, BTreeSet};

/// One SHOW CONFIG row: key, value, default, changeable.
pub struct Setting {
    pub key: String,
    pub value: String,
    pub default: String,
    pub changeable: bool,
}

/// Every general setting, sorted by key: those set, those at their default, and those unset.
pub fn rows(current: &General) -> Vec<Setting> {
    let value = formatted(current);
    let default = formatted(&General::default());
    let mut keys: BTreeSet<&str> = field_names().iter().copied().collect();
    keys.extend(value.keys().map(String::as_str));
    keys.extend(default.keys().map(String::as_str));
    keys.into_iter()
        .map(|key| Setting {
            key: key.to_owned(),
            value: value.get(key).cloned().unwrap_or_default(),
            default: default.get(key).cloned().unwrap_or_default(),
            changeable: !crate::config::RESTART_ONLY.contains(&key),
        })
        .collect()
}

/// The settings that have a value, formatted. Unset ones (None) are missing: TOML has no null.
fn formatted(general: &General) -> BTreeMap<String, String> {
    match toml::Value::try_from(general) {
        Ok(toml::Value::Table(table)) => table
            .into_iter()
            .map(|(key, value)| (key, format_value(&value)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// One value as PgBouncer prints its kind of setting.
fn format_value(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => format_g(*f),
        toml::Value::Boolean(b) => u8::from(*b).to_string(),
        // PgBouncer's lists are strings; pgmux's print as one written `a, b` would.
        toml::Value::Array(items) => items
            .iter()
            .map(format_value)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

/// C's `printf("%g")`, which PgBouncer uses for times: six significant digits, no trailing
/// zeros, exponent form below 1e-4 and from 1e6 on.
fn format_g(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == 0.0 {
        return "0".into();
    }
    // Rounded to six significant digits first: that decides the exponent, as in C.
    let sci = format!("{v:.5e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let mantissa = trim_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let decimals = (5 - exp).max(0) as usize;
    trim_zeros(&format!("{v:.decimals$}")).to_owned()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// The names of General's fields, from what its Deserialize asks for: the unset ones too,
/// which serializing leaves out.
fn field_names() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    let _ = General::deserialize(FieldNames(&mut names));
    names
}

/// A deserializer that only notes the fields a struct asks for, then gives up.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only field names are read"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        self.deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_c_percent_g() {
        for (v, text) in [
            (3.0, "3"),
            (0.5, "0.5"),
            (120.0, "120"),
            (3600.0, "3600"),
            (0.0, "0"),
            (15.25, "15.25"),
            (0.001, "0.001"),
            (86400.0, "86400"),
            (1e6, "1e+06"),
            (0.00001, "1e-05"),
            (1.0 / 3.0, "0.333333"),
            (1234567.0, "1.23457e+06"),
        ] {
            assert_eq!(format_g(v), text, "{v}");
        }
    }

    #[test]
    fn values_print_as_pgbouncer_prints_them() {
        let list = toml::Value::Array(vec!["a".into(), "b".into()]);
        assert_eq!(format_value(&list), "a, b");
        assert_eq!(format_value(&toml::Value::Array(vec![])), "");
        assert_eq!(format_value(&true.into()), "1");
        assert_eq!(format_value(&false.into()), "0");
        assert_eq!(format_value(&toml::Value::Integer(20)), "20");
    }

    #[test]
    fn every_setting_is_listed_sorted_with_its_default() {
        let config = crate::config::Config::parse(
            "[pgmux]\nadmin_users = [\"a\", \"b\"]\nserver_check_delay = 0.5\n",
            std::path::Path::new("."),
        )
        .unwrap();
        let rows = rows(&config.general);
        let keys: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        let mut fields = field_names().to_vec();
        fields.sort();
        assert_eq!(keys, fields, "every field, none twice");
        let row = |key: &str| rows.iter().find(|r| r.key == key).unwrap();
        let shown = |key: &str| (row(key).value.as_str(), row(key).default.as_str());
        assert_eq!(shown("admin_users"), ("a, b", ""));
        assert_eq!(shown("server_check_delay"), ("0.5", "30"));
        assert_eq!(shown("default_pool_size"), ("20", "20"));
        assert_eq!(shown("query_wait_timeout"), ("120", "120"));
        assert_eq!(shown("log_stats"), ("1", "1"));
        assert_eq!(shown("server_reset_query_always"), ("0", "0"));
        // Unset: listed, empty.
        assert_eq!(shown("auth_user"), ("", ""));
        assert!(!row("listen_port").changeable && row("default_pool_size").changeable);
    }
}
