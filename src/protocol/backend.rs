//! Builders for the messages pgmux writes itself, to clients (backend messages) and the few it
//! writes to servers in its own name. Every builder goes through [`put_message`], which backfills
//! the length, so no builder computes one by hand.

use bytes::{BufMut, BytesMut};

/// Appends one message: `tag`, a length backfilled once `body` has written its bytes.
pub fn put_message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_u32(0);
    body(buf);
    let len = (buf.len() - at) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(buf: &mut BytesMut, s: &str) {
    buf.put_slice(s.as_bytes());
    buf.put_u8(0);
}

pub fn authentication_ok(buf: &mut BytesMut) {
    put_message(buf, b'R', |b| b.put_u32(0));
}

pub fn authentication_cleartext(buf: &mut BytesMut) {
    put_message(buf, b'R', |b| b.put_u32(3));
}

pub fn authentication_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    put_message(buf, b'R', |b| {
        b.put_u32(5);
        b.put_slice(&salt);
    });
}

pub fn authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    put_message(buf, b'R', |b| {
        b.put_u32(10);
        for m in mechanisms {
            put_cstr(b, m);
        }
        b.put_u8(0);
    });
}

pub fn authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    put_message(buf, b'R', |b| {
        b.put_u32(11);
        b.put_slice(data);
    });
}

pub fn authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    put_message(buf, b'R', |b| {
        b.put_u32(12);
        b.put_slice(data);
    });
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    put_message(buf, b'S', |b| {
        put_cstr(b, name);
        put_cstr(b, value);
    });
}

pub fn backend_key_data(buf: &mut BytesMut, pid: u32, secret: u32) {
    put_message(buf, b'K', |b| {
        b.put_u32(pid);
        b.put_u32(secret);
    });
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    put_message(buf, b'Z', |b| b.put_u8(status));
}

/// NegotiateProtocolVersion: the newest 3.x minor we speak and the `_pq_.` options we ignored.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: u16, unrecognized: &[&str]) {
    put_message(buf, b'v', |b| {
        b.put_u32(minor as u32);
        b.put_u32(unrecognized.len() as u32);
        for o in unrecognized {
            put_cstr(b, o);
        }
    });
}

/// Severity of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Notice,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
        }
    }
}

/// ErrorResponse (or NoticeResponse for `Severity::Notice`) with severity, SQLSTATE and message.
pub fn error_response(buf: &mut BytesMut, severity: Severity, code: &str, message: &str) {
    let tag = if severity == Severity::Notice {
        b'N'
    } else {
        b'E'
    };
    put_message(buf, tag, |b| {
        for field in [b'S', b'V'] {
            b.put_u8(field);
            put_cstr(b, severity.as_str());
        }
        b.put_u8(b'C');
        put_cstr(b, code);
        b.put_u8(b'M');
        put_cstr(b, message);
        b.put_u8(0);
    });
}

pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    put_message(buf, b'C', |b| put_cstr(b, tag));
}

pub fn empty_query_response(buf: &mut BytesMut) {
    put_message(buf, b'I', |_| {});
}

/// RowDescription with every column typed as text (OID 25), as PgBouncer's console sends text
/// columns; `types` gives each column's type OID.
pub fn row_description(buf: &mut BytesMut, columns: &[(&str, u32)]) {
    row_description_formats(buf, columns, |_| false);
}

/// RowDescription where `binary(i)` says whether column `i` is sent in binary format.
pub fn row_description_formats(
    buf: &mut BytesMut,
    columns: &[(&str, u32)],
    binary: impl Fn(usize) -> bool,
) {
    put_message(buf, b'T', |b| {
        b.put_u16(columns.len() as u16);
        for (i, (name, oid)) in columns.iter().enumerate() {
            put_cstr(b, name);
            b.put_u32(0);
            b.put_u16(0);
            b.put_u32(*oid);
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_u16(u16::from(binary(i)));
        }
    });
}

/// DataRow of raw values (text or binary as described); `None` is SQL NULL.
pub fn data_row_bytes<'a>(buf: &mut BytesMut, values: impl IntoIterator<Item = Option<&'a [u8]>>) {
    put_message(buf, b'D', |b| {
        let count_at = b.len();
        b.put_u16(0);
        let mut count: u16 = 0;
        for v in values {
            count += 1;
            match v {
                None => b.put_i32(-1),
                Some(bytes) => {
                    b.put_u32(bytes.len() as u32);
                    b.put_slice(bytes);
                }
            }
        }
        b[count_at..count_at + 2].copy_from_slice(&count.to_be_bytes());
    });
}

/// DataRow of text values; `None` is SQL NULL.
pub fn data_row<'a>(buf: &mut BytesMut, values: impl IntoIterator<Item = Option<&'a str>>) {
    data_row_bytes(buf, values.into_iter().map(|v| v.map(str::as_bytes)));
}

/// A simple Query, as pgmux sends its own statements (parameter restores, reset, checks).
pub fn query(buf: &mut BytesMut, sql: &str) {
    put_message(buf, b'Q', |b| put_cstr(b, sql));
}

/// Fields of an ErrorResponse or NoticeResponse body that pgmux reads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
}

/// Parses the body of an ErrorResponse or NoticeResponse; unknown fields are skipped.
pub fn parse_error_fields(mut body: &[u8]) -> ErrorFields {
    let mut out = ErrorFields::default();
    while let Some((&field, rest)) = body.split_first() {
        if field == 0 {
            break;
        }
        let Some((value, after)) = super::frame::cstr(rest) else {
            break;
        };
        match field {
            b'V' => out.severity = value.to_owned(),
            b'S' if out.severity.is_empty() => out.severity = value.to_owned(),
            b'C' => out.code = value.to_owned(),
            b'M' => out.message = value.to_owned(),
            _ => {}
        }
        body = after;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame;

    #[test]
    fn lengths_are_backfilled() {
        let mut buf = BytesMut::new();
        ready_for_query(&mut buf, b'I');
        assert_eq!(&buf[..], b"Z\0\0\0\x05I");
        parameter_status(&mut buf, "a", "b");
        let (h, body) = frame::message(&buf[6..]).unwrap().unwrap();
        assert_eq!(h.tag, b'S');
        assert_eq!(body, b"a\0b\0");
    }

    #[test]
    fn error_round_trips() {
        let mut buf = BytesMut::new();
        error_response(&mut buf, Severity::Fatal, "28P01", "bad password");
        let (h, body) = frame::message(&buf).unwrap().unwrap();
        assert_eq!(h.tag, b'E');
        let f = parse_error_fields(body);
        assert_eq!(f.severity, "FATAL");
        assert_eq!(f.code, "28P01");
        assert_eq!(f.message, "bad password");
    }

    #[test]
    fn data_row_counts_and_nulls() {
        let mut buf = BytesMut::new();
        data_row(&mut buf, [Some("x"), None]);
        assert_eq!(&buf[..], b"D\0\0\0\x0f\0\x02\0\0\0\x01x\xff\xff\xff\xff");
    }
}
