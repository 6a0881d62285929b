//! `CommandQueue` in memory, with the SQL queues' semantics (checked by the same contract).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rdev_api::{
    domain::{AuditEntry, Command, CommandEnd, CommandFilter, CommandStatus, DomainError, Page, PageRequest},
    ports::{AuditLog, CancelEffect, CommandQueue, Recovered, RecoveryAudit},
};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{MemoryAuditLog, Watched};

#[derive(Default)]
pub struct MemoryQueue {
    state: Watched<State>,
    work: Notify,
    /// How many cancels still answer `Unchanged` with the command as it is, as when it moved
    /// between queued and running while the cancel looked.
    pub cancel_races: AtomicU32,
    /// The audit entries recoveries made.
    pub recovery_entries: std::sync::Mutex<Vec<AuditEntry>>,
    /// Where a command's end stores its audit entry, as the SQL queue shares its database with
    /// the audit log; without one the entry is dropped.
    audit: Option<Arc<MemoryAuditLog>>,
}

impl MemoryQueue {
    /// A queue whose finished commands leave their audit entries in `audit`.
    pub fn sharing(audit: Arc<MemoryAuditLog>) -> Self {
        Self { audit: Some(audit), ..Self::default() }
    }
}

#[derive(Default)]
pub struct State {
    commands: HashMap<Uuid, Slot>,
    next_seq: u64,
}

struct Slot {
    command: Command,
    seq: u64,
    claimed_by: Option<String>,
    lease_until: Option<DateTime<Utc>>,
}

impl Slot {
    fn held_by(&self, worker: &str) -> bool {
        self.command.status == CommandStatus::Running && self.claimed_by.as_deref() == Some(worker)
    }

    fn unclaim(&mut self) {
        self.claimed_by = None;
        self.lease_until = None;
    }
}

impl MemoryQueue {
    /// Waits until the command `id` satisfies `done`.
    pub async fn wait_for(&self, id: Uuid, what: &str, done: impl Fn(&Command) -> bool) {
        self.state.wait_until(what, |s| s.commands.get(&id).is_some_and(|slot| done(&slot.command))).await
    }

    pub fn command(&self, id: Uuid) -> Command {
        self.state.read(|s| s.commands[&id].command.clone())
    }
}

#[async_trait]
impl CommandQueue for MemoryQueue {
    async fn enqueue(&self, command: &Command) -> Result<(), DomainError> {
        self.state.change(|s| {
            s.next_seq += 1;
            let slot = Slot { command: command.clone(), seq: s.next_seq, claimed_by: None, lease_until: None };
            s.commands.insert(command.id, slot);
        });
        self.work.notify_waiters();
        Ok(())
    }

