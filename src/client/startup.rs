//! The startup phase: SSL/GSS negotiation (refused while TLS is off), the startup packet,
//! authentication by auth_type, the pool lookup and the welcome (ParameterStatus,
//! BackendKeyData, ReadyForQuery).

use super::auth;
use super::{ClientConn, ClientError, TlsSession};
use crate::admin::{self, Role};
use crate::auth::Secret;
use crate::cancel::CancelSlot;
use crate::config::{Config, PoolMode, SslMode};
use crate::pool::{server_credentials, Checkout, Pool, PoolClient, PoolSettings};
use crate::protocol::backend;
use crate::protocol::frame;
use crate::protocol::params::{trackable_extra, tracked_index, ParamSet, MAX_VALUE_LEN};
use crate::protocol::startup::{self, StartupPacket};
use crate::protocol::ProtocolError;
use crate::registry::{CapReached, ClientCaps, ClientEntry, NewClient};
use crate::server::ServerCredentials;
use crate::shared::Shared;
use crate::stats::Counter;
use crate::stream::Stream;
use crate::tls::ClientTls;
use bytes::{Buf, Bytes, BytesMut};
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// Startup parameters that are neither tracked nor refused.
const ALWAYS_IGNORED: [&str; 3] = ["user", "database", "extra_float_digits"];

/// Newest protocol minor version pgmux speaks.
const PROTOCOL_MINOR: u16 = 0;

/// What a successful login leads to.
pub enum Admitted {
    Pool(Box<Login>),
    Console {
        user: String,
        role: Role,
        /// The startup packet's application_name, for SHOW CLIENTS.
        application_name: String,
    },
    /// A new pgmux process asks, on the Unix socket, to take this one's place.
    Takeover,
}

/// A logged-in client, ready for its session. Its user and database are its entry's (the
/// client's names, as SHOW CLIENTS shows them): one copy per client.
pub struct Login {
    /// Counts this client in its pool until the session ends.
    pub pool: PoolClient,
    pub mode: PoolMode,
    pub params: ParamSet,
    pub cancel_key: (u32, u32),
    pub cancel: Arc<CancelSlot>,
    /// This client's entry for SHOW CLIENTS and KILL.
    pub entry: Arc<ClientEntry>,
}

impl ClientConn {
    async fn fill(&mut self) -> Result<(), ClientError> {
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        Ok(())
    }

    async fn read_startup_packet(&mut self) -> Result<StartupPacket, ClientError> {
        loop {
            if let Some(len) = startup::packet_len(&self.buf)? {
                if self.buf.len() >= len {
                    let packet = self.buf.split_to(len);
                    return Ok(startup::parse(&packet)?);
                }
            }
            self.fill().await?;
        }
    }

    /// Reads one message during login, expecting `tag`.
    pub(super) async fn read_login_message(&mut self, tag: u8) -> Result<Bytes, ClientError> {
        loop {
            if let Some(h) = frame::header(&self.buf)? {
                if h.total > startup::MAX_STARTUP_LEN {
                    return Err(ProtocolError::BadLength {
                        len: h.total,
                        max: startup::MAX_STARTUP_LEN,
                    }
                    .into());
                }
                if h.tag != tag {
                    return Err(ProtocolError::Unexpected {
                        expected: tag as char,
                        got: h.tag as char,
                    }
                    .into());
                }
                if self.buf.len() >= h.total {
                    let mut msg = self.buf.split_to(h.total);
                    msg.advance(5);
                    return Ok(msg.freeze());
                }
            }
            self.fill().await?;
        }
    }

    pub(super) async fn send(&mut self, out: &mut BytesMut) -> Result<(), ClientError> {
        self.stream.send(out).await?;
        out.clear();
        Ok(())
    }

    /// Whether the client opened with a TLS ClientHello rather than a startup packet
    /// (PostgreSQL 17's sslnegotiation=direct). A startup packet's first byte is the top of its
    /// length, always 0; a TLS handshake record starts with 0x16.
    async fn starts_with_tls(&self) -> Result<bool, ClientError> {
        let Some(tcp) = self.stream.tcp() else {
            return Ok(false);
        };
        let mut first = [0u8; 1];
        Ok(tcp.peek(&mut first).await? == 1 && first[0] == TLS_HANDSHAKE)
    }

