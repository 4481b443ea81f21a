use super::ServerError;
use crate::address::Address;
use crate::auth::md5::salted_reply;
use crate::auth::scram::{ClientCredentials, ClientExchange};
use crate::auth::AuthError;
use crate::prepared::{ServerStatements, StatementTracker};
use crate::protocol::backend::{self, parse_error_fields};
use crate::protocol::frame::{self, cstr};
use crate::protocol::params::ParamSet;
use crate::protocol::startup;
use crate::stream::Stream;
use crate::tls::ServerTls;
use crate::tracker::Tracker;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Where a pool's servers live and who they log in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTarget {
    /// Host name or address, or (starting with `/`) the directory of PostgreSQL's Unix socket.
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    /// server_tls_sslmode and its connector; None for disable.
    pub tls: Option<Arc<ServerTls>>,
}

impl ServerTarget {
    /// The directory of PostgreSQL's Unix socket, when `host` names one as libpq reads it.
    pub fn socket_dir(&self) -> Option<&std::path::Path> {
        crate::address::socket_dir(&self.host)
    }
}

impl ServerCredentials {
    /// What a stored secret logs in with: a plaintext password anywhere, an md5 hash where
    /// the server asks for md5; a SCRAM secret alone, nothing (it needs a proven ClientKey).
    pub fn from_secret(secret: &crate::auth::Secret) -> ServerCredentials {
        use crate::auth::Secret;
        match secret {
            Secret::Plain(p) => ServerCredentials::Password(p.clone()),
            Secret::Md5(h) => ServerCredentials::Md5(h.clone()),
            Secret::Scram(_) => ServerCredentials::None,
        }
    }
}

/// How pgmux logs in to PostgreSQL for one pool.
#[derive(Clone)]
pub enum ServerCredentials {
    /// No secret known; works only if the server asks for none.
    None,
    Password(String),
    /// PostgreSQL's md5 hash (`md5...`): enough for md5 auth, not for SCRAM.
    Md5(String),
    /// Keys of a SCRAM secret, the ClientKey recovered from a client's proof.
    ScramKeys {
        client_key: [u8; 32],
        server_key: [u8; 32],
    },
}

impl std::fmt::Debug for ServerCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            ServerCredentials::None => "none",
            ServerCredentials::Password(_) => "password",
            ServerCredentials::Md5(_) => "md5",
            ServerCredentials::ScramKeys { .. } => "scram-keys",
        };
        write!(f, "ServerCredentials::{kind}(<redacted>)")
    }
}

pub const READ_BUFFER: usize = 16 * 1024;

/// A row's values, as text; None for NULL.
pub type Row = Vec<Option<Vec<u8>>>;

/// The values of a DataRow body; None if it is malformed.
fn data_row(body: &[u8]) -> Option<Row> {
    let count = u16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    let mut rest = &body[2..];
    let mut row = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        match usize::try_from(len) {
            Ok(len) => {
                row.push(Some(rest.get(..len)?.to_vec()));
                rest = &rest[len..];
            }
            Err(_) => row.push(None),
        }
    }
    Some(row)
}

/// One logged-in connection to PostgreSQL.
pub struct ServerConn {
    pub stream: Stream,
    /// Bytes read from the server and not yet forwarded; owned here so it is reused.
    pub buf: BytesMut,
    /// The server's current values of the tracked parameters.
    pub params: ParamSet,
    /// Every parameter the server reported at login, in order (for clients' welcome).
    startup_params: Vec<(String, String)>,
    backend_pid: u32,
    backend_secret: u32,
    addr: Address,
    pub tracker: StatementTracker,
    /// Named statements prepared on this connection for clients (an LRU).
    pub statements: ServerStatements,
    /// Clients' settings and SQL prepared statements pgmux gave this connection.
    pub session: crate::session_state::Held,
    created: Instant,
    /// Wall-clock time of the connect, for SHOW SERVERS.
    connect_time: std::time::SystemTime,
    local_addr: Option<Address>,
    /// When it last went back to the pool idle.
    pub last_used: Instant,
    /// When server_lifetime (spread out) ends it; None = never.
    pub expires_at: Option<Instant>,
    /// The pool's configuration generation it was opened under.
    pub generation: u64,
    id: u64,
}

impl ServerConn {
    /// Connects and logs in, within `timeout`.
    pub async fn connect(
        target: &ServerTarget,
        credentials: &ServerCredentials,
        timeout: Duration,
        id: u64,
    ) -> Result<ServerConn, ServerError> {
        let label = format!("{}:{}", target.host, target.port);
        match tokio::time::timeout(timeout, Self::connect_inner(target, credentials, id)).await {
            Ok(r) => r,
            Err(_) => Err(ServerError::Timeout(label)),
        }
    }

