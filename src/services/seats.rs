//! Counting what each key holds on this replica (open terminals, commands run now): a seat is
//! taken within the key's quota and given back when dropped, however the work ends.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use uuid::Uuid;

use crate::domain::{DomainError, Quota, Quotas};

type Counts = Mutex<HashMap<Option<Uuid>, u64>>;

/// The seats of one quota on this replica.
pub struct KeySeats {
    quota: Quota,
    held: Arc<Counts>,
}

/// One seat, given back when dropped.
pub struct KeySeat {
    held: Arc<Counts>,
    key: Option<Uuid>,
}

impl KeySeats {
    pub fn new(quota: Quota) -> Self {
        Self { quota, held: Arc::default() }
    }

    /// A seat for `key`, if it holds fewer than `quotas` allow; else `QuotaExceeded`.
    pub fn take(&self, key: Option<Uuid>, quotas: Quotas) -> Result<KeySeat, DomainError> {
        let mut held = lock(&self.held);
        let count = held.entry(key).or_default();
        quotas.admit(self.quota, *count)?;
        *count += 1;
        Ok(KeySeat { held: self.held.clone(), key })
    }

    /// How many seats `key` holds.
    pub fn of(&self, key: Option<Uuid>) -> u64 {
        lock(&self.held).get(&key).copied().unwrap_or(0)
    }
}

impl Drop for KeySeat {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        if let Some(count) = held.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

fn lock(counts: &Counts) -> std::sync::MutexGuard<'_, HashMap<Option<Uuid>, u64>> {
    counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_stop_at_the_quota_and_come_back_when_dropped() {
        let quotas = Quotas { terminals: 2, sessions: 1, commands: 1, followers: 1 };
        let seats = KeySeats::new(Quota::Terminals);
        let key = Some(Uuid::new_v4());
        let (first, _second) = (seats.take(key, quotas).unwrap(), seats.take(key, quotas).unwrap());
        assert!(matches!(seats.take(key, quotas), Err(DomainError::QuotaExceeded { max: 2, .. })));
        assert!(seats.take(Some(Uuid::new_v4()), quotas).is_ok(), "another key has its own");
        drop(first);
        assert_eq!(seats.of(key), 1);
        assert!(seats.take(key, quotas).is_ok());
    }
}
