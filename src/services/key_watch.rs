//! Revocation that reaches running work: every command, stream and terminal a key started holds
//! a `KeyHold`, which ends when the credential it was started with may no longer act.
//!
//! A hold ends three ways:
//! - the key is revoked on this replica (`end_now`, from the revoking request): at once;
//! - its deadline passes (the key's expiry, or the end of a rotated-out secret's grace): a timer
//!   here, no database needed;
//! - the key is revoked, its expiry moved earlier, or the secret rotated out, on any replica:
//!   `sweep` reads every held credential from the database (not the cache) each `every`, which is
//!   at most half of `CACHE_TTL`, so work ends on every replica within the time its new requests
//!   start being refused.
//!
//! The sweep reads only credentials something holds, one query each; a replica with no running
//! work reads nothing.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    domain::{ApiKey, KeyHash, Unauthenticated},
    ports::{ApiKeyRepo, Clock},
};

/// What a request authenticated with: a key, and the hash of the secret it presented (`None`
/// for a terminal ticket, which stands for its key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Credential {
    pub key_id: Uuid,
    pub hash: Option<KeyHash>,
}

/// When a credential stops working by itself: the key's expiry, or the end of the grace of the
/// old secret it presented, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub at: DateTime<Utc>,
    pub why: Unauthenticated,
}

impl Deadline {
    /// The deadline of `key` presented with a secret that works until `secret_valid_until`.
    pub fn of(key: &ApiKey, secret_valid_until: Option<DateTime<Utc>>) -> Option<Self> {
        let expiry = key.expires_at.map(|at| Self { at, why: Unauthenticated::Expired });
        let grace = secret_valid_until.map(|at| Self { at, why: Unauthenticated::Superseded });
        match (expiry, grace) {
            (Some(a), Some(b)) => Some(if b.at < a.at { b } else { a }),
            (one, other) => one.or(other),
        }
    }
}

/// The credentials held on this replica, each with the token its holds wait on.
type Held = Mutex<HashMap<Credential, Watched>>;

struct Watched {
    ended: CancellationToken,
    why: Arc<OnceLock<Unauthenticated>>,
    holders: usize,
}

pub struct KeyWatch {
    /// The database itself, not the cache: the sweep must see other replicas' changes.
    repo: Arc<dyn ApiKeyRepo>,
    clock: Arc<dyn Clock>,
    held: Arc<Held>,
    /// How often held credentials are read again.
    pub every: Duration,
}

/// Work of one credential, ending when it may no longer act (`ended`). Dropping the last hold
/// of a credential stops watching it.
pub struct KeyHold {
    watched: Option<(Credential, Arc<Held>)>,
    ended: CancellationToken,
    why: Arc<OnceLock<Unauthenticated>>,
    deadline: Option<(tokio::time::Instant, Unauthenticated)>,
}

impl KeyHold {
    /// A hold that never ends: work started by the command line, or with no key.
    pub fn unbounded() -> Self {
        Self { watched: None, ended: CancellationToken::new(), why: Arc::default(), deadline: None }
    }

