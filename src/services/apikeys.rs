//! Creating, authenticating, listing and revoking API keys.

use std::{net::IpAddr, sync::Arc};

use ipnet::IpNet;
use uuid::Uuid;

use super::{
    UsageTracker,
    key_watch::{Credential, Deadline, KeyHold, KeyWatch},
};
use crate::{
    domain::{
        ApiKey, ApiKeyChanges, ApiKeySecret, DomainError, FieldErrors, NewApiKey, Page, PageRequest, Scope,
        Unauthenticated,
    },
    ports::{ApiKeyRepo, Clock},
};

const MAX_NAME_CHARS: usize = 100;
const MAX_ALLOWED_IPS: usize = 100;
const MAX_RATE_LIMIT: u32 = 1_000_000;
/// Longest overlap of an old and a new secret after a rotation: a week.
pub const MAX_GRACE_SECONDS: u64 = 7 * 24 * 3600;

pub struct ApiKeyService {
    repo: Arc<dyn ApiKeyRepo>,
    clock: Arc<dyn Clock>,
    usage: UsageTracker,
    watch: Arc<KeyWatch>,
}

/// A key as a request presented it: the key, the credential, and when that stops working by
/// itself. What the request starts holds the credential (`ApiKeyService::hold`).
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub key: ApiKey,
    pub credential: Credential,
    pub deadline: Option<Deadline>,
}

impl ApiKeyService {
    /// `repo` may be a cache of `database`, which the watch of running work reads directly;
    /// `cache_ttl` bounds how long a key revoked elsewhere keeps working here, its running work
    /// included (see `KeyWatch`).
    pub fn new(
        repo: Arc<dyn ApiKeyRepo>,
        database: Arc<dyn ApiKeyRepo>,
        clock: Arc<dyn Clock>,
        cache_ttl: std::time::Duration,
    ) -> Self {
        let watch = Arc::new(KeyWatch::new(database, clock.clone(), cache_ttl));
        Self { usage: UsageTracker::new(repo.clone()), repo, clock, watch }
    }

    /// What ends the work of keys that may no longer act.
    pub fn watch(&self) -> &Arc<KeyWatch> {
        &self.watch
    }

    /// A hold for the work a request authenticated with `credential` starts: it ends when that
    /// credential may no longer act, `deadline` at the latest.
    pub fn hold(&self, credential: &Credential, deadline: Option<Deadline>) -> KeyHold {
        self.watch.hold(Some(credential), deadline)
    }

    pub fn usage(&self) -> &UsageTracker {
        &self.usage
    }

    /// Creates a key and returns it with its secret, which is not stored and cannot be shown again.
    /// `granter` is the key making the request (`None` for the command line): it cannot hand out
    /// scopes it does not hold.
    pub async fn create(
        &self,
        granter: Option<&ApiKey>,
        new: NewApiKey,
    ) -> Result<(ApiKey, ApiKeySecret), DomainError> {
        let key = self.validate(granter, new)?;
        let secret = ApiKeySecret::generate();
        let key = ApiKey { prefix: secret.display_prefix(), ..key };
        self.repo.insert(&key, &secret.hash()).await?;
        Ok((key, secret))
    }

    fn validate(&self, granter: Option<&ApiKey>, new: NewApiKey) -> Result<ApiKey, DomainError> {
        let now = self.clock.now();
        let mut key = ApiKey {
            id: Uuid::new_v4(),
            name: String::new(),
            prefix: String::new(),
            scopes: vec![],
            allowed_ips: vec![],
            rate_limit_per_minute: None,
            quotas: crate::domain::KeyQuotas::default(),
            expires_at: None,
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        };
        let changes = ApiKeyChanges {
            name: Some(new.name),
            scopes: Some(new.scopes),
            allowed_ips: Some(Some(new.allowed_ips)),
            rate_limit_per_minute: Some(new.rate_limit_per_minute),
            expires_at: Some(new.expires_at),
            quotas: Some(new.quotas),
        };
        self.apply(granter, &mut key, changes)?;
        Ok(key)
    }

