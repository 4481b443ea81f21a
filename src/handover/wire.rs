//! The takeover protocol's messages and their bytes: a tag, a 4-byte length of the body, the
//! body. Descriptors travel beside the bytes (SCM_RIGHTS, see `channel.rs`); a message says how
//! many it carries. Pure: no sockets, so every message is tested by a round trip.

use crate::server::ServerCredentials;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The version of this format. Two processes speak only the same one: a takeover between
/// versions that differ is refused, and the running process keeps serving.
pub const FORMAT: u32 = 1;

/// The largest message the new process accepts. A client's state is at most its statements'
/// texts (bounded by max_prepared_statements and the relay's held limit) and its buffered
/// bytes; this is far above any of it and still bounds what a broken peer can make us hold.
/// A client whose state is larger stays with the old process.
pub const MAX_MESSAGE: usize = 256 << 20;

/// The largest message the old process accepts: the new process sends only small ones.
pub const MAX_TO_OLD: usize = 64 * 1024;

/// Header: tag and length.
const HEADER: usize = 5;

/// A listening socket handed over, in the order of its descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerKind {
    Tcp,
    /// The Unix socket, with the path of its file, and whether the process made the file
    /// (and removes it at exit) or was given the socket by systemd, whose file it stays.
    Unix {
        path: String,
        owned: bool,
    },
    /// The Prometheus endpoint's.
    Metrics,
}

/// What a client takes with it to the new process. Its socket travels beside it.
#[derive(Clone)]
pub struct MovedClient {
    pub user: String,
    pub database: String,
    /// When it connected, in microseconds since the Unix epoch (SHOW CLIENTS' connect_time).
    pub connect_time_us: u64,
    /// The cancel key the client was given at login, kept so its cancels still land.
    pub cancel_key: (u32, u32),
    /// Its parameters (startup values and what it SET since), as a session reports them.
    pub params: Vec<(String, String)>,
    /// How its pool logs in to PostgreSQL, when a login taught it (SCRAM keys a client
    /// proved, a secret auth_query found). Never logged.
    pub credentials: ServerCredentials,
    /// Its named protocol-level statements: its own name and the Parse body after it.
    pub statements: Vec<(Bytes, Bytes)>,
    /// Its session settings (folded name, the statement that sets it).
    pub settings: Vec<(String, String)>,
    /// Its SQL prepared statements (folded name, the PREPARE statement).
    pub prepared: Vec<(String, String)>,
    /// Bytes the client had sent that the old process read and did not act on yet.
    pub buffered: Bytes,
}

impl Default for MovedClient {
    fn default() -> Self {
        MovedClient {
            user: String::new(),
            database: String::new(),
            connect_time_us: 0,
            cancel_key: (0, 0),
            params: Vec::new(),
            credentials: ServerCredentials::None,
            statements: Vec::new(),
            settings: Vec::new(),
            prepared: Vec::new(),
            buffered: Bytes::new(),
        }
    }
}

/// Who the client is, and how much it carries: never its secrets or its bytes.
impl std::fmt::Debug for MovedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MovedClient")
            .field("user", &self.user)
            .field("database", &self.database)
            .field("statements", &self.statements.len())
            .field("settings", &self.settings.len())
            .field("buffered", &self.buffered.len())
            .finish_non_exhaustive()
    }
}

