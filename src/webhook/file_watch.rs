//! Files read at start and again whenever they change: the serving certificate and key
//! ([`super::tls`]) and the client CA ([`super::client_auth`]). Changes are noticed by watching the
//! files' directories (Kubernetes updates a mounted secret or ConfigMap by swapping a symlink, which
//! a watch on the file itself would miss) and by polling as a fallback.

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use std::path::PathBuf;
use std::time::Duration;

/// How often the files are re-read even without a file-system event.
pub const POLL_INTERVAL: Duration = Duration::from_secs(10);

/// Calls `reload` after every change in the directories of `files` (a burst of events once, after
/// it has settled) and every [`POLL_INTERVAL`]; runs until the task is dropped. `what` names the
/// files in the warnings logged when the directories cannot be watched.
pub async fn watch(files: &[PathBuf], what: &str, mut reload: impl FnMut()) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        if event.is_ok_and(|e| !may_change_files(&e.kind)) {
            return;
        }
        // A full channel already means "reload pending".
        let _ = tx.try_send(());
    });
    let _watcher = match watcher {
        Ok(mut w) => {
            for dir in directories(files) {
                if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the {what}'s directory; polling only");
                }
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no file-system watcher; polling the {what} only");
            None
        }
    };
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    loop {
        tokio::select! {
            _ = rx.recv() => {
                // Let a rotation that writes several files finish before reading them.
                tokio::time::sleep(Duration::from_millis(100)).await;
                while rx.try_recv().is_ok() {}
            }
            _ = poll.tick() => {}
        }
        reload();
    }
}

/// The directories holding `files`, each once.
fn directories(files: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .map(|p| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Whether an event in a watched directory may have changed the files. Opening or reading them (a
/// reload does, and so does anything else that serves or checks them) is not: reacting to it made
/// every reload trigger the next, ten times a second. Closing a file written to is (a writer's last
/// write may come just before it).
fn may_change_files(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// The SHA-256 of `parts` in order: whether a re-read changed anything, without keeping the files.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    for part in parts {
        digest.update(part);
    }
    digest.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_of_one_directory_are_watched_once() {
        let files = [
            PathBuf::from("/etc/certs/tls.crt"),
            PathBuf::from("/etc/certs/tls.key"),
            PathBuf::from("ca.crt"),
        ];
        let mut dirs = directories(&files);
        dirs.sort();
        let mut expected = [PathBuf::from("."), PathBuf::from("/etc/certs")];
        expected.sort();
        assert_eq!(dirs, expected);
    }

    #[test]
    fn reading_the_files_is_not_a_change() {
        use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};
        assert!(!may_change_files(&EventKind::Access(AccessKind::Read)));
        assert!(!may_change_files(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!may_change_files(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(may_change_files(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(may_change_files(&EventKind::Create(CreateKind::File)));
        assert!(may_change_files(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(may_change_files(&EventKind::Remove(RemoveKind::File)));
        assert!(may_change_files(&EventKind::Any));
    }
}
