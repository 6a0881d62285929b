//! A cap on the connections one client address may hold open (`RDEV_MAX_CONNECTIONS_PER_IP`),
//! so that one client, however many sockets it opens, leaves the rest of the server's
//! connections to everyone else. Trusted proxies (`RDEV_TRUSTED_PROXIES`) carry many clients'
//! connections and are not capped this way.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use ipnet::IpNet;

pub struct PerIp {
    limit: usize,
    exempt: Vec<IpNet>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection of an address, counted until dropped.
pub struct Slot {
    of: Option<(Arc<PerIp>, IpAddr)>,
}

impl PerIp {
    pub fn new(limit: usize, exempt: Vec<IpNet>) -> Arc<Self> {
        Arc::new(Self { limit, exempt, open: Mutex::default() })
    }

    /// A slot for a connection from `ip`, unless it holds its most already.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let ip = canonical(ip);
        if self.exempt.iter().any(|net| net.contains(&ip)) {
            return Some(Slot { of: None });
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Slot { of: Some((self.clone(), ip)) })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some((per_ip, ip)) = self.of.take() else { return };
        let mut open = per_ip.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&ip);
            }
        }
    }
}

/// An IPv4 address mapped into IPv6 counts as itself.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_its_limit_and_proxies_are_exempt() {
        let per_ip = PerIp::new(2, vec!["10.0.0.0/8".parse().unwrap()]);
        let (client, other, proxy): (IpAddr, IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap(), "10.1.2.3".parse().unwrap());
        let held = [per_ip.admit(client).unwrap(), per_ip.admit(client).unwrap()];
        assert!(per_ip.admit(client).is_none());
        assert!(per_ip.admit("::ffff:192.0.2.1".parse().unwrap()).is_none(), "mapped is the same address");
        assert!(per_ip.admit(other).is_some());
        let proxied: Vec<_> = (0..10).map(|_| per_ip.admit(proxy)).collect();
        assert!(proxied.iter().all(Option::is_some));
        drop(held);
        assert!(per_ip.admit(client).is_some(), "given back when closed");
    }
}
