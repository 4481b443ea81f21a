//! set_config with Bind parameters (`SELECT set_config('app.user', $1, false)`, as
//! row-level-security setups send it through drivers): the settings are known once the Bind
//! gives the values, read from the Bind as PostgreSQL would.

use super::classify::{settings_of, Kind};
use std::sync::Arc;

/// Parameter types whose values, in text or binary format alike, are the string's bytes.
const TEXT_TYPES: [u32; 4] = [0, 25, 1043, 19];

/// A Parse's kinds, once its declared parameter types (`types`, the Parse body after the
/// query text) are known: set_config of a parameter declared as anything but text (whose
/// binary form pgmux would not read) is unreadable.
pub fn declared(mut kinds: Vec<Kind>, types: &[u8]) -> Vec<Kind> {
    for kind in kinds.iter_mut() {
        let Kind::SetBound(calls) = kind else {
            continue;
        };
        let oids = parameter_types(types);
        let texts = calls
            .iter()
            .flat_map(|c| [c.name.param(), c.value.param()])
            .flatten()
            .all(|n| {
                // $0 is no parameter: the server refuses it, and so does this.
                let declared = n.checked_sub(1).map(|i| oids.get(i).copied().unwrap_or(0));
                declared.is_some_and(|oid| TEXT_TYPES.contains(&oid))
            });
        if !texts {
            *kind = Kind::Unreadable("set_config of a parameter that is not text");
        }
    }
    kinds
}

fn parameter_types(types: &[u8]) -> Vec<u32> {
    let Some(count) = types.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return Vec::new();
    };
    types[2..]
        .chunks_exact(4)
        .take(usize::from(count))
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// A statement's kinds for one Bind of it (`rest`, the Bind body after the two names): each
/// set_config of parameters becomes the settings those values make.
pub fn resolve(kinds: Arc<[Kind]>, rest: &[u8]) -> Arc<[Kind]> {
    if !kinds.iter().any(|k| matches!(k, Kind::SetBound(_))) {
        return kinds;
    }
    let values = parameters(rest);
    kinds
        .iter()
        .map(|kind| match (kind, &values) {
            (Kind::SetBound(calls), Some(values)) => settings_of(calls, values),
            (Kind::SetBound(_), None) => Kind::Unreadable("a Bind pgmux cannot read"),
            (other, _) => other.clone(),
        })
        .collect()
}

/// A Bind's parameter values (None for NULL), from the body after the two names.
fn parameters(rest: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let u16_at = |at: usize| {
        rest.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
    };
    let formats = usize::from(u16_at(0)?);
    let mut at = 2 + 2 * formats;
    let count = usize::from(u16_at(at)?);
    at += 2;
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        let len = i32::from_be_bytes(rest.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        match usize::try_from(len) {
            Ok(len) => {
                values.push(Some(rest.get(at..at + len)?));
                at += len;
            }
            Err(_) => values.push(None),
        }
    }
    Some(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session_state::classify::{classify, Setting};

    fn bind_rest(values: &[Option<&str>]) -> Vec<u8> {
        let mut rest = vec![0, 0];
        rest.extend((values.len() as u16).to_be_bytes());
        for v in values {
            match v {
                Some(v) => {
                    rest.extend((v.len() as i32).to_be_bytes());
                    rest.extend(v.as_bytes());
                }
                None => rest.extend((-1i32).to_be_bytes()),
            }
        }
        rest.extend([0, 0]);
        rest
    }

    #[test]
    fn bound_values_become_settings() {
        let kinds = classify(b"SELECT set_config('app.user', $1::text, false)", true).unwrap();
        let kinds: Arc<[Kind]> = declared(kinds, &[0, 1, 0, 0, 0, 25]).into();
        let resolved = resolve(kinds.clone(), &bind_rest(&[Some("it's 42")]));
        assert_eq!(
            resolved[0],
            Kind::Set(vec![Setting {
                name: "app.user".into(),
                sql: "SELECT pg_catalog.set_config(E'app.user', E'it''s 42', false)".into()
            }])
        );
        let resolved = resolve(kinds.clone(), &bind_rest(&[None]));
        assert!(matches!(resolved[0], Kind::Unreadable(_)));
        let resolved = resolve(kinds, &[0, 0, 0]);
        assert!(matches!(resolved[0], Kind::Unreadable(_)));
        let role = classify(b"SELECT set_config($1, $2, false)", true).unwrap();
        let role: Arc<[Kind]> = role.into();
        assert_eq!(
            resolve(role, &bind_rest(&[Some("ROLE"), Some("x")]))[0],
            Kind::Holds
        );
    }

    #[test]
    fn parameter_zero_is_unreadable_not_a_panic() {
        let kinds = classify(b"SELECT set_config('a.b', $0, false)", true).unwrap();
        let kinds = declared(kinds, &[]);
        assert!(matches!(kinds[0], Kind::Unreadable(_)));
    }

    #[test]
    fn a_parameter_declared_other_than_text_is_unreadable() {
        let kinds = classify(b"SELECT set_config('a.b', $1, false)", true).unwrap();
        let kinds = declared(kinds, &[0, 1, 0, 0, 0, 23]);
        assert!(matches!(kinds[0], Kind::Unreadable(_)));
    }
}