    /// Runs the TLS handshake on the plain stream and keeps what the session needs of it.
    async fn accept_tls(&mut self, tls: &ClientTls, direct: bool) -> Result<(), ClientError> {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Detached) else {
            return Err(ClientError::Protocol(ProtocolError::MalformedStartup(
                "TLS requested twice",
            )));
        };
        let stream = tls
            .acceptor
            .accept(tcp)
            .await
            .map_err(ClientError::TlsHandshake)?;
        let session = stream.get_ref().1;
        if direct && session.alpn_protocol() != Some(crate::tls::ALPN_POSTGRESQL) {
            // PostgreSQL also insists on ALPN for direct TLS, so that other protocols' clients
            // cannot be led into speaking to it.
            return Err(ClientError::TlsHandshake(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "direct TLS without ALPN \"postgresql\"",
            )));
        }
        let peer_common_name = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| crate::tls::common_name(cert));
        let description = format!(
            "{}/{}",
            session
                .protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or("TLS"),
            session
                .negotiated_cipher_suite()
                .and_then(|c| c.suite().as_str())
                .unwrap_or("")
        );
        self.tls = Some(Box::new(TlsSession {
            end_point: tls.end_point.clone(),
            peer_common_name,
            description,
        }));
        self.stream = Stream::Accepted(Box::new(stream));
        Ok(())
    }
}

