//! Operator control of databases: PAUSE/RESUME (hold new transactions, no error to clients) and
//! DISABLE/ENABLE (refuse new clients). Sessions look at one relaxed atomic per transaction; only
//! while something is paused do they consult the shared state.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ControlState {
    pub all_paused: bool,
    pub paused: BTreeSet<String>,
    pub disabled: BTreeSet<String>,
}

impl ControlState {
    pub fn is_paused(&self, db: &str) -> bool {
        self.all_paused || self.paused.contains(db)
    }
}

pub struct Control {
    tx: watch::Sender<ControlState>,
    /// True while anything is paused: the fast path for every transaction start.
    any_paused: AtomicBool,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            tx: watch::channel(ControlState::default()).0,
            any_paused: AtomicBool::new(false),
        }
    }
}

impl Control {
    pub fn state(&self) -> ControlState {
        self.tx.borrow().clone()
    }

    /// Marks `db` (or everything) paused; Err if it already is.
    pub fn pause(&self, db: Option<&str>) -> Result<(), String> {
        let mut result = Ok(());
        self.tx.send_modify(|s| match db {
            None if s.all_paused => result = Err("already paused".into()),
            None => s.all_paused = true,
            Some(db) if s.is_paused(db) => result = Err(format!("database {db} is already paused")),
            Some(db) => {
                s.paused.insert(db.to_owned());
            }
        });
        self.any_paused.store(true, Ordering::SeqCst);
        result
    }

    /// Lifts a pause of `db` (or of everything); Err if there is none.
    pub fn resume(&self, db: Option<&str>) -> Result<(), String> {
        let mut result = Ok(());
        self.tx.send_modify(|s| match db {
            None if !s.all_paused && s.paused.is_empty() => result = Err("not paused".into()),
            None => {
                s.all_paused = false;
                s.paused.clear();
            }
            Some(db) if !s.paused.remove(db) => {
                result = Err(format!("database {db} is not paused"))
            }
            Some(_) => {}
        });
        let s = self.tx.borrow();
        self.any_paused
            .store(s.all_paused || !s.paused.is_empty(), Ordering::SeqCst);
        result
    }

    pub fn set_disabled(&self, db: &str, disabled: bool) {
        self.tx.send_modify(|s| {
            if disabled {
                s.disabled.insert(db.to_owned());
            } else {
                s.disabled.remove(db);
            }
        });
    }

    pub fn is_disabled(&self, db: &str) -> bool {
        self.tx.borrow().disabled.contains(db)
    }

    /// Returns once `db` is not paused; at once when nothing is.
    /// Whether some database is paused (then checkouts take the slow path that waits).
    pub fn any_paused(&self) -> bool {
        self.any_paused.load(Ordering::Relaxed)
    }

    pub async fn wait_unpaused(&self, db: &str) {
        if !self.any_paused.load(Ordering::Relaxed) {
            return;
        }
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|s| !s.is_paused(db)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_resume_and_disable_bookkeeping() {
        let c = Control::default();
        c.pause(Some("a")).unwrap();
        assert!(c.pause(Some("a")).is_err());
        assert!(c.state().is_paused("a") && !c.state().is_paused("b"));
        assert!(c.resume(Some("b")).is_err());
        c.resume(Some("a")).unwrap();
        assert!(c.resume(None).is_err());
        c.pause(None).unwrap();
        assert!(c.state().is_paused("b"));
        c.resume(None).unwrap();
        assert!(!c.state().is_paused("b"));
        c.set_disabled("a", true);
        assert!(c.is_disabled("a"));
        c.set_disabled("a", false);
        assert!(!c.is_disabled("a"));
    }

    #[tokio::test]
    async fn waiting_ends_on_resume() {
        let c = std::sync::Arc::new(Control::default());
        c.wait_unpaused("a").await;
        c.pause(Some("a")).unwrap();
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.wait_unpaused("a").await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        c.resume(Some("a")).unwrap();
        waiter.await.unwrap();
    }
}
