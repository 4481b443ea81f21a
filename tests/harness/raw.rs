//! A raw protocol client, for what libraries hide: pipelines sent before reading, Flush-only
//! exchanges, startup packets of other versions, abrupt disconnects mid-message.

use bytes::{BufMut, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

pub fn startup_packet(version: u32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u32(version);
    for (k, v) in params {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut p = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    p.extend_from_slice(&body);
    p
}

pub fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', format!("{sql}\0").as_bytes())
}

pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    msg(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
}

/// Bind with no parameters and text results.
pub fn bind(portal: &str, stmt: &str) -> Vec<u8> {
    msg(b'B', format!("{portal}\0{stmt}\0\0\0\0\0\0\0").as_bytes())
}

pub fn describe_statement(name: &str) -> Vec<u8> {
    msg(b'D', format!("S{name}\0").as_bytes())
}

pub fn execute(portal: &str) -> Vec<u8> {
    msg(b'E', format!("{portal}\0\0\0\0\0").as_bytes())
}

pub fn sync() -> Vec<u8> {
    msg(b'S', b"")
}

pub fn flush() -> Vec<u8> {
    msg(b'H', b"")
}

impl Raw {
    pub async fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Over a connection made elsewhere.
    pub fn over(stream: TcpStream) -> Raw {
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Connects and logs in with a trust-auth pgmux; returns after the first ReadyForQuery.
    pub async fn login(port: u16, user: &str, db: &str) -> Raw {
        let mut raw = Raw::connect(port).await;
        raw.send(&startup_packet(
            196_608,
            &[("user", user), ("database", db)],
        ))
        .await;
        let tags = raw.read_until(b'Z').await;
        assert_eq!(tags.first().map(|m| m.0), Some(b'R'), "login: {tags:?}");
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Next whole message (tag, body); None on EOF.
    pub async fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf.len() > len {
                    let m = self.buf.split_to(len + 1);
                    return Some((m[0], m[5..].to_vec()));
                }
            }
            let n =
                tokio::time::timeout(Duration::from_secs(20), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("read timed out")
                    .expect("read");
            if n == 0 {
                return None;
            }
        }
    }

    /// Reads a single byte (the answer to SSLRequest).
    pub async fn read_byte(&mut self) -> u8 {
        let mut b = [0u8; 1];
        self.stream.read_exact(&mut b).await.expect("read byte");
        b[0]
    }

    /// Messages up to and including the next one tagged `last`.
    pub async fn read_until(&mut self, last: u8) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let m = self
                .read()
                .await
                .unwrap_or_else(|| panic!("EOF before '{}': {out:?}", last as char));
            let done = m.0 == last;
            out.push(m);
            if done {
                return out;
            }
        }
    }
}

/// Tags of messages as a string, for compact assertions.
pub fn tags(msgs: &[(u8, Vec<u8>)]) -> String {
    msgs.iter().map(|m| m.0 as char).collect()
}

/// SQLSTATE field of an ErrorResponse body.
pub fn error_code(body: &[u8]) -> String {
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        if field == b'C' {
            return String::from_utf8_lossy(&tail[..end]).into_owned();
        }
        rest = &tail[(end + 1).min(tail.len())..];
    }
    String::new()
}