    /// Resolves when the credential may no longer act, with why. Pending forever for
    /// `unbounded`.
    pub async fn ended(&self) -> Unauthenticated {
        let deadline = async {
            match self.deadline {
                Some((at, why)) => {
                    tokio::time::sleep_until(at).await;
                    why
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = self.ended.cancelled() => self.why.get().copied().unwrap_or(Unauthenticated::Revoked),
            why = deadline => why,
        }
    }
}

impl Drop for KeyHold {
    fn drop(&mut self) {
        let Some((credential, held)) = self.watched.take() else { return };
        let mut held = lock(&held);
        if let Some(watched) = held.get_mut(&credential) {
            watched.holders = watched.holders.saturating_sub(1);
            if watched.holders == 0 {
                held.remove(&credential);
            }
        }
    }
}

fn lock(held: &Held) -> std::sync::MutexGuard<'_, HashMap<Credential, Watched>> {
    held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl KeyWatch {
    /// Reads held credentials every `cache_ttl / 2` (at least every 100 ms, at most every 5 s).
    pub fn new(repo: Arc<dyn ApiKeyRepo>, clock: Arc<dyn Clock>, cache_ttl: Duration) -> Self {
        let every = (cache_ttl / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
        Self { repo, clock, held: Arc::default(), every }
    }

    /// A hold on `credential` (`None`: unbounded) that ends at `deadline` at the latest.
    pub fn hold(&self, credential: Option<&Credential>, deadline: Option<Deadline>) -> KeyHold {
        let Some(credential) = credential else { return KeyHold::unbounded() };
        let deadline = deadline.map(|deadline| {
            let left = (deadline.at - self.clock.now()).to_std().unwrap_or(Duration::ZERO);
            (tokio::time::Instant::now() + left, deadline.why)
        });
        let mut held = lock(&self.held);
        let watched = held.entry(credential.clone()).or_insert_with(|| Watched {
            ended: CancellationToken::new(),
            why: Arc::default(),
            holders: 0,
        });
        watched.holders += 1;
        KeyHold {
            watched: Some((credential.clone(), self.held.clone())),
            ended: watched.ended.clone(),
            why: watched.why.clone(),
            deadline,
        }
    }

    /// Ends every hold of key `id` (whatever secret it was started with) now, for `why`.
    pub fn end_now(&self, id: Uuid, why: Unauthenticated) {
        for (_, watched) in lock(&self.held).iter().filter(|(credential, _)| credential.key_id == id) {
            let _ = watched.why.set(why);
            watched.ended.cancel();
        }
    }

    /// How many credentials something holds on this replica.
    pub fn held(&self) -> usize {
        lock(&self.held).len()
    }

    /// Reads every held credential and ends the holds of those that may no longer act (key
    /// revoked, expired or gone; secret rotated out past its grace). One that cannot be read
    /// keeps its holds: a database blip must not kill work.
    pub async fn sweep(&self) {
        let credentials: Vec<Credential> = lock(&self.held).keys().cloned().collect();
        for credential in credentials {
            let why = match self.why_ended(&credential).await {
                Ok(why) => why,
                Err(error) => {
                    tracing::warn!(%error, api_key.id = %credential.key_id, "could not check a key's credential");
                    None
                }
            };
            if let Some(why) = why {
                tracing::info!(api_key.id = %credential.key_id, reason = %why, "ending the work of a key that may no longer act");
                let held = lock(&self.held);
                if let Some(watched) = held.get(&credential) {
                    let _ = watched.why.set(why);
                    watched.ended.cancel();
                }
            }
        }
    }

    /// Why `hold`'s credential may no longer act, read now rather than at the next sweep; `None`
    /// if it still may (or cannot be read). For a cancel, which may be another replica's
    /// revocation arriving first.
    pub async fn check_now(&self, hold: &KeyHold) -> Option<Unauthenticated> {
        let (credential, _) = hold.watched.as_ref()?;
        self.why_ended(credential).await.ok().flatten()
    }

    async fn why_ended(&self, credential: &Credential) -> Result<Option<Unauthenticated>, crate::domain::DomainError> {
        let now = self.clock.now();
        Ok(match &credential.hash {
            Some(hash) => match self.repo.find_by_hash(hash).await? {
                None => Some(Unauthenticated::Unknown),
                Some(stored) if stored.secret_valid_until.is_some_and(|until| until <= now) => {
                    Some(Unauthenticated::Superseded)
                }
                Some(stored) => stored.key.check_usable(now).err(),
            },
            None => match self.repo.get(credential.key_id).await? {
                None => Some(Unauthenticated::Unknown),
                Some(key) => key.check_usable(now).err(),
            },
        })
    }

    /// Sweeps every `every`, for as long as it runs.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sweep().await;
        }
    }
}