    async fn connect_inner(
        target: &ServerTarget,
        credentials: &ServerCredentials,
        id: u64,
    ) -> Result<ServerConn, ServerError> {
        let (stream, addr, local_addr) = match target.socket_dir() {
            Some(dir) => {
                // PostgreSQL offers no TLS on its Unix socket, and libpq does not ask for it.
                let addr = Address::unix_socket(dir, target.port);
                let Address::Unix { path, .. } = &addr else {
                    unreachable!("unix_socket makes a Unix address")
                };
                let stream =
                    UnixStream::connect(path)
                        .await
                        .map_err(|source| ServerError::Connect {
                            addr: addr.to_string(),
                            source,
                        })?;
                (Stream::Unix(stream), addr, None)
            }
            None => {
                let stream = TcpStream::connect((target.host.as_str(), target.port))
                    .await
                    .map_err(|source| ServerError::Connect {
                        addr: format!("{}:{}", target.host, target.port),
                        source,
                    })?;
                stream.set_nodelay(true)?;
                let addr = stream.peer_addr()?.into();
                let local_addr = stream.local_addr().ok().map(Address::from);
                let stream = match &target.tls {
                    Some(tls) => negotiate_tls(stream, tls, &target.host).await?,
                    None => Stream::Plain(stream),
                };
                (stream, addr, local_addr)
            }
        };
        let mut conn = ServerConn::fresh(stream, addr, local_addr, id);
        let mut out = BytesMut::new();
        startup_message(&mut out, &target.user, &target.dbname);
        conn.send(&out).await?;
        conn.login(&target.user, credentials).await?;
        Ok(conn)
    }

    /// A connection over `stream`, not logged in yet.
    fn fresh(stream: Stream, addr: Address, local_addr: Option<Address>, id: u64) -> ServerConn {
        ServerConn {
            stream,
            buf: BytesMut::with_capacity(READ_BUFFER),
            params: ParamSet::default(),
            startup_params: Vec::new(),
            backend_pid: 0,
            backend_secret: 0,
            addr,
            tracker: Tracker::new(),
            statements: ServerStatements::default(),
            session: Default::default(),
            created: Instant::now(),
            connect_time: std::time::SystemTime::now(),
            local_addr,
            last_used: Instant::now(),
            expires_at: None,
            generation: 0,
            id,
        }
    }

    /// A connection over `stream`, taken as logged in, for tests of what runs over one.
    #[cfg(test)]
    pub fn over(stream: Stream) -> ServerConn {
        ServerConn::fresh(
            stream,
            std::net::SocketAddr::from(([127, 0, 0, 1], 5432)).into(),
            None,
            0,
        )
    }

    /// Reads one whole message, returning its tag and body.
    pub async fn read_message(&mut self) -> Result<(u8, Bytes), ServerError> {
        loop {
            if let Some(h) = frame::header(&self.buf).map_err(|e| self.unusable(e.into()))? {
                if self.buf.len() >= h.total {
                    let mut msg = self.buf.split_to(h.total);
                    msg.advance(5);
                    return Ok((h.tag, msg.freeze()));
                }
                self.buf.reserve(h.total - self.buf.len());
            }
            std::future::poll_fn(|cx| self.poll_read_more(cx, 0)).await?;
        }
    }

