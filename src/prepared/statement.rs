//! Statements by their exact bytes, a client's names for them, and a server's LRU of them.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// Every statement pgmux prepares on a server is named this, followed by its id.
pub const SERVER_NAME_PREFIX: &[u8] = b"PGMUX_";

/// One distinct (query text, parameter types), shared by every client that prepared it.
#[derive(Debug, PartialEq, Eq)]
pub struct Statement {
    pub id: u64,
    /// The Parse body after the statement name: query text, NUL, parameter count and types.
    /// None for a statement too large to keep: it went through once, streamed, to the one
    /// server connection that has it, and is shared with no other client.
    pub body: Option<Bytes>,
    /// `PGMUX_<id>` and its NUL, as it goes on the wire.
    pub server_name: Box<[u8]>,
}

impl Statement {
    fn new(id: u64, body: Option<Bytes>) -> Statement {
        let mut server_name = SERVER_NAME_PREFIX.to_vec();
        server_name.extend_from_slice(id.to_string().as_bytes());
        server_name.push(0);
        Statement {
            id,
            body,
            server_name: server_name.into_boxed_slice(),
        }
    }
}

/// pgmux-wide: statement bytes to the one live [`Statement`] for them. Entries die with the last
/// client holding them; dead ones are swept as the map grows.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Debug, Default)]
struct RegistryInner {
    by_body: HashMap<Bytes, Weak<Statement>>,
    next_id: u64,
    /// Size at which dead entries are swept next.
    sweep_at: usize,
}

/// Fewest entries before a sweep is worth it.
const SWEEP_MIN: usize = 64;

impl Registry {
    /// The statement for these Parse-body bytes, made on first sight.
    pub fn intern(&self, body: &[u8]) -> Arc<Statement> {
        let mut inner = crate::sync::lock(&self.inner);
        if let Some(live) = inner.by_body.get(body).and_then(Weak::upgrade) {
            return live;
        }
        if inner.by_body.len() >= inner.sweep_at.max(SWEEP_MIN) {
            inner.by_body.retain(|_, w| w.strong_count() > 0);
            inner.sweep_at = inner.by_body.len() * 2;
        }
        inner.next_id += 1;
        let body = Bytes::copy_from_slice(body);
        let statement = Arc::new(Statement::new(inner.next_id, Some(body.clone())));
        inner.by_body.insert(body, Arc::downgrade(&statement));
        statement
    }

    /// A statement of its own for a Parse too large to keep: a fresh name, and no text.
    pub fn unshared(&self) -> Arc<Statement> {
        let mut inner = crate::sync::lock(&self.inner);
        inner.next_id += 1;
        Arc::new(Statement::new(inner.next_id, None))
    }

    /// Distinct statements some client holds now (dead entries not yet swept are skipped).
    pub fn live(&self) -> usize {
        let inner = crate::sync::lock(&self.inner);
        inner
            .by_body
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}

/// One client's named statements: its own name to the shared statement.
#[derive(Debug, Default)]
pub struct ClientStatements {
    by_name: HashMap<Bytes, Arc<Statement>>,
}

impl ClientStatements {
    pub fn get(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        self.by_name.get(name)
    }

    pub fn insert(&mut self, name: Bytes, statement: Arc<Statement>) {
        self.by_name.insert(name, statement);
    }

    pub fn remove(&mut self, name: &[u8]) -> Option<Arc<Statement>> {
        self.by_name.remove(name)
    }

    pub fn clear(&mut self) {
        self.by_name.clear();
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Arc<Statement>)> {
        self.by_name.iter()
    }
}

/// The statements one server connection has prepared, with their last use for LRU eviction.
/// Holding them keeps their ids alive in the registry, so a client that prepares the same text
/// later finds them still prepared. Eviction scans for the oldest: it happens once per new
/// statement past the limit, and the limit is small (PgBouncer's default is 200).
#[derive(Debug, Default)]
pub struct ServerStatements {
    by_id: HashMap<u64, (Arc<Statement>, u64)>,
    clock: u64,
}

impl ServerStatements {
    /// Whether the statement is prepared here; marks it used.
    pub fn touch(&mut self, id: u64) -> bool {
        self.clock += 1;
        match self.by_id.get_mut(&id) {
            Some((_, used)) => {
                *used = self.clock;
                true
            }
            None => false,
        }
    }

    pub fn insert(&mut self, statement: Arc<Statement>) {
        self.clock += 1;
        self.by_id.insert(statement.id, (statement, self.clock));
    }

    pub fn remove(&mut self, id: u64) -> Option<Arc<Statement>> {
        self.by_id.remove(&id).map(|(s, _)| s)
    }

    /// The least recently used statement, when adding one more would pass `capacity`. One whose
    /// text pgmux did not keep goes last: once closed, it cannot be prepared again.
    pub fn victim(&self, capacity: usize) -> Option<u64> {
        if self.by_id.len() < capacity {
            return None;
        }
        self.by_id
            .iter()
            .min_by_key(|(_, (statement, used))| (statement.body.is_none(), *used))
            .map(|(id, _)| *id)
    }

    pub fn contains(&self, id: u64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// The server forgot them all (DISCARD ALL, DEALLOCATE ALL).
    pub fn clear(&mut self) {
        self.by_id.clear();
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// What to take back when a message pgmux counted on never took effect on the server: it failed,
/// or the server skipped it after an earlier error in the same pipeline.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Undo {
    #[default]
    Nothing,
    /// A Parse that did not happen: drop the client's name for it and the server's entry.
    Parse {
        client_name: Option<Bytes>,
        server_id: Option<u64>,
    },
    /// A client's Close or DEALLOCATE that did not happen: the name is the client's again.
    ClientClose {
        name: Bytes,
        statement: Arc<Statement>,
    },
    /// An eviction that did not happen: the server still has the statement.
    ServerClose(Arc<Statement>),
}

impl Undo {
    pub fn apply(self, client: &mut ClientStatements, server: &mut ServerStatements) {
        match self {
            Undo::Nothing => {}
            Undo::Parse {
                client_name,
                server_id,
            } => {
                if let Some(name) = client_name {
                    client.remove(&name);
                }
                if let Some(id) = server_id {
                    server.remove(id);
                }
            }
            Undo::ClientClose { name, statement } => client.insert(name, statement),
            Undo::ServerClose(statement) => server.insert(statement),
        }
    }
}