    /// Applies `changes` to `key`, checking each field and reporting every problem at once.
    fn apply(&self, granter: Option<&ApiKey>, key: &mut ApiKey, changes: ApiKeyChanges) -> Result<(), DomainError> {
        let mut errors = FieldErrors::default();
        if let Some(name) = changes.name {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
                errors.add("name", format!("must be 1 to {MAX_NAME_CHARS} characters"));
            }
            key.name = name.to_owned();
        }
        if let Some(mut scopes) = changes.scopes {
            scopes.sort();
            scopes.dedup();
            if scopes.is_empty() {
                errors.add("scopes", "must name at least one scope");
            }
            if let Some(granter) = granter
                && let Some(extra) = scopes.iter().find(|scope| !granter.allows(**scope))
            {
                errors
                    .add("scopes", format!("cannot grant {}, which the requesting key does not hold", extra.as_str()));
            }
            key.scopes = scopes;
        }
        if let Some(raw) = changes.allowed_ips {
            key.allowed_ips = parse_allowed_ips(&raw.unwrap_or_default(), &mut errors);
        }
        if let Some(limit) = changes.rate_limit_per_minute {
            if limit.is_some_and(|l| !(1..=MAX_RATE_LIMIT).contains(&l)) {
                errors.add("rate_limit_per_minute", format!("must be between 1 and {MAX_RATE_LIMIT}"));
            }
            key.rate_limit_per_minute = limit;
        }
        if let Some(quotas) = changes.quotas {
            quotas.check(&mut errors);
            key.quotas = quotas;
        }
        if let Some(expires_at) = changes.expires_at {
            if expires_at.is_some_and(|at| at <= self.clock.now()) {
                errors.add("expires_at", "must be in the future");
            }
            key.expires_at = expires_at;
        }
        errors.into_result()
    }

    /// Changes a key. A revoked key cannot be changed (`Conflict`): revocation is final. The
    /// caller must hold every scope the key has (and, as at creation, every scope it gets).
    pub async fn update(&self, granter: &ApiKey, id: Uuid, changes: ApiKeyChanges) -> Result<ApiKey, DomainError> {
        let mut key = self.get(id).await?;
        may_manage(granter, &key)?;
        if key.revoked_at.is_some() {
            return Err(DomainError::Conflict("API key is revoked and cannot be changed".into()));
        }
        self.apply(Some(granter), &mut key, changes)?;
        if !self.repo.update(&key).await? {
            return Err(DomainError::not_found("API key", id.to_string()));
        }
        Ok(key)
    }

    /// Gives the key a new secret. The old one keeps working for `grace_seconds` (0 = stops now),
    /// so clients can switch over without an outage. Only a caller holding every scope of the
    /// key may: the new secret is the key's whole power.
    pub async fn rotate(
        &self,
        actor: &ApiKey,
        id: Uuid,
        grace_seconds: u64,
    ) -> Result<(ApiKey, ApiKeySecret), DomainError> {
        if grace_seconds > MAX_GRACE_SECONDS {
            return Err(DomainError::invalid("grace_seconds", format!("must be at most {MAX_GRACE_SECONDS}")));
        }
        let key = self.get(id).await?;
        may_manage(actor, &key)?;
        if key.revoked_at.is_some() {
            return Err(DomainError::Conflict("API key is revoked and cannot be rotated".into()));
        }
        let secret = ApiKeySecret::generate();
        let grace = chrono::Duration::seconds(i64::try_from(grace_seconds).unwrap_or(i64::MAX));
        let prefix = secret.display_prefix();
        if !self.repo.rotate(id, &secret.hash(), &prefix, self.clock.now() + grace).await? {
            return Err(DomainError::not_found("API key", id.to_string()));
        }
        Ok((ApiKey { prefix, ..key }, secret))
    }

    /// Resolves the `X-API-Key` header to a usable key, checking shape before touching storage,
    /// then revocation, expiry, rotation grace and the key's IP allowlist.
    pub async fn authenticate(
        &self,
        header: Option<&str>,
        client_ip: Option<IpAddr>,
    ) -> Result<Authenticated, DomainError> {
        let raw = header.ok_or(DomainError::Unauthenticated(Unauthenticated::Missing))?;
        let secret = ApiKeySecret::parse(raw).map_err(DomainError::Unauthenticated)?;
        let hash = secret.hash();
        let stored =
            self.repo.find_by_hash(&hash).await?.ok_or(DomainError::Unauthenticated(Unauthenticated::Unknown))?;
        if !stored.hash.matches(&hash) {
            return Err(DomainError::Unauthenticated(Unauthenticated::Unknown));
        }
        if stored.secret_valid_until.is_some_and(|until| until <= self.clock.now()) {
            return Err(DomainError::Unauthenticated(Unauthenticated::Superseded));
        }
        let key = self.admit(stored.key, client_ip)?;
        let credential = Credential { key_id: key.id, hash: Some(hash) };
        Ok(Authenticated { deadline: Deadline::of(&key, stored.secret_valid_until), credential, key })
    }

    /// The key a terminal ticket was issued to, if it may still act: not revoked or expired
    /// since, and `client_ip` in its allowlist (the ticket's user must be where the key may be).
    pub async fn authenticate_ticket_holder(
        &self,
        id: Uuid,
        client_ip: Option<IpAddr>,
    ) -> Result<Authenticated, DomainError> {
        let key = self.repo.get(id).await?.ok_or(DomainError::Unauthenticated(Unauthenticated::Unknown))?;
        let key = self.admit(key, client_ip)?;
        Ok(Authenticated {
            deadline: Deadline::of(&key, None),
            credential: Credential { key_id: key.id, hash: None },
            key,
        })
    }

    /// The checks every credential of a key passes: usable now, and from an allowed address.
    fn admit(&self, key: ApiKey, client_ip: Option<IpAddr>) -> Result<ApiKey, DomainError> {
        let now = self.clock.now();
        key.check_usable(now).map_err(DomainError::Unauthenticated)?;
        if !key.allowed_ips.is_empty()
            && !client_ip.is_some_and(|ip| key.allowed_ips.iter().any(|net| net.contains(&ip)))
        {
            return Err(DomainError::Forbidden("client IP is not in this API key's allowlist".into()));
        }
        self.usage.record(key.id, now);
        Ok(key)
    }

    pub async fn get(&self, id: Uuid) -> Result<ApiKey, DomainError> {
        let mut key = self.repo.get(id).await?.ok_or_else(|| DomainError::not_found("API key", id.to_string()))?;
        self.usage.overlay(&mut key);
        Ok(key)
    }

    pub async fn list(&self, page: &PageRequest) -> Result<Page<ApiKey>, DomainError> {
        let mut page = self.repo.list(page).await?;
        page.items.iter_mut().for_each(|key| self.usage.overlay(key));
        Ok(page)
    }

    /// Revokes the key. Revoking a revoked key succeeds again (idempotent DELETE). Only a caller
    /// holding every scope of the key may. What the key runs on this replica ends now; on other
    /// replicas at their next sweep.
    pub async fn revoke(&self, actor: &ApiKey, id: Uuid) -> Result<(), DomainError> {
        may_manage(actor, &self.get(id).await?)?;
        if self.repo.revoke(id, self.clock.now()).await? {
            self.watch.end_now(id, Unauthenticated::Revoked);
            Ok(())
        } else {
            Err(DomainError::not_found("API key", id.to_string()))
        }
    }

    /// Makes sure someone can log in on a fresh install.
    ///
    /// With `supplied`, that secret is stored (hashed) as an `admin` key unless it already is:
    /// applied at every start, it stays revoked once an operator revokes it. Without it, and only
    /// if no key exists at all, a new `admin` key is generated and returned so it can be shown once.
    pub async fn bootstrap(&self, supplied: Option<&ApiKeySecret>) -> Result<Option<ApiKeySecret>, DomainError> {
        let (secret, generated) = match supplied {
            Some(secret) => (secret.clone(), false),
            None => (ApiKeySecret::generate(), true),
        };
        let key = ApiKey {
            id: Uuid::new_v4(),
            name: if generated { "admin" } else { "bootstrap" }.into(),
            prefix: secret.display_prefix(),
            scopes: vec![Scope::Admin],
            allowed_ips: vec![],
            rate_limit_per_minute: None,
            quotas: crate::domain::KeyQuotas::default(),
            expires_at: None,
            created_at: self.clock.now(),
            last_used_at: None,
            revoked_at: None,
        };
        if generated {
            let stored = self.repo.insert_if_none(&key, &secret.hash()).await?;
            Ok(stored.then_some(secret))
        } else {
            self.repo.insert_if_hash_absent(&key, &secret.hash()).await?;
            Ok(None)
        }
    }
}