    /// Reads more of what the server sends into [`ServerConn::buf`], making room for `want`
    /// more bytes at least. A closed or failed connection is marked unusable.
    pub fn poll_read_more(
        &mut self,
        cx: &mut std::task::Context<'_>,
        want: usize,
    ) -> Poll<Result<(), ServerError>> {
        match self.stream.poll_fill(cx, &mut self.buf, want, READ_BUFFER) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(0)) => Poll::Ready(Err(self.unusable(ServerError::Closed))),
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.unusable(e.into()))),
        }
    }

    /// Writes some of `bytes` to the server; a failed write marks the connection unusable.
    pub fn poll_write(
        &mut self,
        cx: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> Poll<Result<usize, ServerError>> {
        match Pin::new(&mut self.stream).poll_write(cx, bytes) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(0)) => Poll::Ready(Err(self.unusable(ServerError::Closed))),
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.unusable(e.into()))),
        }
    }

    /// Pushes out what TLS still buffers; a failure marks the connection unusable.
    pub fn poll_flush(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), ServerError>> {
        match Pin::new(&mut self.stream).poll_flush(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.unusable(e.into()))),
        }
    }

    /// Writes all of `bytes` and flushes them; a failure marks the connection unusable.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), ServerError> {
        match self.stream.send(bytes).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.unusable(e.into())),
        }
    }

    /// The one place a failure on the connection marks it unusable: it is closed, never pooled.
    fn unusable(&mut self, error: ServerError) -> ServerError {
        self.tracker.poison();
        error
    }

    async fn send_password_message(&mut self, data: &[u8]) -> Result<(), ServerError> {
        let mut out = BytesMut::new();
        backend::put_message(&mut out, b'p', |b| b.put_slice(data));
        self.send(&out).await
    }

    async fn login(&mut self, user: &str, creds: &ServerCredentials) -> Result<(), ServerError> {
        let mut scram: Option<ClientExchange> = None;
        loop {
            let (tag, body) = self.read_message().await?;
            match tag {
                b'R' => {
                    if body.len() < 4 {
                        return Err(ServerError::Unexpected('R'));
                    }
                    let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    let data = &body[4..];
                    match code {
                        0 => {}
                        3 => {
                            let ServerCredentials::Password(p) = creds else {
                                return Err(AuthError::NoCredentials("cleartext").into());
                            };
                            let mut pw = p.as_bytes().to_vec();
                            pw.push(0);
                            self.send_password_message(&pw).await?;
                        }
                        5 => {
                            let salt: [u8; 4] = data
                                .get(..4)
                                .and_then(|s| s.try_into().ok())
                                .ok_or(ServerError::Unexpected('R'))?;
                            let stored = match creds {
                                ServerCredentials::Password(p) => {
                                    crate::auth::md5::stored_hash(p, user)
                                }
                                ServerCredentials::Md5(h) => h.clone(),
                                _ => return Err(AuthError::NoCredentials("md5").into()),
                            };
                            let mut reply = salted_reply(&stored, salt).into_bytes();
                            reply.push(0);
                            self.send_password_message(&reply).await?;
                        }
                        10 => {
                            if !sasl_mechanisms(data).any(|m| m == "SCRAM-SHA-256") {
                                return Err(ServerError::UnsupportedAuth(10));
                            }
                            let credentials = match creds {
                                ServerCredentials::Password(p) => {
                                    ClientCredentials::Password(p.clone())
                                }
                                ServerCredentials::ScramKeys {
                                    client_key,
                                    server_key,
                                } => ClientCredentials::Keys {
                                    client_key: *client_key,
                                    server_key: *server_key,
                                },
                                _ => return Err(AuthError::NoCredentials("SCRAM-SHA-256").into()),
                            };
                            let (exchange, first) =
                                ClientExchange::start(credentials, &crate::auth::random_nonce());
                            scram = Some(exchange);
                            let mut msg = BytesMut::new();
                            msg.put_slice(b"SCRAM-SHA-256\0");
                            msg.put_u32(first.len() as u32);
                            msg.put_slice(first.as_bytes());
                            self.send_password_message(&msg).await?;
                        }
                        11 => {
                            let exchange = scram.as_mut().ok_or(ServerError::Unexpected('R'))?;
                            let reply = exchange.respond(data)?;
                            self.send_password_message(reply.as_bytes()).await?;
                        }
                        12 => {
                            let exchange = scram.as_ref().ok_or(ServerError::Unexpected('R'))?;
                            exchange.verify(data)?;
                        }
                        other => return Err(ServerError::UnsupportedAuth(other)),
                    }
                }
                b'S' => {
                    if let Some((name, rest)) = cstr(&body) {
                        if let Some((value, _)) = cstr(rest) {
                            self.params.set(name, value);
                            self.startup_params
                                .push((name.to_owned(), value.to_owned()));
                        }
                    }
                }
                b'K' => {
                    if body.len() < 8 {
                        return Err(ServerError::Unexpected('K'));
                    }
                    self.backend_pid = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    self.backend_secret = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                }
                b'N' => {}
                b'E' => return Err(ServerError::Refused(parse_error_fields(&body))),
                b'Z' => return Ok(()),
                other => return Err(ServerError::Unexpected(other as char)),
            }
        }
    }

    /// Runs one of pgmux's own statements to completion (reset, checks), outside any client's
    /// traffic. The connection must be idle.
    pub async fn run_own_query(&mut self, sql: &str) -> Result<(), ServerError> {
        self.own_query_row(sql).await.map(|_| ())
    }

    /// Like [`ServerConn::run_own_query`], returning the last row it draws, if any, each value
    /// as text (None for NULL).
    pub async fn own_query_row(&mut self, sql: &str) -> Result<Option<Row>, ServerError> {
        let mut last_row = None;
        if !self.buf.is_empty() {
            // Unread bytes belong to someone else's reply: this connection cannot be trusted.
            return Err(self.unusable(ServerError::Unexpected('?')));
        }
        // Counted as owed until its ReadyForQuery, so a checkout dropped mid-check closes it.
        self.tracker.own_query();
        let mut out = BytesMut::new();
        backend::query(&mut out, sql);
        self.send(&out).await?;
        let mut failure = None;
        loop {
            let (tag, body) = self.read_message().await?;
            self.tracker.server_message(tag, body.first().copied());
            match tag {
                b'E' => failure = Some(parse_error_fields(&body)),
                b'D' => last_row = data_row(&body),
                // A reset query may drop every prepared statement.
                b'C' if crate::prepared::forgets_all_statements(&body) => {
                    self.statements.clear();
                }
                b'S' => {
                    if let Some((name, rest)) = cstr(&body) {
                        if let Some((value, _)) = cstr(rest) {
                            self.params.set(name, value);
                        }
                    }
                }
                b'Z' => {
                    if body.first() != Some(&b'I') {
                        return Err(self.unusable(ServerError::Unexpected('Z')));
                    }
                    return match failure {
                        Some(f) => Err(ServerError::Refused(f)),
                        None => Ok(last_row),
                    };
                }
                _ => {}
            }
        }
    }

    /// Whether an idle connection still looks usable: no bytes waiting and not closed. An idle
    /// server has nothing to say; anything it said (a FATAL before a restart) means it is gone.
    pub fn looks_alive(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.stream.idle_and_open()
    }

    /// pgmux's number for this connection, in logs and SHOW SERVERS.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// When it was opened.
    pub fn created(&self) -> Instant {
        self.created
    }

    /// Every parameter the server reported at login, in order.
    pub fn startup_params(&self) -> &[(String, String)] {
        &self.startup_params
    }

    /// Where a cancel for what runs on this connection goes.
    pub fn cancel_key(&self) -> crate::cancel::ServerKey {
        crate::cancel::ServerKey {
            addr: self.addr.clone(),
            pid: self.backend_pid,
            secret: self.backend_secret,
        }
    }

    /// What SHOW SERVERS shows of this connection.
    pub fn summary(&self) -> crate::registry::ServerSummary {
        crate::registry::ServerSummary {
            id: self.id,
            addr: self.addr.clone(),
            local_addr: self.local_addr.clone(),
            connect_time: self.connect_time,
            backend_pid: self.backend_pid,
            prepared_statements: self.statements.len(),
        }
    }

    /// Sends Terminate, best effort, so the server logs a clean disconnect.
    pub fn terminate(&mut self) {
        self.stream.try_send(b"X\0\0\0\x04");
    }
}