/// One message of the takeover protocol.
#[derive(Debug, Clone)]
pub enum Message {
    /// New to old, first: the format it speaks, its version, and how long clients in a
    /// transaction may take to reach its end before they are closed.
    Hello {
        format: u32,
        version: String,
        deadline_ms: u64,
    },
    /// Old to new: the takeover may go on.
    Welcome {
        format: u32,
        version: String,
        pid: u32,
    },
    /// Either way: no takeover, and why.
    Refused { reason: String },
    /// Old to new: the listening sockets, one descriptor each.
    Listeners(Vec<ListenerKind>),
    /// New to old: it accepts on them now; the old process stops accepting.
    Listening,
    /// Old to new: a client, with its socket.
    Client { id: u64, client: Box<MovedClient> },
    /// New to old: the client can be served there (None), or was refused and stays (why).
    /// The new process does not touch the client's socket yet.
    Ack { id: u64, refused: Option<String> },
    /// Old to new: the client acknowledged is the new process's from now on; the old one
    /// has let go of it. Until this arrives the old process may still take it back.
    Commit { id: u64 },
    /// New to old: a CancelRequest for a key the new process does not hold (its client is
    /// still in a transaction in the old one).
    Cancel { pid: u32, secret: u32 },
    /// Old to new: it holds no client any more and will exit.
    Done,
    /// New to old: it has told the service manager it is the main process now.
    Finished,
}

/// A message that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("takeover message of {0} bytes is over the limit")]
    TooLong(usize),
    #[error("unknown takeover message {0:?}")]
    UnknownTag(char),
    #[error("truncated takeover message {0:?}")]
    Truncated(char),
    #[error("takeover message {0:?} has {1} bytes too many")]
    TrailingBytes(char, usize),
    #[error("takeover message {0:?} holds text that is not UTF-8")]
    NotUtf8(char),
    #[error("takeover message {0:?} holds an unknown value {1}")]
    UnknownValue(char, u8),
}

impl Message {
    /// How many descriptors travel with this message.
    pub fn descriptors(&self) -> usize {
        match self {
            Message::Listeners(kinds) => kinds.len(),
            Message::Client { .. } => 1,
            _ => 0,
        }
    }