/// First byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// Runs the startup phase. Returns None for a connection that only carried a CancelRequest.
pub async fn login(
    conn: &mut ClientConn,
    shared: &Arc<Shared>,
    over_limit: bool,
) -> Result<Option<Admitted>, ClientError> {
    // PostgreSQL offers no TLS on its Unix socket; neither does pgmux.
    let tls = match conn.stream {
        Stream::Unix(_) => None,
        _ => shared.config().tls.client.clone(),
    };
    if let Some(tls) = &tls {
        if conn.buf.is_empty() && conn.starts_with_tls().await? {
            conn.accept_tls(tls, true).await?;
        }
    }
    let (minor, params) = loop {
        match conn.read_startup_packet().await? {
            StartupPacket::SslRequest if tls.is_some() && !conn.stream.is_tls() => {
                if !conn.buf.is_empty() {
                    // Bytes sent before the handshake would be taken as if encrypted.
                    return Err(ClientError::DataAfterSslRequest);
                }
                conn.stream.send(b"S").await?;
                if let Some(tls) = &tls {
                    conn.accept_tls(tls, false).await?;
                }
            }
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                conn.stream.send(b"N").await?;
            }
            StartupPacket::Cancel { pid, secret } => {
                // Delivered on its own task, so no login timeout can drop it half-way and
                // leave the client's link counted in flight.
                let shared = shared.clone();
                tokio::spawn(async move { cancel(&shared, pid, secret).await });
                return Ok(None);
            }
            StartupPacket::Takeover => {
                if let Stream::Unix(unix) = &conn.stream {
                    match crate::takeover::may_take_over(unix) {
                        Ok(()) => return Ok(Some(Admitted::Takeover)),
                        Err(why) => tracing::warn!("takeover refused: {why}"),
                    }
                }
                // Over TCP, or from another OS user, it is a code like any other that
                // PostgreSQL does not know.
                let code = startup::TAKEOVER_REQUEST;
                return Err(ProtocolError::UnsupportedVersion {
                    major: (code >> 16) as u16,
                    minor: code as u16,
                }
                .into());
            }
            StartupPacket::Startup { minor, params } => break (minor, params),
        }
    };
    if let Some(tls) = &tls {
        if tls.mode >= SslMode::Require && !conn.stream.is_tls() {
            return Err(ClientError::TlsRequired);
        }
    }
    let mut out = BytesMut::new();
    let options: Vec<&str> = params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("_pq_."))
        .collect();
    if minor > PROTOCOL_MINOR || !options.is_empty() {
        backend::negotiate_protocol_version(&mut out, PROTOCOL_MINOR, &options);
    }
    let user = StartupPacket::param(&params, "user")
        .filter(|u| !u.is_empty())
        .ok_or(ClientError::NoUser)?
        .to_owned();
    let database = StartupPacket::param(&params, "database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user)
        .to_owned();
    let config = shared.config();
    let general = &config.general;
    if crate::config::CONSOLE_DATABASES.contains(&database.as_str()) {
        // The console is exempt from max_client_conn, so an operator can always get in.
        let application_name = StartupPacket::param(&params, "application_name")
            .unwrap_or("")
            .chars()
            .take(MAX_VALUE_LEN)
            .collect();
        return console_login(conn, shared, user, &database, application_name, out)
            .await
            .map(Some);
    }
    if shared.shutdown.mode().is_some() {
        return Err(ClientError::ShuttingDown);
    }
    if over_limit {
        return Err(ClientError::TooManyClients);
    }
    // As PostgreSQL: authenticate first, so that only a logged-in client learns whether the
    // database exists.
    let login = authenticate_logged(conn, shared, &config, &user, &database, &mut out).await?;
    // After authentication, as PostgreSQL reads them: a bad parameter tells nothing before.
    let client_params = client_parameters(general, &params)?;
    let db = config
        .database(&database)
        .ok_or_else(|| ClientError::UnknownDatabase(database.clone()))?;
    if shared.control.is_disabled(&database) {
        return Err(ClientError::DatabaseDisabled(database));
    }
    backend::authentication_ok(&mut out);

    let server_user = db.user.clone().unwrap_or_else(|| user.clone());
    let caps = ClientCaps {
        per_database: config.max_db_client_connections(&database),
        per_user: config.max_user_client_connections(&user),
    };
    let new_client = NewClient {
        user: &user,
        database: &database,
        server_user: &server_user,
        addr: conn.peer.clone(),
        local_addr: conn.stream.local_address(general.listen_port),
        application_name: client_params.get("application_name").unwrap_or(""),
        connect_time: None,
    };
    let entry = shared
        .registry
        .add(new_client, caps)
        .map_err(|cap| match cap {
            CapReached::Database => ClientError::TooManyClientsOf("max_db_client_connections"),
            CapReached::User => ClientError::TooManyClientsOf("max_user_client_connections"),
        })?;
    // Until the login completes, a failure forgets the client again.
    let registered = shared.registry.listed(entry.id);
    let credentials = server_credentials(&config, db.password.as_deref(), &server_user);
    let pool = shared.pools.join(&database, &server_user, || {
        settings_of(&config, &database, &server_user)
    });
    if let Some(learned) = login.server_credentials() {
        if server_user == user && !matches!(credentials, ServerCredentials::Password(_)) {
            pool.set_credentials(learned);
        }
    }

    let welcome = match pool.welcome() {
        Some(w) => w,
        None => {
            // Learn the server's parameters from a real connection, which then stays pooled.
            match pool.checkout(Checkout::FailFast).await {
                Ok(server) => drop(server),
                Err(e) => {
                    if config.is_auto_database(&database) {
                        // A name that does not exist on the server must not leave a pool.
                        let unused = Arc::clone(&pool);
                        drop(pool);
                        shared.pools.remove_if_unused(&unused);
                    }
                    return Err(e.into());
                }
            }
            pool.welcome().unwrap_or_default()
        }
    };
    let mut params_out = ParamSet::default();
    for (name, value) in welcome.iter() {
        params_out.set(name, value);
    }
    check_values(&pool, &client_params, &params_out).await?;
    for (name, value) in welcome.iter() {
        let shown = client_params.get(name).unwrap_or(value);
        backend::parameter_status(&mut out, name, shown);
    }
    // The client's startup values win; the server's defaults fill in the rest.
    for (name, value) in client_params.iter() {
        params_out.set(name, value);
    }
    let (cancel_key, cancel) = shared.cancels.register(general.peer_id);
    backend::backend_key_data(&mut out, cancel_key.0, cancel_key.1);
    backend::ready_for_query(&mut out, b'I');
    if let Err(e) = conn.send(&mut out).await {
        shared.cancels.unregister(cancel_key);
        return Err(e);
    }
    pool.stats.add(Counter::ClientLogins, 1);
    // The session's own guard takes over.
    registered.pass_on();
    if let Some(name) = params_out.get("application_name") {
        name.clone_into(&mut crate::sync::lock(&entry.application_name));
    }
    if let Some(tls) = &conn.tls {
        let _ = entry.tls.set(tls.description.clone());
    }
    let mode = pool.settings().mode;
    Ok(Some(Admitted::Pool(Box::new(Login {
        pool,
        mode,
        params: params_out,
        cancel_key,
        cancel,
        entry,
    }))))
}

