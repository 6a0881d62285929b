//! `CachedProjectSource`: the project list and single projects of the local executor (folders),
//! each answer fresh for the given time (at most a second; `CACHE_TTL` if shorter).
//!
//! A folder created under the projects root shows up once the cached answer is older than that,
//! and a cache hit costs no trip to the blocking pool. Freshness is judged by our `Clock`, so
//! tests move time instead of waiting; moka's own time-to-live only bounds memory. A missing
//! project is cached too: a client retrying a wrong id must not turn into folder reads.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use moka::future::Cache;

use crate::{
    domain::{DomainError, Project, ProjectId},
    ports::{Clock, ProjectSource},
    telemetry::metrics::{CACHE_REQUESTS_TOTAL, FixedCounter},
};

const MAX_ENTRIES: u64 = 10_000;

#[derive(Clone)]
struct Fresh<T> {
    value: T,
    at: DateTime<Utc>,
}

pub struct CachedProjectSource {
    inner: Arc<dyn ProjectSource>,
    ttl: chrono::Duration,
    clock: Arc<dyn Clock>,
    all: Cache<(), Fresh<Vec<Project>>>,
    one: Cache<ProjectId, Fresh<Option<Project>>>,
}

impl CachedProjectSource {
    pub fn new(inner: Arc<dyn ProjectSource>, ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        let memory_ttl = ttl.max(Duration::from_secs(1));
        Self {
            inner,
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
            clock,
            all: Cache::builder().max_capacity(1).time_to_live(memory_ttl).build(),
            one: Cache::builder().max_capacity(MAX_ENTRIES).time_to_live(memory_ttl).build(),
        }
    }

    fn fresh<T: Clone>(&self, entry: Option<Fresh<T>>) -> Option<T> {
        let value = entry.filter(|e| self.clock.now() - e.at < self.ttl).map(|e| e.value);
        static HITS: FixedCounter =
            FixedCounter::new(|| metrics::counter!(CACHE_REQUESTS_TOTAL, "cache" => "projects", "result" => "hit"));
        static MISSES: FixedCounter =
            FixedCounter::new(|| metrics::counter!(CACHE_REQUESTS_TOTAL, "cache" => "projects", "result" => "miss"));
        if value.is_some() { &HITS } else { &MISSES }.increment(1);
        value
    }
}

#[async_trait]
impl ProjectSource for CachedProjectSource {
    async fn list(&self) -> Result<Vec<Project>, DomainError> {
        if let Some(projects) = self.fresh(self.all.get(&()).await) {
            return Ok(projects);
        }
        let at = self.clock.now();
        let projects = self.inner.list().await?;
        self.all.insert((), Fresh { value: projects.clone(), at }).await;
        Ok(projects)
    }

    async fn get(&self, id: &ProjectId) -> Result<Option<Project>, DomainError> {
        if let Some(project) = self.fresh(self.one.get(id).await) {
            return Ok(project);
        }
        let at = self.clock.now();
        let project = self.inner.get(id).await?;
        self.one.insert(id.clone(), Fresh { value: project.clone(), at }).await;
        Ok(project)
    }
}
