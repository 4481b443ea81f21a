//! Framing: find whole messages (1-byte tag, 4-byte length) in a byte buffer.
//! Two steps, as everywhere in pgmux: check that a complete, bounded message is there, then let
//! the caller consume it. The length is checked against a maximum before anything is reserved.

use super::ProtocolError;

/// Largest message pgmux accepts from either side (PostgreSQL's own limit for most messages).
pub const MAX_MESSAGE_LEN: usize = 1 << 30;

/// The 5-byte header of a regular message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Length of the whole message including the tag byte.
    pub total: usize,
}

impl Header {
    /// Length of the body, after tag and length field.
    pub fn body_len(&self) -> usize {
        self.total - 5
    }
}

/// Reads the header at the start of `buf`, if five bytes are there.
pub fn header(buf: &[u8]) -> Result<Option<Header>, ProtocolError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if !(4..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(ProtocolError::BadLength {
            len,
            max: MAX_MESSAGE_LEN,
        });
    }
    Ok(Some(Header {
        tag: buf[0],
        total: len + 1,
    }))
}

/// A complete message at the start of `buf`: its header and body.
pub fn message(buf: &[u8]) -> Result<Option<(Header, &[u8])>, ProtocolError> {
    match header(buf)? {
        Some(h) if buf.len() >= h.total => Ok(Some((h, &buf[5..h.total]))),
        _ => Ok(None),
    }
}

/// Reads a NUL-terminated string from the front of `buf`, returning it and the rest.
pub fn cstr(buf: &[u8]) -> Option<(&str, &[u8])> {
    let end = buf.iter().position(|&b| b == 0)?;
    let s = std::str::from_utf8(&buf[..end]).ok()?;
    Some((s, &buf[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_buffers_are_incomplete() {
        assert_eq!(header(b"").unwrap(), None);
        assert_eq!(header(b"Z\0\0\0").unwrap(), None);
        assert_eq!(message(b"Z\0\0\0\x05").unwrap(), None);
    }

    #[test]
    fn whole_message_is_found() {
        let buf = b"Z\0\0\0\x05Irest";
        let (h, body) = message(buf).unwrap().unwrap();
        assert_eq!(h.tag, b'Z');
        assert_eq!(h.total, 6);
        assert_eq!(body, b"I");
    }

    #[test]
    fn lengths_below_four_or_above_max_are_rejected() {
        assert!(header(b"Q\0\0\0\x03").is_err());
        assert!(header(b"Q\x7f\xff\xff\xff").is_err());
        assert!(header(b"Q\0\0\0\x04").unwrap().is_some());
    }

    #[test]
    fn cstr_splits_at_nul() {
        assert_eq!(cstr(b"abc\0def"), Some(("abc", &b"def"[..])));
        assert_eq!(cstr(b"abc"), None);
    }
}