/// The parameters a client's startup packet sets that follow it from server to server: the
/// tracked ones, those named in track_extra_parameters, and both kinds inside `options`
/// (`-c name=value`), applied as if SET at startup. Anything else is refused unless
/// ignore_startup_parameters names it.
fn client_parameters(
    general: &crate::config::General,
    params: &[(String, String)],
) -> Result<ParamSet, ClientError> {
    let ignored = |name: &str| general.ignore_startup_parameters.iter().any(|i| i == name);
    let too_long = |name: &str, value: &str| {
        (value.len() > MAX_VALUE_LEN).then(|| ClientError::ParameterTooLong(name.to_owned()))
    };
    let carried = |name: &str| {
        tracked_index(name).is_some()
            || (trackable_extra(name)
                && general
                    .track_extra_parameters
                    .iter()
                    .any(|e| e.eq_ignore_ascii_case(name)))
    };
    let mut set = ParamSet::default();
    // `options` first: the packet's own parameters win over it, as in PostgreSQL.
    let options = params.iter().filter(|(k, _)| k == "options" && !ignored(k));
    for (_, value) in options {
        for (name, value) in crate::protocol::options::parse(value)? {
            if carried(&name) {
                if let Some(e) = too_long(&name, &value) {
                    return Err(e);
                }
                set.set(&name, &value);
            } else if !ignored(&name) {
                return Err(ClientError::UnsupportedParameter(format!(
                    "{name} (in options)"
                )));
            }
        }
    }
    for (key, value) in params {
        if key.starts_with("_pq_.")
            || key == "options"
            || ALWAYS_IGNORED.contains(&key.as_str())
            || ignored(key)
        {
            continue;
        }
        if !carried(key) {
            return Err(ClientError::UnsupportedParameter(key.clone()));
        }
        if let Some(e) = too_long(key, value) {
            return Err(e);
        }
        set.set(key, value);
    }
    Ok(set)
}

/// Refuses a login whose parameter values PostgreSQL would refuse (`-c DateStyle=bogus`), as
/// PostgreSQL refuses the login itself: the values that differ from the server's are set for
/// one statement only (set_config's is_local), on a server of the pool. Otherwise the first transaction
/// would fail to set them, and run with another client's. Most logins differ from the
/// server's defaults in application_name alone, which takes any value, and check nothing.
async fn check_values(
    pool: &Arc<Pool>,
    client: &ParamSet,
    server_defaults: &ParamSet,
) -> Result<(), ClientError> {
    let mut differing = client.clone();
    differing.forget("application_name");
    let Some(sql) = differing.check_statement(server_defaults) else {
        return Ok(());
    };
    if pool.accepted(&sql) {
        return Ok(());
    }
    let mut server = pool.checkout(Checkout::FailFast).await?;
    match server.run_own_query(&sql).await {
        Ok(()) => {
            pool.accept(sql);
            Ok(())
        }
        Err(crate::server::ServerError::Refused(fields)) => Err(ClientError::BadParameter(fields)),
        Err(e) => Err(e.into()),
    }
}

/// A CancelRequest: for one of this process's clients, or forwarded to the peer whose
/// client it is.
async fn cancel(shared: &Shared, pid: u32, secret: u32) {
    let config = shared.config();
    match crate::peers::route(&config, pid, secret) {
        crate::peers::Route::Here => {
            let (pid, secret) = crate::cancel::registered_key(config.general.peer_id, pid, secret);
            // During a takeover a client may still be in the old process.
            if !shared.cancels.cancel(pid, secret).await
                && !shared.handover.forward_cancel(pid, secret)
            {
                tracing::debug!("cancel request with an unknown key dropped");
            }
        }
        crate::peers::Route::Forward { peer, secret } => {
            shared.peer_pools.forward(&config, peer, pid, secret).await
        }
        crate::peers::Route::Drop => {
            tracing::warn!(
                pid,
                "cancel request passed between peers too often: dropped"
            )
        }
    }
}