    /// Its name, for logs: what a message holds is never logged.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "Hello",
            Message::Welcome { .. } => "Welcome",
            Message::Refused { .. } => "Refused",
            Message::Listeners(_) => "Listeners",
            Message::Listening => "Listening",
            Message::Client { .. } => "Client",
            Message::Ack { .. } => "Ack",
            Message::Commit { .. } => "Commit",
            Message::Cancel { .. } => "Cancel",
            Message::Done => "Done",
            Message::Finished => "Finished",
        }
    }

    fn tag(&self) -> u8 {
        match self {
            Message::Hello { .. } => b'H',
            Message::Welcome { .. } => b'W',
            Message::Refused { .. } => b'R',
            Message::Listeners(_) => b'L',
            Message::Listening => b'G',
            Message::Client { .. } => b'C',
            Message::Ack { .. } => b'A',
            Message::Commit { .. } => b'M',
            Message::Cancel { .. } => b'K',
            Message::Done => b'D',
            Message::Finished => b'F',
        }
    }

    /// Appends the message, header included.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u8(self.tag());
        out.put_u32(0);
        match self {
            Message::Hello {
                format,
                version,
                deadline_ms,
            } => {
                out.put_u32(*format);
                put_str(out, version);
                out.put_u64(*deadline_ms);
            }
            Message::Welcome {
                format,
                version,
                pid,
            } => {
                out.put_u32(*format);
                put_str(out, version);
                out.put_u32(*pid);
            }
            Message::Refused { reason } => put_str(out, reason),
            Message::Listeners(kinds) => {
                out.put_u32(kinds.len() as u32);
                for kind in kinds {
                    match kind {
                        ListenerKind::Tcp => out.put_u8(0),
                        ListenerKind::Unix { path, owned } => {
                            out.put_u8(1);
                            put_str(out, path);
                            out.put_u8(u8::from(*owned));
                        }
                        ListenerKind::Metrics => out.put_u8(2),
                    }
                }
            }
            Message::Listening | Message::Done | Message::Finished => {}
            Message::Client { id, client } => {
                out.put_u64(*id);
                encode_client(client, out);
            }
            Message::Ack { id, refused } => {
                out.put_u64(*id);
                match refused {
                    None => out.put_u8(0),
                    Some(reason) => {
                        out.put_u8(1);
                        put_str(out, reason);
                    }
                }
            }
            Message::Commit { id } => out.put_u64(*id),
            Message::Cancel { pid, secret } => {
                out.put_u32(*pid);
                out.put_u32(*secret);
            }
        }
        let body = (out.len() - start - HEADER) as u32;
        out[start + 1..start + HEADER].copy_from_slice(&body.to_be_bytes());
    }

    /// Bytes of the encoded message.
    pub fn encoded_len(&self) -> usize {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.len()
    }

    /// The whole message at the front of `buf`, taken off it; None while it is not all there.
    /// A message over `limit` bytes is an error.
    pub fn decode(buf: &mut BytesMut, limit: usize) -> Result<Option<Message>, WireError> {
        if buf.len() < HEADER {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > limit {
            return Err(WireError::TooLong(len));
        }
        if buf.len() < HEADER + len {
            return Ok(None);
        }
        let tag = buf[0];
        buf.advance(HEADER);
        let body = buf.split_to(len).freeze();
        let mut r = Reader {
            tag: tag as char,
            body,
        };
        let message = match tag {
            b'H' => Message::Hello {
                format: r.u32()?,
                version: r.string()?,
                deadline_ms: r.u64()?,
            },
            b'W' => Message::Welcome {
                format: r.u32()?,
                version: r.string()?,
                pid: r.u32()?,
            },
            b'R' => Message::Refused {
                reason: r.string()?,
            },
            b'L' => {
                let count = r.u32()?;
                let mut kinds = Vec::new();
                for _ in 0..count {
                    kinds.push(match r.u8()? {
                        0 => ListenerKind::Tcp,
                        1 => ListenerKind::Unix {
                            path: r.string()?,
                            owned: match r.u8()? {
                                0 => false,
                                1 => true,
                                other => return Err(WireError::UnknownValue(r.tag, other)),
                            },
                        },
                        2 => ListenerKind::Metrics,
                        other => return Err(WireError::UnknownValue(r.tag, other)),
                    });
                }
                Message::Listeners(kinds)
            }
            b'G' => Message::Listening,
            b'C' => Message::Client {
                id: r.u64()?,
                client: Box::new(decode_client(&mut r)?),
            },
            b'A' => Message::Ack {
                id: r.u64()?,
                refused: match r.u8()? {
                    0 => None,
                    1 => Some(r.string()?),
                    other => return Err(WireError::UnknownValue(r.tag, other)),
                },
            },
            b'M' => Message::Commit { id: r.u64()? },
            b'K' => Message::Cancel {
                pid: r.u32()?,
                secret: r.u32()?,
            },
            b'D' => Message::Done,
            b'F' => Message::Finished,
            other => return Err(WireError::UnknownTag(other as char)),
        };
        match r.body.len() {
            0 => Ok(Some(message)),
            n => Err(WireError::TrailingBytes(r.tag, n)),
        }
    }
}

fn encode_client(c: &MovedClient, out: &mut BytesMut) {
    put_str(out, &c.user);
    put_str(out, &c.database);
    out.put_u64(c.connect_time_us);
    out.put_u32(c.cancel_key.0);
    out.put_u32(c.cancel_key.1);
    put_pairs(out, &c.params);
    match &c.credentials {
        ServerCredentials::None => out.put_u8(0),
        ServerCredentials::Password(password) => {
            out.put_u8(1);
            put_str(out, password);
        }
        ServerCredentials::Md5(hash) => {
            out.put_u8(2);
            put_str(out, hash);
        }
        ServerCredentials::ScramKeys {
            client_key,
            server_key,
        } => {
            out.put_u8(3);
            out.put_slice(client_key);
            out.put_slice(server_key);
        }
    }
    out.put_u32(c.statements.len() as u32);
    for (name, body) in &c.statements {
        put_bytes(out, name);
        put_bytes(out, body);
    }
    put_pairs(out, &c.settings);
    put_pairs(out, &c.prepared);
    put_bytes(out, &c.buffered);
}