/// A key acts on another key only when it holds every scope that key has: otherwise a key
/// limited to `keys:admin` could rotate an `admin` key and keep its new secret, or strip its
/// allowlist and expiry.
fn may_manage(actor: &ApiKey, key: &ApiKey) -> Result<(), DomainError> {
    match key.scopes.iter().find(|scope| !actor.allows(**scope)) {
        None => Ok(()),
        Some(scope) => Err(DomainError::Forbidden(format!(
            "this API key cannot manage a key holding {}, which it does not hold itself",
            scope.as_str()
        ))),
    }
}

/// The net an allowlist entry stands for, as client addresses are compared: an IPv4-mapped
/// IPv6 entry (`::ffff:127.0.0.1`) is the IPv4 net it maps, since clients reach us as IPv4.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map(IpNet::V4).unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

fn parse_allowed_ips(raw: &[String], errors: &mut FieldErrors) -> Vec<IpNet> {
    if raw.len() > MAX_ALLOWED_IPS {
        errors.add("allowed_ips", format!("at most {MAX_ALLOWED_IPS} entries"));
        return vec![];
    }
    let mut nets = Vec::with_capacity(raw.len());
    for entry in raw {
        match entry.parse::<IpNet>().or_else(|_| entry.parse::<IpAddr>().map(IpNet::from)) {
            Ok(net) => nets.push(canonical_net(net).trunc()),
            Err(_) => errors.add("allowed_ips", format!("{entry:?} is not an IP address or CIDR")),
        }
    }
    nets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_ips_accept_cidrs_and_single_addresses() {
        let mut errors = FieldErrors::default();
        let nets = parse_allowed_ips(&["10.1.2.3/8".into(), "::1".into(), "192.168.0.7".into()], &mut errors);
        assert!(errors.0.is_empty());
        let shown: Vec<_> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "::1/128", "192.168.0.7/32"]);
        let mapped = parse_allowed_ips(&["::ffff:127.0.0.1".into(), "::ffff:10.0.0.0/104".into()], &mut errors);
        let shown: Vec<_> = mapped.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["127.0.0.1/32", "10.0.0.0/8"], "IPv4-mapped entries match IPv4 clients");
        parse_allowed_ips(&["nope".into()], &mut errors);
        assert!(errors.0.contains_key("allowed_ips"));
    }
}
