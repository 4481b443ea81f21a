//! Session state in transaction pooling: what a client changed of its session that must follow
//! it from server to server (settings, SQL prepared statements: `held`), and what only the
//! server it ran on can hold (temporary tables, cursors, advisory locks...: `pins`), which
//! pins the client to that server until it is gone.
//!
//! How pgmux knows: each statement's text is read by a small lexer (`lex`, `classify`) when it
//! goes to the server, and what it says is applied only when the server's CommandComplete for
//! that statement comes back; changes made in a transaction stick only once it commits, and
//! savepoints are followed. What only a server holds is read back from the server itself, with
//! one query between transactions, whenever a statement may have made or dropped some. A
//! statement pgmux cannot read with certainty pins its client for the rest of the session.
//! Pure bookkeeping: no I/O.

mod bound;
pub mod classify;
mod glance;
mod held;
pub mod lex;
mod moving;
mod names;
mod pins;
mod set_config;

pub use classify::{classify, Kind};
pub use held::{Change, Held, Replay};
use names::{confirms, data_tag, find, parse_parts, remember, sets_standard_strings, size};
pub use pins::{check_query, read_check, PinSlots, Pins};

use std::sync::Arc;

/// The longest Parse text remembered as plain.
const PARSE_MEMO: usize = 256;

/// The most changes one transaction may stage (each bounded as a statement is); past them the
/// client is pinned instead.
const MAX_STAGED: usize = 4 * held::MAX_ENTRIES;

/// What one message's replies will confirm: its statements' kinds, and how many replies came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effects {
    kinds: Arc<[Kind]>,
    next: usize,
    failed: bool,
}

/// What the relay does with a client message, as far as session state goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to follow.
    Pass,
    /// The replies confirm what the message does: carry this with them.
    Follow(Effects),
    /// It would pin the client beyond the pool's cap: the client gets this error instead.
    Refuse(String),
}

/// Whether this client counts among its pool's pinned servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Free,
    /// Taken for a statement that may pin; the next check keeps it or gives it back.
    Reserved,
    Pinned,
}

/// Changes made since a savepoint (or since the transaction began, for the first level).
#[derive(Debug, Default)]
struct Level {
    savepoint: Option<String>,
    changes: Vec<Change>,
}

/// A pin starting or ending, for log_pinning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinChange {
    Pinned(Pins),
    Unpinned,
}

/// One client's session state.
#[derive(Debug)]
pub struct SessionState {
    enabled: bool,
    committed: Held,
    /// Changes of the open transaction, by savepoint level; empty outside one.
    staged: Vec<Level>,
    /// An error came in the open transaction while changes were staged.
    failed: bool,
    pins: Pins,
    slot: Slot,
    check_due: bool,
    /// Protocol-level statements and portals whose text is not plain, by name.
    statements: Vec<(Vec<u8>, Arc<[Kind]>)>,
    portals: Vec<(Vec<u8>, Arc<[Kind]>)>,
    slots: Arc<PinSlots>,
    cap: usize,
    /// standard_conforming_strings as the client has it, for reading its strings.
    standard_strings: bool,
    /// A SET of standard_conforming_strings went out and its answer has not come.
    strings_changing: bool,
    /// The text of the last Parse found plain (at most [`PARSE_MEMO`] bytes; forgotten when
    /// standard_conforming_strings may change how it reads).
    last_plain_parse: Vec<u8>,
    /// A pin that started or ended and was not logged yet.
    changed: Option<PinChange>,
}

/// What pgmux knew of a server's tracked parameters that a RESET made stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    One(String),
    All,
}

impl SessionState {
    /// A client's state; `enabled` is false outside transaction pooling or with the feature
    /// off, and then every call is a no-op.
    pub fn new(enabled: bool, slots: Arc<PinSlots>, cap: usize) -> SessionState {
        SessionState {
            enabled,
            committed: Held::default(),
            staged: Vec::new(),
            failed: false,
            pins: Pins::NONE,
            slot: Slot::Free,
            check_due: false,
            statements: Vec::new(),
            portals: Vec::new(),
            slots,
            cap,
            standard_strings: true,
            strings_changing: false,
            last_plain_parse: Vec::new(),
            changed: None,
        }
    }

    /// The client's standard_conforming_strings changed (or is first known).
    pub fn set_standard_strings(&mut self, on: bool) {
        if self.standard_strings != on {
            self.standard_strings = on;
            self.last_plain_parse.clear();
        }
    }