fn startup_message(out: &mut BytesMut, user: &str, database: &str) {
    let at = out.len();
    out.put_u32(0);
    out.put_u32(196_608);
    for (k, v) in [("user", user), ("database", database)] {
        out.put_slice(k.as_bytes());
        out.put_u8(0);
        out.put_slice(v.as_bytes());
        out.put_u8(0);
    }
    out.put_u8(0);
    let len = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn sasl_mechanisms(mut data: &[u8]) -> impl Iterator<Item = &str> {
    std::iter::from_fn(move || {
        let (m, rest) = cstr(data)?;
        data = rest;
        (!m.is_empty()).then_some(m)
    })
}

/// SSLRequest, then TLS if the server agrees; without it, plain where the mode allows.
async fn negotiate_tls(
    mut stream: TcpStream,
    tls: &ServerTls,
    host: &str,
) -> Result<Stream, ServerError> {
    let mut request = BytesMut::new();
    request.put_u32(8);
    request.put_u32(crate::protocol::startup::SSL_REQUEST);
    stream.write_all(&request).await?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|_| ServerError::Tls(format!("{host:?} is not a valid server name")))?;
            let tls_stream = tls
                .connector
                .connect(name, stream)
                .await
                .map_err(|e| ServerError::Tls(e.to_string()))?;
            Ok(Stream::Connected(Box::new(tls_stream)))
        }
        b'N' if tls.mode < crate::config::SslMode::Require => Ok(Stream::Plain(stream)),
        b'N' => Err(ServerError::Tls(
            "the server does not accept TLS, and server_tls_sslmode requires it".into(),
        )),
        // A server that fails before reading anything (starting up, out of slots) answers
        // with its error: pass it on as a refusal, with its own SQLSTATE.
        b'E' => {
            let mut len = [0u8; 4];
            stream.read_exact(&mut len).await?;
            let len = u32::from_be_bytes(len) as usize;
            if !(4..=startup::MAX_STARTUP_LEN).contains(&len) {
                return Err(ServerError::Unexpected('E'));
            }
            let mut body = vec![0u8; len - 4];
            stream.read_exact(&mut body).await?;
            Err(ServerError::Refused(parse_error_fields(&body)))
        }
        other => Err(ServerError::Unexpected(other as char)),
    }
}
