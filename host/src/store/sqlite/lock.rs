//! One server per database file: [`QueueStore::lock_for_server`] takes an
//! exclusive OS advisory lock (`flock`, std's `File::try_lock`) on
//! `<database file>.lock`; it goes with the process however that ends. An
//! in-memory database has no lock ([`ServerLock::none`]).
//!
//! This is a single-node guarantee: it holds between processes of one
//! machine sharing the file, which is all a SQLite database can be shared
//! by. Fencing by lease epoch (`queue.rs`) protects the runs whatever the lock.
//!
//! [`QueueStore::lock_for_server`]: crate::store::QueueStore::lock_for_server

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::SqliteStore;
use crate::store::{ServerLock, StoreError};

/// Take the exclusive lock on `lock_path` for a server on `db` (a few tries:
/// a CLI probing the lock holds a shared lock for an instant) and write our
/// pid into it for the message a second server gets.
fn lock_file(lock_path: &Path, db: &Path) -> Result<ServerLock, StoreError> {
    let mut file = open_lock_file(lock_path)?;
    let mut tries = 0;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if tries < 10 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(format!(
                    "another OmniFlow server ({}) is running on the database {}: stop it first, \
                     or start this one with another --db (lock file {})",
                    holder(lock_path),
                    db.display(),
                    lock_path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Unavailable(format!(
                    "locking {}: {e}",
                    lock_path.display()
                )));
            }
        }
    }
    // Best effort: the pid is only for the message above.
    let _ = file.set_len(0);
    let _ = write!(file, "pid {}", std::process::id());
    let _ = file.flush();
    Ok(ServerLock::file(file))
}

/// Who holds the lock at `lock_path`, if anyone (a shared lock taken and
/// dropped at once).
fn probe_lock(lock_path: &Path) -> Result<Option<String>, StoreError> {
    let file = open_lock_file(lock_path)?;
    match file.try_lock_shared() {
        Ok(()) => Ok(None),
        Err(std::fs::TryLockError::WouldBlock) => Ok(Some(holder(lock_path))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Unavailable(format!(
            "probing {}: {e}",
            lock_path.display()
        ))),
    }
}

fn open_lock_file(lock_path: &Path) -> Result<std::fs::File, StoreError> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(lock_path)
        .map_err(|e| StoreError::Unavailable(format!("opening {}: {e}", lock_path.display())))
}

/// The holder as its lock file names it (`pid 1234`).
fn holder(lock_path: &Path) -> String {
    match std::fs::read_to_string(lock_path) {
        Ok(text) if !text.trim().is_empty() => text.trim().chars().take(40).collect(),
        _ => "pid unknown".to_owned(),
    }
}

impl SqliteStore {
    /// `<database file>.lock`, for a file database.
    fn lock_path(&self) -> Option<PathBuf> {
        self.file.as_ref().map(|file| {
            let mut name = file.as_os_str().to_owned();
            name.push(".lock");
            PathBuf::from(name)
        })
    }

    /// [`QueueStore::lock_for_server`](crate::store::QueueStore::lock_for_server).
    pub(super) async fn take_server_lock(&self) -> Result<ServerLock, StoreError> {
        let Some(lock_path) = self.lock_path() else {
            return Ok(ServerLock::none());
        };
        let db = self.file.clone().unwrap_or_default();
        tokio::task::spawn_blocking(move || lock_file(&lock_path, &db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("locking the database: {e}")))?
    }

    /// [`QueueStore::server_holding_lock`](crate::store::QueueStore::server_holding_lock).
    pub(super) async fn probe_server_lock(&self) -> Result<Option<String>, StoreError> {
        let Some(lock_path) = self.lock_path() else {
            return Ok(None);
        };
        tokio::task::spawn_blocking(move || probe_lock(&lock_path))
            .await
            .map_err(|e| StoreError::Unavailable(format!("probing the database lock: {e}")))?
    }
}