    /// A pin that started or ended since the last call.
    pub fn take_change(&mut self) -> Option<PinChange> {
        self.changed.take()
    }

    /// A state that follows nothing (session mode, tests, the fuzzers' plain runs).
    pub fn off() -> SessionState {
        SessionState::new(false, Arc::default(), 0)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// What the client committed that a server must have.
    pub fn held(&self) -> &Held {
        &self.committed
    }

    pub fn pins(&self) -> Pins {
        self.pins
    }

    /// Whether the client keeps its server at the end of a transaction.
    pub fn pinned(&self) -> bool {
        self.slot != Slot::Free
    }

    /// Whether the server must be asked what it holds before the client can let it go.
    pub fn check_due(&self) -> bool {
        self.check_due
    }

    /// A client message on its way to the server (whole, header included for the tag).
    pub fn on_client(&mut self, tag: u8, body: &[u8]) -> Outcome {
        if !self.enabled {
            return Outcome::Pass;
        }
        match tag {
            b'Q' => {
                // The server reads up to the first NUL; what follows one inside is at worst
                // read for nothing.
                let text = body.strip_suffix(b"\0").unwrap_or(body);
                match self.classify(text) {
                    None => Outcome::Pass,
                    Some(kinds) => self.admit(kinds.into()),
                }
            }
            b'P' => {
                // Drivers parse the same unnamed text over and over: known plain, it is
                // not read again (nor even searched for its end).
                let memo = &self.last_plain_parse;
                if !memo.is_empty()
                    && body.first() == Some(&0)
                    && body.get(1..=memo.len()) == Some(&memo[..])
                    && body.get(memo.len() + 1) == Some(&0)
                {
                    self.remember_statement(b"", None);
                    return Outcome::Pass;
                }
                let Some((name, text, types)) = parse_parts(body) else {
                    return Outcome::Pass;
                };
                // A name in use is refused by the server (and by pgmux's prepared statements):
                // what it stands for stays. The unnamed statement is replaced.
                if !name.is_empty() && find(&self.statements, name).is_some() {
                    return Outcome::Pass;
                }
                let kinds = self.classify(text).map(|k| bound::declared(k, types));
                if kinds.is_none() && text.len() <= PARSE_MEMO {
                    self.last_plain_parse.clear();
                    self.last_plain_parse.extend_from_slice(text);
                }
                self.remember_statement(name, kinds.map(Into::into));
                Outcome::Pass
            }
            // Most clients have no statement or portal pgmux follows: nothing to look up.
            b'B' | b'C' if self.statements.is_empty() && self.portals.is_empty() => Outcome::Pass,
            b'E' if self.portals.is_empty() => Outcome::Pass,
            b'B' => {
                let mut parts = body.splitn(3, |&b| b == 0);
                let (Some(portal), Some(statement), rest) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Outcome::Pass;
                };
                let kinds = find(&self.statements, statement)
                    .map(|kinds| bound::resolve(kinds, rest.unwrap_or(&[])));
                self.remember_portal(portal, kinds);
                Outcome::Pass
            }
            b'E' => {
                let portal = body.split(|&b| b == 0).next().unwrap_or(body);
                match find(&self.portals, portal) {
                    None => Outcome::Pass,
                    Some(kinds) => self.admit(kinds),
                }
            }
            b'C' => {
                let (kind, name) = (body.first(), body.get(1..).unwrap_or(&[]));
                let name = name.split(|&b| b == 0).next().unwrap_or(name);
                match kind {
                    Some(b'S') => self.remember_statement(name, None),
                    Some(b'P') => self.remember_portal(name, None),
                    _ => {}
                }
                Outcome::Pass
            }
            _ => Outcome::Pass,
        }
    }

    /// A statement's kinds as the client's standard_conforming_strings reads it; while a SET
    /// of that setting is not answered yet, as both values read it, or unreadable where the
    /// two disagree.
    fn classify(&mut self, text: &[u8]) -> Option<Vec<Kind>> {
        let kinds = classify(text, self.standard_strings);
        if !self.strings_changing {
            if kinds
                .as_ref()
                .is_some_and(|k| k.iter().any(sets_standard_strings))
            {
                self.strings_changing = true;
            }
            return kinds;
        }
        let other = classify(text, !self.standard_strings);
        match kinds == other {
            true => kinds,
            false => Some(vec![Kind::Unreadable(
                "a statement read two ways while standard_conforming_strings changes",
            )]),
        }
    }

