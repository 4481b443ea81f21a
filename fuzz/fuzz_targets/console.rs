//! The admin console's statement parser (`admin::parse`, private to `pgmux::admin`), reached
//! through the console's public entry point `pgmux::admin::serve`, which serves one logged-in
//! console user over a socket: the fuzz input becomes the messages that user sends over a
//! loopback TCP connection, then Terminate. Every statement goes through the parser and then
//! runs (with a fresh `Shared` per input, so nothing carries over from one input to the next).
//!
//! Input: one flags byte (bits 0-1: 0 a simple Query, 1 the same statement through the
//! extended protocol (Parse, Describe, Bind, Describe, Execute, Sync), 2 or 3 raw messages;
//! bit 2: the user is an admin rather than a stats user), then:
//! - simple and extended: the statement, as UTF-8 (lossy; NUL bytes become spaces);
//! - raw: messages as [tag, body length (one byte), body], up to the first Terminate.
//!
//! A console error (a malformed message) ends that connection and the next input opens a new
//! one; only a panic (or a hang) is a bug.
#![no_main]

use bytes::BufMut;
use libfuzzer_sys::fuzz_target;
use pgmux::admin::{self, Role};
use pgmux::connection::ClientConn;
use pgmux::config::Config;
use pgmux::Shared;
use std::cell::RefCell;
use std::net::{TcpListener, TcpStream};
use tokio::io::AsyncWriteExt;
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// The longest statement the console accepts is 64 KiB; stay well inside it.
const MAX_INPUT: usize = 32 * 1024;

const CONFIG: &str = "[databases.app]\nhost = \"127.0.0.1\"\nport = 1\ndbname = \"app\"\n";

struct Connection {
    /// The console user's end: the fuzz input is written to it, and what pgmux sends is read
    /// off it and thrown away while the console runs.
    client: tokio::net::TcpStream,
    conn: ClientConn,
}

struct State {
    rt: tokio::runtime::Runtime,
    listener: TcpListener,
    config: Config,
    connection: Option<Connection>,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

impl State {
    fn new() -> State {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let config = Config::parse(CONFIG, std::path::Path::new("."))
            .unwrap_or_else(|problems| panic!("fuzz config does not validate: {problems:?}"));
        State {
            rt,
            listener,
            config,
            connection: None,
        }
    }

    fn connect(&mut self) {
        if self.connection.is_none() {
            let client = TcpStream::connect(self.listener.local_addr().unwrap()).unwrap();
            client.set_nodelay(true).unwrap();
            client.set_nonblocking(true).unwrap();
            let (server, peer) = self.listener.accept().unwrap();
            server.set_nonblocking(true).unwrap();
            let _entered = self.rt.enter();
            self.connection = Some(Connection {
                client: tokio::net::TcpStream::from_std(client).unwrap(),
                conn: ClientConn::accepted(tokio::net::TcpStream::from_std(server).unwrap(), peer),
            });
        }
    }

    /// Drops the connection with a reset, so that no socket lingers in TIME_WAIT (thousands of
    /// them would use up the loopback's ports).
    fn reset(&mut self) {
        if let Some(c) = self.connection.take() {
            abort_on_close(c.client.as_raw_fd());
            if let Some(tcp) = c.conn.stream.tcp() {
                abort_on_close(tcp.as_raw_fd());
            }
        }
    }
}

/// Reads and discards whatever the console has sent so far.
fn drain(client: &tokio::net::TcpStream, sink: &mut [u8]) {
    while matches!(client.try_read(sink), Ok(n) if n > 0) {}
}

fn abort_on_close(fd: i32) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: fd is an open socket owned by the caller; the option value is a valid linger.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn put(out: &mut Vec<u8>, tag: u8, body: impl FnOnce(&mut Vec<u8>)) {
    out.push(tag);
    let at = out.len();
    out.put_u32(0);
    body(out);
    let len = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// The messages a console user sends for this input, Terminate last.
fn messages(mode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 64);
    match mode {
        0 | 1 => {
            let sql = String::from_utf8_lossy(payload).replace('\0', " ");
            if mode == 0 {
                put(&mut out, b'Q', |b| cstr(b, &sql));
            } else {
                put(&mut out, b'P', |b| {
                    cstr(b, "");
                    cstr(b, &sql);
                    b.put_i16(0);
                });
                put(&mut out, b'D', |b| {
                    b.push(b'S');
                    cstr(b, "");
                });
                put(&mut out, b'B', |b| {
                    cstr(b, "");
                    cstr(b, "");
                    b.put_i16(0);
                    b.put_i16(0);
                    b.put_i16(0);
                });
                put(&mut out, b'D', |b| {
                    b.push(b'P');
                    cstr(b, "");
                });
                put(&mut out, b'E', |b| {
                    cstr(b, "");
                    b.put_i32(0);
                });
                put(&mut out, b'S', |_| {});
            }
        }
        _ => {
            let mut rest = payload;
            while let [tag, len, tail @ ..] = rest {
                if *tag == b'X' {
                    break;
                }
                let (body, after) = tail.split_at((*len as usize).min(tail.len()));
                put(&mut out, *tag, |b| b.extend_from_slice(body));
                rest = after;
            }
        }
    }
    put(&mut out, b'X', |_| {});
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, payload)) = data.split_first() else {
        return;
    };
    if payload.len() > MAX_INPUT {
        return;
    }
    let bytes = messages(flags & 3, payload);
    let role = match flags & 4 {
        0 => Role::Stats,
        _ => Role::Admin,
    };
    STATE.with(|state| {
        let mut state = state.borrow_mut();
        let state = state.get_or_insert_with(State::new);
        let shared = Arc::new(Shared::new(state.config.clone()));
        state.connect();
        let State { rt, connection, .. } = &mut *state;
        let Connection { client, conn } = connection.as_mut().expect("connected");
        let served = rt.block_on(async {
            client.write_all(&bytes).await.expect("write to the console");
            let mut sink = vec![0u8; 64 * 1024];
            let run = admin::serve(conn, "fuzz", "", role, &shared);
            tokio::pin!(run);
            let served = loop {
                tokio::select! {
                    biased;
                    served = &mut run => break served,
                    Ok(()) = client.readable() => drain(client, &mut sink),
                }
            };
            drain(client, &mut sink);
            served
        });
        if served.is_err() {
            state.reset();
        }
    });
});