/// What a client proved, and with which secret.
struct Proof {
    secret: Option<Secret>,
    /// The secret came from auth_query, not from the config.
    looked_up: bool,
    /// The ClientKey a SCRAM secret's owner proved.
    client_key: Option<[u8; 32]>,
}

impl Proof {
    /// How pgmux can log in to PostgreSQL as this client, from what the login taught it:
    /// SCRAM keys the client proved, or a secret auth_query found.
    fn server_credentials(&self) -> Option<ServerCredentials> {
        match (&self.secret, self.client_key) {
            (Some(Secret::Scram(keys)), Some(client_key)) => Some(ServerCredentials::ScramKeys {
                client_key,
                server_key: keys.server_key,
            }),
            (Some(secret), _) if self.looked_up => match ServerCredentials::from_secret(secret) {
                ServerCredentials::None => None,
                learned => Some(learned),
            },
            _ => None,
        }
    }
}

/// Authenticates by auth_type or auth_hba_file, with the user's secret from the config or
/// auth_query; logs a failure with user, database and peer address.
async fn authenticate_logged(
    conn: &mut ClientConn,
    shared: &Shared,
    config: &Config,
    user: &str,
    database: &str,
    out: &mut BytesMut,
) -> Result<Proof, ClientError> {
    let peer = conn.peer.clone();
    let failed = |e: &ClientError| {
        if e.is_authentication_failure() {
            tracing::info!(%user, %database, %peer, error = %e, "client authentication failed");
        }
    };
    let method = auth::method_for(config, conn, user, database).inspect_err(failed)?;
    let (secret, looked_up) = match config.secret_for(user) {
        Some(secret) => (Some(secret), false),
        None if method.needs_secret() => {
            let found = shared.auth_lookups.secret(config, database, user).await;
            let secret = found.map_err(|e| {
                tracing::error!(%user, %database, "cannot look up the user's secret: {e}");
                ClientError::AuthLookupFailed(user.to_owned())
            })?;
            (secret, true)
        }
        None => (None, false),
    };
    let proved = auth::prove(conn, shared, method, user, secret.as_ref(), out).await;
    let client_key = proved.inspect_err(|e| {
        failed(e);
        if looked_up {
            shared.auth_lookups.forget(user);
        }
    })?;
    Ok(Proof {
        secret,
        looked_up,
        client_key,
    })
}

/// Logs a user in to the admin console: authenticated like anyone, then admitted only if
/// listed in admin_users or stats_users.
async fn console_login(
    conn: &mut ClientConn,
    shared: &Shared,
    user: String,
    database: &str,
    application_name: String,
    mut out: BytesMut,
) -> Result<Admitted, ClientError> {
    let config = shared.config();
    authenticate_logged(conn, shared, &config, &user, database, &mut out).await?;
    let role =
        admin::role(shared, &user).ok_or_else(|| ClientError::NotConsoleUser(user.clone()))?;
    backend::authentication_ok(&mut out);
    admin::welcome(&mut out);
    let (pid, secret): (u32, u32) = rand::random();
    backend::backend_key_data(&mut out, pid, secret);
    backend::ready_for_query(&mut out, b'I');
    conn.send(&mut out).await?;
    Ok(Admitted::Console {
        user,
        role,
        application_name,
    })
}

/// The pool of (database, server user), created on first use.
pub(crate) fn pool_for(
    shared: &Shared,
    config: &Config,
    database: &str,
    server_user: &str,
) -> Arc<Pool> {
    shared.pools.get_or_create(database, server_user, || {
        settings_of(config, database, server_user)
    })
}

/// The settings of a pool of a database the caller found in `config`.
pub(super) fn settings_of(config: &Config, database: &str, server_user: &str) -> PoolSettings {
    PoolSettings::from_config(config, database, server_user)
        .expect("the database was looked up in the same config")
}
