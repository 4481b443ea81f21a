//! The untagged packets a client may send first: SSLRequest, GSSENCRequest, CancelRequest and the
//! StartupMessage, plus the NegotiateProtocolVersion reply for newer 3.x minors.

use super::ProtocolError;

/// PostgreSQL refuses startup packets longer than this; so do we.
pub const MAX_STARTUP_LEN: usize = 10_000;

pub const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
/// pgmux's own request code (1234.7000), from a new pgmux process asking this one to hand it
/// its sockets and clients. Honoured only on the Unix socket, from the same OS user; anywhere
/// else it is refused as PostgreSQL refuses any code it does not know.
pub const TAKEOVER_REQUEST: u32 = 80_878_424;

/// One packet of the startup phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: u32,
        secret: u32,
    },
    /// A new pgmux process asks for this one's sockets and clients (see [`TAKEOVER_REQUEST`]).
    Takeover,
    Startup {
        /// Minor version the client asked for (major is always 3).
        minor: u16,
        /// Parameters in the order the client sent them; `_pq_.` protocol options included.
        params: Vec<(String, String)>,
    },
}

impl StartupPacket {
    /// Value of a startup parameter, by exact name.
    pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Length of the startup packet at the front of `buf`, if its length field is there.
pub fn packet_len(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(ProtocolError::BadStartupLength(len));
    }
    Ok(Some(len))
}

/// Parses one whole startup packet (length field included).
pub fn parse(packet: &[u8]) -> Result<StartupPacket, ProtocolError> {
    if packet.len() < 8 {
        return Err(ProtocolError::BadStartupLength(packet.len()));
    }
    let code = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let rest = &packet[8..];
    match code {
        SSL_REQUEST if rest.is_empty() => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST if rest.is_empty() => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST if rest.len() == 8 => Ok(StartupPacket::Cancel {
            pid: u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]),
            secret: u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]),
        }),
        TAKEOVER_REQUEST if rest.is_empty() => Ok(StartupPacket::Takeover),
        SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST | TAKEOVER_REQUEST => Err(
            ProtocolError::MalformedStartup("request code with unexpected length"),
        ),
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(ProtocolError::UnsupportedVersion { major, minor });
            }
            Ok(StartupPacket::Startup {
                minor,
                params: parse_params(rest)?,
            })
        }
    }
}

fn parse_params(mut rest: &[u8]) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut params = Vec::new();
    loop {
        match rest {
            [0] => return Ok(params),
            [] => return Err(ProtocolError::MalformedStartup("missing terminator")),
            _ => {}
        }
        let (key, after_key) = super::frame::cstr(rest)
            .ok_or(ProtocolError::MalformedStartup("bad parameter name"))?;
        let (value, after_value) = super::frame::cstr(after_key)
            .ok_or(ProtocolError::MalformedStartup("bad parameter value"))?;
        if key.is_empty() {
            return Err(ProtocolError::MalformedStartup("empty parameter name"));
        }
        params.push((key.to_owned(), value.to_owned()));
        rest = after_value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u32, body: &[u8]) -> Vec<u8> {
        let mut p = ((8 + body.len()) as u32).to_be_bytes().to_vec();
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(body);
        p
    }

    #[test]
    fn ssl_gss_and_cancel_requests() {
        assert_eq!(
            parse(&packet(SSL_REQUEST, b"")).unwrap(),
            StartupPacket::SslRequest
        );
        assert_eq!(
            parse(&packet(GSSENC_REQUEST, b"")).unwrap(),
            StartupPacket::GssEncRequest
        );
        let body = [0, 0, 0, 7, 0, 0, 1, 0];
        assert_eq!(
            parse(&packet(CANCEL_REQUEST, &body)).unwrap(),
            StartupPacket::Cancel {
                pid: 7,
                secret: 256
            }
        );
        assert!(parse(&packet(CANCEL_REQUEST, &body[..4])).is_err());
        assert_eq!(
            parse(&packet(TAKEOVER_REQUEST, b"")).unwrap(),
            StartupPacket::Takeover
        );
        assert!(parse(&packet(TAKEOVER_REQUEST, &body)).is_err());
    }

    #[test]
    fn startup_with_params() {
        let p = parse(&packet(196_608, b"user\0bob\0database\0db\0\0")).unwrap();
        let StartupPacket::Startup { minor, params } = p else {
            panic!()
        };
        assert_eq!(minor, 0);
        assert_eq!(StartupPacket::param(&params, "user"), Some("bob"));
        assert_eq!(StartupPacket::param(&params, "database"), Some("db"));
    }

    #[test]
    fn newer_minor_is_parsed_other_major_refused() {
        let p = parse(&packet((3 << 16) | 2, b"user\0a\0\0")).unwrap();
        assert!(matches!(p, StartupPacket::Startup { minor: 2, .. }));
        assert_eq!(
            parse(&packet(2 << 16, b"\0")),
            Err(ProtocolError::UnsupportedVersion { major: 2, minor: 0 })
        );
    }

    #[test]
    fn malformed_params_are_refused() {
        assert!(parse(&packet(196_608, b"user\0bob\0")).is_err());
        assert!(parse(&packet(196_608, b"user\0bob")).is_err());
        assert!(parse(&packet(196_608, b"\0x\0\0")).is_err());
        assert!(parse(&packet(196_608, b"")).is_err());
    }

    #[test]
    fn packet_len_bounds() {
        assert_eq!(packet_len(b"\0\0").unwrap(), None);
        assert_eq!(packet_len(&[0, 0, 0, 8]).unwrap(), Some(8));
        assert!(packet_len(&[0, 0, 0, 7]).is_err());
        assert!(packet_len(&[0, 1, 0, 0]).is_err());
    }
}