    /// Records a protocol-level statement's kinds; past what pgmux keeps, the oldest is
    /// forgotten, and so the client is pinned (what it stood for may run unseen).
    fn remember_statement(&mut self, name: &[u8], kinds: Option<Arc<[Kind]>>) {
        if !remember(&mut self.statements, name, kinds) {
            self.pin_unreadable();
        }
    }

    fn remember_portal(&mut self, name: &[u8], kinds: Option<Arc<[Kind]>>) {
        if !remember(&mut self.portals, name, kinds) {
            self.pin_unreadable();
        }
    }

    /// Why a message is refused for what it would add past what pgmux follows of a session:
    /// more settings, SQL prepared statements or text than it keeps. PostgreSQL's own error
    /// for a limit, in place, rather than a pin the pool did not plan for.
    fn past_bounds(&self, kinds: &[Kind]) -> Option<String> {
        let (mut settings, mut prepared) = (0, 0);
        for kind in kinds {
            match kind {
                Kind::Set(s) => settings += s.len(),
                Kind::Prepare { .. } => prepared += 1,
                _ => {}
            }
        }
        if settings == 0 && prepared == 0 {
            return None;
        }
        let staged: usize = self.staged.iter().map(|l| l.changes.len()).sum();
        let held = &self.committed;
        let bytes = held.bytes() + size(kinds);
        let over = held.settings.len() + settings > held::MAX_ENTRIES
            || held.prepared.len() + prepared > held::MAX_PREPARED
            || staged + settings + prepared > MAX_STAGED
            || bytes > held::MAX_BYTES;
        over.then(|| {
            format!(
                "pgmux follows at most {} settings and {} SQL prepared statements of one \
                 session, {} KiB in all, in transaction pooling: RESET or DEALLOCATE some first",
                held::MAX_ENTRIES,
                held::MAX_PREPARED,
                held::MAX_BYTES / 1024
            )
        })
    }

    /// A message too large for pgmux to hold, of which `head` is the start of the body: a
    /// Query or Parse is followed from its replies' tags alone; a Bind from the names at its
    /// head.
    pub fn on_unread(&mut self, tag: u8, head: &[u8]) -> Outcome {
        if !self.enabled {
            return Outcome::Pass;
        }
        let kinds: Arc<[Kind]> = Arc::from([Kind::Unread]);
        match tag {
            b'Q' => self.admit(kinds),
            b'P' => {
                let name = head.split(|&b| b == 0).next().unwrap_or(&[]);
                self.remember_statement(name, Some(kinds));
                Outcome::Pass
            }
            b'B' if head.iter().filter(|&&b| b == 0).count() >= 2 => self.on_client(tag, head),
            // Which portal and statement it binds is not known: none of them is followed
            // rather than a stale one.
            b'B' => {
                self.portals.clear();
                Outcome::Pass
            }
            _ => Outcome::Pass,
        }
    }

    /// Decides, before a message goes out, what its statements may make the server hold.
    fn admit(&mut self, kinds: Arc<[Kind]>) -> Outcome {
        if let Some(refusal) = self.past_bounds(&kinds) {
            return Outcome::Refuse(refusal);
        }
        let acquires = kinds
            .iter()
            .any(|k| matches!(k, Kind::Holds | Kind::Unreadable(_)));
        let releases = kinds
            .iter()
            .any(|k| matches!(k, Kind::Releases | Kind::Unread | Kind::Broken));
        if acquires && self.slot == Slot::Free {
            if !self.slots.try_take(self.cap) {
                return Outcome::Refuse(format!(
                    "this statement would pin the client to its server connection, and \
                     max_pinned_servers ({}) of this pool's servers are pinned already",
                    self.cap
                ));
            }
            self.slot = Slot::Reserved;
        }
        if acquires || (releases && self.slot != Slot::Free) {
            self.check_due = true;
        }
        if kinds.contains(&Kind::Unread) {
            self.check_due = true;
        }
        Outcome::Follow(Effects {
            kinds,
            next: 0,
            failed: false,
        })
    }

    /// Whether replies that carry no effects of their own still matter: changes are staged,
    /// an error came in their transaction, or a change of standard_conforming_strings waits.
    pub fn follows_replies(&self) -> bool {
        !self.staged.is_empty() || self.failed || self.strings_changing
    }

