//! Why a client is pinned to its server: state only that server can hold. The reasons are a
//! set (a client may hold a temporary table and a lock at once); each but
//! [`Pins::UNREADABLE`] is read back from the server itself between transactions, with one
//! query, whenever a statement may have made or dropped one.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pins(u8);

impl Pins {
    pub const NONE: Pins = Pins(0);
    pub const TEMP_TABLE: Pins = Pins(1);
    pub const HOLD_CURSOR: Pins = Pins(2);
    pub const ADVISORY_LOCK: Pins = Pins(4);
    pub const LISTEN: Pins = Pins(8);
    pub const ROLE: Pins = Pins(16);
    /// A statement changed the session in a way pgmux does not read: only the end of the
    /// session (or DISCARD ALL) ends this one.
    pub const UNREADABLE: Pins = Pins(32);

    const NAMES: [(Pins, &'static str); 6] = [
        (Pins::TEMP_TABLE, "temp_table"),
        (Pins::HOLD_CURSOR, "hold_cursor"),
        (Pins::ADVISORY_LOCK, "advisory_lock"),
        (Pins::LISTEN, "listen"),
        (Pins::ROLE, "role"),
        (Pins::UNREADABLE, "unreadable"),
    ];

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn contains(self, other: Pins) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn with(self, other: Pins) -> Pins {
        Pins(self.0 | other.0)
    }

    pub fn without(self, other: Pins) -> Pins {
        Pins(self.0 & !other.0)
    }

    /// The reasons, comma-separated (SHOW CLIENTS, logs); empty when none.
    pub fn describe(self) -> String {
        Pins::NAMES
            .iter()
            .filter(|(p, _)| self.contains(*p))
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Of these reasons, the one no check can end.
    pub fn unreadable_only(self) -> Pins {
        Pins(self.0 & Pins::UNREADABLE.0)
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn from_bits(bits: u8) -> Pins {
        Pins(bits & 63)
    }
}

/// The one query that reads back what a session holds that only its server can: one row of
/// five booleans, in the order of [`Pins::NAMES`]. `login_user` is who the server connection
/// logged in as. The client's own statement_timeout (its settings are on the server) does not
/// apply to it.
pub fn check_query(login_user: &str) -> String {
    let user = login_user.replace('\'', "''").replace('\\', "\\\\");
    format!(
        "SET LOCAL statement_timeout = 0; \
         SELECT EXISTS (SELECT FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()) \
         OR EXISTS (SELECT FROM pg_catalog.pg_proc WHERE pronamespace = pg_catalog.pg_my_temp_schema()) \
         OR EXISTS (SELECT FROM pg_catalog.pg_type WHERE typnamespace = pg_catalog.pg_my_temp_schema()), \
         EXISTS (SELECT FROM pg_catalog.pg_cursors WHERE is_holdable), \
         EXISTS (SELECT FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()), \
         EXISTS (SELECT FROM pg_catalog.pg_listening_channels()), \
         pg_catalog.current_setting('role') <> 'none' OR session_user <> E'{user}'"
    )
}

/// The pins a row of [`check_query`] reports; None when the row is not what it asks for.
pub fn read_check(row: &[Option<Vec<u8>>]) -> Option<Pins> {
    if row.len() != 5 {
        return None;
    }
    let mut pins = Pins::NONE;
    for (value, (pin, _)) in row.iter().zip(Pins::NAMES) {
        match value.as_deref() {
            Some(b"t") => pins = pins.with(pin),
            Some(b"f") => {}
            _ => return None,
        }
    }
    Some(pins)
}

/// A pool's pinned servers and its cap on them.
#[derive(Debug, Default)]
pub struct PinSlots {
    taken: AtomicUsize,
}

impl PinSlots {
    /// Takes a slot if fewer than `cap` are taken.
    pub fn try_take(&self, cap: usize) -> bool {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .is_ok()
    }

    /// Takes a slot whatever the cap (state the server already holds).
    pub fn force_take(&self) {
        self.taken.fetch_add(1, Ordering::AcqRel);
    }

    pub fn give_back(&self) {
        let _ = self
            .taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_row_reads_back_as_pins() {
        let t = Some(b"t".to_vec());
        let f = Some(b"f".to_vec());
        let row = [t.clone(), f.clone(), t.clone(), f.clone(), f.clone()];
        let pins = read_check(&row).unwrap();
        assert_eq!(pins.describe(), "temp_table,advisory_lock");
        assert_eq!(read_check(&row[..4]), None);
        assert_eq!(read_check(&[t, f.clone(), None, f.clone(), f]), None);
        assert!(check_query("o'b").contains("E'o''b'"));
    }

    #[test]
    fn slots_respect_the_cap() {
        let slots = PinSlots::default();
        assert!(slots.try_take(2));
        assert!(slots.try_take(2));
        assert!(!slots.try_take(2));
        slots.give_back();
        assert!(slots.try_take(2));
        slots.force_take();
        assert_eq!(slots.taken(), 3);
        assert!(!slots.try_take(0));
    }
}