fn decode_client(r: &mut Reader) -> Result<MovedClient, WireError> {
    let user = r.string()?;
    let database = r.string()?;
    let connect_time_us = r.u64()?;
    let cancel_key = (r.u32()?, r.u32()?);
    let params = r.pairs()?;
    let credentials = match r.u8()? {
        0 => ServerCredentials::None,
        1 => ServerCredentials::Password(r.string()?),
        2 => ServerCredentials::Md5(r.string()?),
        3 => ServerCredentials::ScramKeys {
            client_key: r.key()?,
            server_key: r.key()?,
        },
        other => return Err(WireError::UnknownValue(r.tag, other)),
    };
    let count = r.u32()?;
    let mut statements = Vec::new();
    for _ in 0..count {
        statements.push((r.bytes()?, r.bytes()?));
    }
    Ok(MovedClient {
        user,
        database,
        connect_time_us,
        cancel_key,
        params,
        credentials,
        statements,
        settings: r.pairs()?,
        prepared: r.pairs()?,
        buffered: r.bytes()?,
    })
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

fn put_str(out: &mut BytesMut, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_pairs(out: &mut BytesMut, pairs: &[(String, String)]) {
    out.put_u32(pairs.len() as u32);
    for (name, value) in pairs {
        put_str(out, name);
        put_str(out, value);
    }
}

/// Reads a body, every read checked against what is left.
struct Reader {
    tag: char,
    body: Bytes,
}

impl Reader {
    fn need(&self, n: usize) -> Result<(), WireError> {
        match self.body.len() >= n {
            true => Ok(()),
            false => Err(WireError::Truncated(self.tag)),
        }
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        self.need(1)?;
        Ok(self.body.get_u8())
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        self.need(4)?;
        Ok(self.body.get_u32())
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        self.need(8)?;
        Ok(self.body.get_u64())
    }

    fn key(&mut self) -> Result<[u8; 32], WireError> {
        self.need(32)?;
        let mut key = [0u8; 32];
        self.body.copy_to_slice(&mut key);
        Ok(key)
    }

    /// Copied out: a slice would keep the whole read buffer it came in alive for as long as
    /// the client keeps it.
    fn bytes(&mut self) -> Result<Bytes, WireError> {
        let len = self.u32()? as usize;
        self.need(len)?;
        Ok(Bytes::copy_from_slice(&self.body.split_to(len)))
    }

    fn string(&mut self) -> Result<String, WireError> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::NotUtf8(self.tag))
    }

    fn pairs(&mut self) -> Result<Vec<(String, String)>, WireError> {
        let count = self.u32()?;
        let mut pairs = Vec::new();
        for _ in 0..count {
            pairs.push((self.string()?, self.string()?));
        }
        Ok(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> MovedClient {
        MovedClient {
            user: "app".into(),
            database: "shop".into(),
            connect_time_us: 1_700_000_000_123_456,
            cancel_key: (0x0102_0304, 0xdead_beef),
            params: vec![("application_name".into(), "worker 7".into())],
            credentials: ServerCredentials::ScramKeys {
                client_key: [1; 32],
                server_key: [2; 32],
            },
            statements: vec![(
                Bytes::from_static(b"S_1"),
                Bytes::from_static(b"select $1\0\0\x01\0\0\0\x17"),
            )],
            settings: vec![("work_mem".into(), "SET work_mem = '8MB'".into())],
            prepared: vec![("q".into(), "PREPARE q AS SELECT 1".into())],
            buffered: Bytes::from_static(b"Q\0\0\0\x0dselect 1\0"),
        }
    }

    fn every_message() -> Vec<Message> {
        vec![
            Message::Hello {
                format: FORMAT,
                version: "0.1.0".into(),
                deadline_ms: 30_000,
            },
            Message::Welcome {
                format: FORMAT,
                version: "0.1.0".into(),
                pid: 4242,
            },
            Message::Refused {
                reason: "no".into(),
            },
            Message::Listeners(vec![
                ListenerKind::Tcp,
                ListenerKind::Unix {
                    path: "/run/pgmux/.s.PGSQL.6432".into(),
                    owned: true,
                },
                ListenerKind::Unix {
                    path: "/run/pgmux/.s.PGSQL.6433".into(),
                    owned: false,
                },
                ListenerKind::Metrics,
            ]),
            Message::Listening,
            Message::Client {
                id: 9,
                client: Box::new(client()),
            },
            Message::Client {
                id: 10,
                client: Box::default(),
            },
            Message::Client {
                id: 11,
                client: Box::new(MovedClient {
                    credentials: ServerCredentials::Md5("md5abc".into()),
                    ..client()
                }),
            },
            Message::Client {
                id: 12,
                client: Box::new(MovedClient {
                    credentials: ServerCredentials::Password("pw".into()),
                    ..client()
                }),
            },
            Message::Ack {
                id: 9,
                refused: None,
            },
            Message::Ack {
                id: 10,
                refused: Some("no such database".into()),
            },
            Message::Commit { id: 9 },
            Message::Cancel { pid: 1, secret: 2 },
            Message::Done,
            Message::Finished,
        ]
    }

    fn encoded(messages: &[Message]) -> BytesMut {
        let mut all = BytesMut::new();
        for m in messages {
            m.encode(&mut all);
        }
        all
    }

    #[test]
    fn every_message_comes_back_as_it_went_even_a_byte_at_a_time() {
        let all = encoded(&every_message());
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        for byte in all.iter() {
            buf.put_u8(*byte);
            while let Some(m) = Message::decode(&mut buf, MAX_MESSAGE).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got.len(), every_message().len());
        assert_eq!(
            encoded(&got),
            all,
            "each message reads back as it was written"
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn broken_messages_are_errors_not_panics() {
        for m in every_message() {
            let mut whole = BytesMut::new();
            m.encode(&mut whole);
            let body = whole.len() - HEADER;
            // Each body cut short, but with a header that claims the shorter length.
            for cut in 0..body {
                let mut short = BytesMut::from(&whole[..HEADER + cut]);
                short[1..HEADER].copy_from_slice(&(cut as u32).to_be_bytes());
                let r = Message::decode(&mut short, MAX_MESSAGE);
                assert!(r.is_err(), "{m:?} cut to {cut} bytes read as {r:?}");
            }
            let mut long = whole.clone();
            long.put_u8(0);
            long[1..HEADER].copy_from_slice(&(body as u32 + 1).to_be_bytes());
            let r = Message::decode(&mut long, MAX_MESSAGE);
            assert!(
                matches!(&r, Err(WireError::TrailingBytes(t, 1)) if *t == whole[0] as char),
                "{r:?}"
            );
            if whole.len() > HEADER + 1 {
                let mut over = whole.clone();
                let r = Message::decode(&mut over, body - 1);
                assert!(matches!(r, Err(WireError::TooLong(_))), "{r:?}");
            }
        }
        let mut unknown = BytesMut::from(&b"Z\0\0\0\0"[..]);
        let r = Message::decode(&mut unknown, MAX_MESSAGE);
        assert!(matches!(r, Err(WireError::UnknownTag('Z'))), "{r:?}");
        let mut bad_ack = BytesMut::from(&b"A\0\0\0\x09\0\0\0\0\0\0\0\x01\x07"[..]);
        let r = Message::decode(&mut bad_ack, MAX_MESSAGE);
        assert!(matches!(r, Err(WireError::UnknownValue('A', 7))), "{r:?}");
    }

    #[test]
    fn a_client_shows_no_secret_and_no_bytes_in_logs() {
        let shown = format!(
            "{:?}",
            Message::Client {
                id: 1,
                client: Box::new(client())
            }
        );
        assert!(shown.contains("shop"), "{shown}");
        assert!(
            !shown.contains("select 1") && !shown.contains("[1, 1"),
            "{shown}"
        );
    }
}