    /// A CommandComplete for the client (`tag` its body), with the effects of the message it
    /// answers, if any. Changes go to the open transaction; `server` learns of them with the
    /// client once they commit.
    pub fn on_command_complete(
        &mut self,
        effects: Option<&mut Effects>,
        tag: &[u8],
        server: &mut Held,
    ) -> Option<Stale> {
        if !self.enabled {
            return None;
        }
        let tag = tag.strip_suffix(b"\0").unwrap_or(tag);
        let mut rolled_back_to = false;
        let mut stale = None;
        if self.pins.contains(Pins::UNREADABLE) && tag != b"DISCARD ALL" {
            // The session lives on its server alone: nothing to follow until DISCARD ALL.
            return None;
        }
        if let Some(effects) = effects {
            let kind = effects.kinds.get(effects.next).cloned();
            effects.next += 1;
            let kind = match kind {
                // The server's reply must say the statement was what its text said.
                Some(kind) if !confirms(&kind, tag) => {
                    Some(Kind::Unreadable("a reply that does not match"))
                }
                kind => kind,
            };
            match kind {
                Some(Kind::Set(settings)) => {
                    for s in settings {
                        self.stage(Change::Set(s.name, s.sql.into()));
                    }
                }
                Some(Kind::Reset(name)) => {
                    stale = Some(Stale::One(name.clone()));
                    self.stage(Change::Reset(name));
                }
                Some(Kind::ResetAll) => {
                    stale = Some(Stale::All);
                    self.stage(Change::ResetAll);
                }
                Some(Kind::Prepare { name, sql }) => self.stage(Change::Prepare(name, sql.into())),
                Some(Kind::Deallocate(name)) => self.stage(Change::Deallocate(name)),
                Some(Kind::DeallocateAll) => self.stage(Change::DeallocateAll),
                Some(Kind::DiscardAll) => {
                    // Never inside a transaction block: it is done once it completes.
                    self.stage(Change::DiscardAll);
                    self.commit(server);
                    let was = self.pinned();
                    self.release_slot();
                    self.pins = Pins::NONE;
                    self.check_due = false;
                    stale = Some(Stale::All);
                    if was {
                        self.changed = Some(PinChange::Unpinned);
                    }
                }
                Some(Kind::Savepoint(name)) if !self.staged.is_empty() => self.staged.push(Level {
                    savepoint: Some(name),
                    changes: Vec::new(),
                }),
                Some(Kind::Release(name)) => self.release_savepoint(&name),
                Some(Kind::RollbackTo(name)) => {
                    rolled_back_to = true;
                    self.rollback_to(&name);
                }
                Some(Kind::Unreadable(_) | Kind::Broken) => self.pin_unreadable(),
                // What it did to server-held state the check finds; settings made inside data
                // changes are what pgmux cannot see of functions either.
                Some(Kind::Unread) if !data_tag(tag) => self.pin_unreadable(),
                _ => {}
            }
        }
        if !self.staged.is_empty() {
            match tag {
                b"COMMIT" | b"PREPARE TRANSACTION" => self.commit(server),
                b"ROLLBACK" if !rolled_back_to => self.staged.clear(),
                _ => {}
            }
        }
        stale
    }

    /// A PortalSuspended for the client: the Execute ran as far as its row limit, so a
    /// set_config it carries ran (its CommandComplete would have said `SELECT 1`).
    pub fn on_suspended(&mut self, effects: Option<&mut Effects>, server: &mut Held) {
        let Some(effects) = effects else {
            return;
        };
        match effects.kinds.get(effects.next) {
            Some(Kind::Set(s)) if s.first().is_some_and(|s| s.sql.starts_with("SELECT")) => {
                self.on_command_complete(Some(effects), b"SELECT 1", server);
            }
            Some(Kind::Plain | Kind::Holds | Kind::Releases) => effects.next += 1,
            // Anything else draws no rows: what it did is not what its text said.
            _ => self.pin_unreadable(),
        }
    }

    /// An ErrorResponse for the client, answering the message with `effects` if any.
    pub fn on_error(&mut self, effects: Option<&mut Effects>) {
        if let Some(effects) = effects {
            effects.failed = true;
        }
        if !self.staged.is_empty() {
            self.failed = true;
        }
    }