    async fn store_now(&self, command: &Command, worker: &str, lease_until: DateTime<Utc>) -> Result<(), DomainError> {
        self.state.change(|s| {
            s.next_seq += 1;
            let seq = s.commands.get(&command.id).map_or(s.next_seq, |slot| slot.seq);
            let (claimed_by, lease_until) = (Some(worker.to_owned()), Some(lease_until));
            s.commands.insert(command.id, Slot { command: command.clone(), seq, claimed_by, lease_until });
        });
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Option<Command>, DomainError> {
        Ok(self.state.read(|s| s.commands.get(&id).map(|slot| slot.command.clone())))
    }

    async fn list(&self, filter: &CommandFilter, page: &PageRequest) -> Result<Page<Command>, DomainError> {
        let rows = self.state.read(|s| {
            let key = |c: &Command| (c.created_at, c.id);
            let after = page.after.and_then(|id| s.commands.get(&id)).map(|slot| key(&slot.command));
            let mut rows: Vec<Command> = s
                .commands
                .values()
                .map(|slot| &slot.command)
                .filter(|c| filter.project_id.as_ref().is_none_or(|p| &c.project_id == p))
                .filter(|c| filter.status.is_none_or(|status| c.status == status))
                .filter(|c| filter.reader.may_read(c))
                .filter(|c| after.is_none_or(|after| key(c) < after))
                .cloned()
                .collect();
            rows.sort_by_key(|c| std::cmp::Reverse(key(c)));
            rows.truncate(page.fetch_limit() as usize);
            rows
        });
        Ok(Page::from_rows(rows, page, |c| c.id))
    }

    async fn active_of_key(&self, key: Uuid) -> Result<u64, DomainError> {
        Ok(self.state.read(|s| {
            s.commands
                .values()
                .filter(|slot| {
                    slot.command.caller.api_key_id == Some(key)
                        && matches!(slot.command.status, CommandStatus::Queued | CommandStatus::Running)
                })
                .count() as u64
        }))
    }

    /// Keys live in another store here: every key may act.
    async fn claim(
        &self,
        worker: &str,
        lease_until: DateTime<Utc>,
        _now: DateTime<Utc>,
        avoid: &[Uuid],
    ) -> Result<Option<Command>, DomainError> {
        Ok(self.state.change(|s| {
            let next = |avoiding: bool| {
                s.commands
                    .values()
                    .filter(|slot| slot.command.status == CommandStatus::Queued)
                    .filter(|slot| !avoiding || slot.command.caller.api_key_id.is_none_or(|key| !avoid.contains(&key)))
                    .min_by_key(|slot| (std::cmp::Reverse(slot.command.priority), slot.seq))
                    .map(|slot| slot.command.id)
            };
            let id = next(true).or_else(|| next(false))?;
            let slot = s.commands.get_mut(&id)?;
            slot.command.status = CommandStatus::Running;
            slot.claimed_by = Some(worker.to_owned());
            slot.lease_until = Some(lease_until);
            Some(slot.command.clone())
        }))
    }

    async fn cancel_of_unusable_keys(&self, _now: DateTime<Utc>) -> Result<u64, DomainError> {
        Ok(0)
    }

    async fn start(&self, id: Uuid, worker: &str, at: DateTime<Utc>) -> Result<bool, DomainError> {
        Ok(self.state.change(|s| match s.commands.get_mut(&id) {
            Some(slot) if slot.held_by(worker) => {
                slot.command.started_at = Some(at);
                slot.command.attempts += 1;
                true
            }
            _ => false,
        }))
    }

    async fn renew(&self, id: Uuid, worker: &str, lease_until: DateTime<Utc>) -> Result<Option<bool>, DomainError> {
        Ok(self.state.change(|s| match s.commands.get_mut(&id) {
            Some(slot) if slot.held_by(worker) => {
                slot.lease_until = Some(lease_until);
                Some(slot.command.cancel_requested)
            }
            _ => None,
        }))
    }

    async fn finish(
        &self,
        id: Uuid,
        worker: &str,
        end: &CommandEnd,
        at: DateTime<Utc>,
        entry: &AuditEntry,
    ) -> Result<Option<Command>, DomainError> {
        if let Some(audit) = &self.audit
            && !audit.recorded().iter().any(|kept| kept.id == entry.id)
        {
            audit.record(entry, None).await?;
        }
        Ok(self.state.change(|s| {
            let slot = s.commands.get_mut(&id).filter(|slot| slot.held_by(worker))?;
            let c = &mut slot.command;
            c.status = end.status();
            c.exit_code = end.exit_code();
            if let CommandEnd::Ran(outcome) = end {
                c.stdout = Some(outcome.stdout.clone());
                c.stderr = Some(outcome.stderr.clone());
                c.stdout_truncated = outcome.stdout_truncated;
                c.stderr_truncated = outcome.stderr_truncated;
                c.stdout_omitted = outcome.stdout_omitted;
                c.stderr_omitted = outcome.stderr_omitted;
            }
            if let CommandEnd::Error(message) = end {
                c.error = Some(message.clone());
            }
            c.finished_at = Some(at);
            slot.unclaim();
            Some(slot.command.clone())
        }))
    }

    async fn release(&self, id: Uuid, worker: &str) -> Result<(), DomainError> {
        self.state.change(|s| {
            if let Some(slot) = s.commands.get_mut(&id).filter(|s| s.held_by(worker) && s.command.started_at.is_none())
            {
                slot.command.status = CommandStatus::Queued;
                slot.unclaim();
            }
        });
        self.work.notify_waiters();
        Ok(())
    }

    async fn cancel(&self, id: Uuid, at: DateTime<Utc>) -> Result<Option<(Command, CancelEffect)>, DomainError> {
        let raced = self.cancel_races.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        Ok(self.state.change(|s| {
            let slot = s.commands.get_mut(&id)?;
            let effect = match slot.command.status {
                _ if raced => CancelEffect::Unchanged,
                CommandStatus::Queued => {
                    slot.command.status = CommandStatus::Cancelled;
                    slot.command.finished_at = Some(at);
                    CancelEffect::Cancelled
                }
                CommandStatus::Running => {
                    slot.command.cancel_requested = true;
                    CancelEffect::Requested
                }
                _ => CancelEffect::Unchanged,
            };
            Some((slot.command.clone(), effect))
        }))
    }

    /// The audit entries are kept in `recovery_entries` (there is no audit log here).
    async fn recover_expired(
        &self,
        now: DateTime<Utc>,
        audit: RecoveryAudit<'_>,
    ) -> Result<Vec<Recovered>, DomainError> {
        let recovered = self.state.change(|s| {
            let mut recovered = Vec::new();
            for slot in s.commands.values_mut() {
                let expired =
                    slot.command.status == CommandStatus::Running && slot.lease_until.is_some_and(|l| l < now);
                if !expired {
                    continue;
                }
                slot.unclaim();
                let c = &mut slot.command;
                if c.started_at.is_none() {
                    c.status = CommandStatus::Queued;
                } else if c.attempts < c.max_attempts && !c.cancel_requested {
                    c.status = CommandStatus::Queued;
                    c.started_at = None;
                    recovered.push(Recovered::Retried(c.clone()));
                } else {
                    c.status = if c.cancel_requested { CommandStatus::Cancelled } else { CommandStatus::Failed };
                    c.error = Some("worker lost".into());
                    c.finished_at = Some(now);
                    recovered.push(Recovered::Lost(c.clone()));
                }
            }
            recovered
        });
        let entries: Vec<AuditEntry> = recovered.iter().map(audit).collect();
        self.recovery_entries.lock().unwrap().extend(entries);
        Ok(recovered)
    }

    async fn depth(&self) -> Result<Vec<(u8, u64)>, DomainError> {
        Ok(self.state.read(|s| {
            let mut depth = std::collections::BTreeMap::new();
            for slot in s.commands.values().filter(|slot| slot.command.status == CommandStatus::Queued) {
                *depth.entry(slot.command.priority).or_insert(0) += 1;
            }
            depth.into_iter().collect()
        }))
    }

    async fn wait_for_work(&self) {
        self.work.notified().await;
    }
}