    /// A ReadyForQuery for the client ending the message with `effects`, if any: a Query whose
    /// replies do not match its statements one for one was not read right.
    pub fn on_ready(&mut self, effects: Option<&Effects>, idle: bool, server: &mut Held) {
        if !self.enabled {
            return;
        }
        if let Some(e) = effects {
            if !e.failed && e.next != e.kinds.len() {
                self.pin_unreadable();
            }
        }
        if idle && !self.staged.is_empty() {
            match self.failed {
                true => self.staged.clear(),
                false => self.commit(server),
            }
        }
        if idle {
            self.failed = false;
        }
        // Its ParameterStatus, if any, came before this.
        self.strings_changing = false;
    }

    /// A PREPARE pgmux replayed failed on the server: the statement is gone for the client too
    /// (its EXECUTE fails as for a statement that does not exist).
    pub fn replay_failed(&mut self, name: &str) {
        self.committed.apply(&Change::Deallocate(name.to_string()));
    }

    /// The server answered the check: what it holds now.
    pub fn checked(&mut self, held: Pins) {
        self.check_due = false;
        let pins = held.with(self.pins.unreadable_only());
        let (was, had) = (self.slot == Slot::Pinned, self.pins);
        self.pins = pins;
        if pins.is_empty() {
            self.release_slot();
            if was {
                self.changed = Some(PinChange::Unpinned);
            }
            return;
        }
        if self.slot == Slot::Free {
            self.slots.force_take();
        }
        self.slot = Slot::Pinned;
        if !was || had != pins {
            self.changed = Some(PinChange::Pinned(pins));
        }
    }

    /// The client is leaving: whether its server holds state that must be discarded.
    pub fn leave(&mut self) -> bool {
        let dirty = self.pinned() || !self.pins.is_empty();
        if dirty {
            self.changed = Some(PinChange::Unpinned);
        }
        self.release_slot();
        self.pins = Pins::NONE;
        self.check_due = false;
        dirty
    }

    fn pin_unreadable(&mut self) {
        let was = self.pins;
        self.pins = self.pins.with(Pins::UNREADABLE);
        match self.slot {
            Slot::Free => self.slots.force_take(),
            Slot::Reserved | Slot::Pinned => {}
        }
        self.slot = Slot::Pinned;
        if was != self.pins {
            self.changed = Some(PinChange::Pinned(self.pins));
        }
    }

    fn release_slot(&mut self) {
        if self.slot != Slot::Free {
            self.slots.give_back();
            self.slot = Slot::Free;
        }
    }

    fn stage(&mut self, change: Change) {
        let staged: usize = self.staged.iter().map(|l| l.changes.len()).sum();
        if staged >= MAX_STAGED {
            // More than pgmux keeps for one transaction: the session stays on its server.
            self.staged.clear();
            self.pin_unreadable();
            return;
        }
        if self.staged.is_empty() {
            self.staged.push(Level::default());
        }
        if let Some(level) = self.staged.last_mut() {
            level.changes.push(change);
        }
    }

    fn release_savepoint(&mut self, name: &str) {
        let at = self
            .staged
            .iter()
            .rposition(|l| l.savepoint.as_deref() == Some(name))
            .unwrap_or(0);
        // A savepoint pgmux did not record was made before anything was staged.
        let merged: Vec<Change> = self
            .staged
            .drain(at.max(1).min(self.staged.len())..)
            .flat_map(|l| l.changes)
            .collect();
        if let Some(below) = self.staged.last_mut() {
            below.changes.extend(merged);
        }
    }

    fn rollback_to(&mut self, name: &str) {
        match self
            .staged
            .iter()
            .rposition(|l| l.savepoint.as_deref() == Some(name))
        {
            Some(at) => {
                self.staged.truncate(at + 1);
                self.staged[at].changes.clear();
            }
            None => self.staged.clear(),
        }
    }

    /// The open transaction committed: its changes are the client's, and the server's.
    fn commit(&mut self, server: &mut Held) {
        for level in self.staged.drain(..) {
            for change in &level.changes {
                self.committed.apply(change);
                server.apply(change);
            }
        }
        self.failed = false;
        if self.committed.over_bound() {
            // More than pgmux keeps for one client: it lives on its server alone.
            self.committed = Held::default();
            self.pin_unreadable();
        }
    }
}

impl Drop for SessionState {
    /// However the session ends, its place among the pool's pinned servers is given back.
    fn drop(&mut self) {
        self.release_slot();
    }
}

#[cfg(test)]
mod tests;
