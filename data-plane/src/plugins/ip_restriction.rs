//! ip-restriction (KONG.md §3.12; K:kong/plugins/ip-restriction/handler.lua): refuses clients
//! by address. `deny` is checked first and wins over `allow`; with an `allow` list, every
//! address not on it is refused.
//!
//! The address is [`Req::client_ip`], already resolved through trusted proxies, so a client
//! cannot choose it with its own X-Forwarded-For (SECURITY.md §2.5).
//!
//! IPv4 and IPv4-mapped IPv6 (`::ffff:a.b.c.d`) are one address here: a mapped client matches
//! IPv4 rules, and an IPv4 client matches an IPv6 rule covering its mapped form. Otherwise a
//! dual-stack listener would let the same host past a rule depending on how it connected.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::StatusCode;
use ipnet::{IpNet, Ipv6Net};
use portico_common::plugins::ip_restriction::Config;

use super::{BuildEnv, Ctx, Flow, Plugin, Reply, Req};

/// The ip-restriction plugin.
#[derive(Debug)]
pub struct IpRestriction {
    /// `None` when `deny` is unset or empty (Kong skips an empty list).
    deny: Option<Ranges>,
    /// `None` when `allow` is unset or empty: everything not denied passes.
    allow: Option<Ranges>,
    status: StatusCode,
    /// `message`; `None` is Kong's default, which names the address.
    message: Option<String>,
}

/// A list of networks as sorted, merged, inclusive address ranges, so a lookup is a binary
/// search whatever the list's size, and allocates nothing.
#[derive(Debug, Default, PartialEq)]
struct Ranges {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

/// `::ffff:0:0/96`, where IPv4-mapped addresses live.
const MAPPED_PREFIX: u128 = 0xffff_0000_0000;
const MAPPED_LEN: u8 = 96;

impl Ranges {
    /// The ranges of `nets`; IPv6 networks are also projected onto IPv4 where they cover
    /// IPv4-mapped addresses.
    fn new(nets: &[IpNet]) -> Ranges {
        let mut r = Ranges::default();
        for net in nets {
            match net {
                IpNet::V4(n) => r.v4.push((n.network().into(), n.broadcast().into())),
                IpNet::V6(n) => {
                    r.v6.push((n.network().into(), n.broadcast().into()));
                    if let Some(v4) = mapped_part(n) {
                        r.v4.push(v4);
                    }
                }
            }
        }
        Ranges {
            v4: merge(r.v4, |a| a.saturating_add(1)),
            v6: merge(r.v6, |a| a.saturating_add(1)),
        }
    }

    /// Whether `ip` (already canonical: never IPv4-mapped) is in one of the ranges.
    fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => in_ranges(&self.v4, u32::from(a)),
            IpAddr::V6(a) => in_ranges(&self.v6, u128::from(a)),
        }
    }
}

/// The IPv4 addresses whose mapped form `net` covers, as a range.
fn mapped_part(net: &Ipv6Net) -> Option<(u32, u32)> {
    let start = u128::from(net.network());
    if net.prefix_len() >= MAPPED_LEN {
        // Inside the mapped block (or disjoint from it): the low 32 bits are the IPv4 range.
        let end = u128::from(net.broadcast());
        return (start >> 32 == MAPPED_PREFIX >> 32).then_some((start as u32, end as u32));
    }
    // Shorter than /96: it covers either the whole mapped block (`::/0`, `::/64`) or none of it.
    let mapped_block = Ipv6Net::new(Ipv6Addr::from(MAPPED_PREFIX), MAPPED_LEN).ok()?;
    net.contains(&mapped_block)
        .then_some((0, u32::from(Ipv4Addr::BROADCAST)))
}

/// Sorts `ranges` and merges overlapping or adjacent ones (`succ` is the next address).
fn merge<T: Ord + Copy>(mut ranges: Vec<(T, T)>, succ: fn(T) -> T) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some((_, last_end)) if start <= succ(*last_end) => {
                if end > *last_end {
                    *last_end = end;
                }
            }
            _ => out.push((start, end)),
        }
    }
    out.shrink_to_fit();
    out
}

/// Whether `x` is in one of the sorted, disjoint `ranges`.
fn in_ranges<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    // The last range starting at or before `x` is the only one that can hold it.
    let i = ranges.partition_point(|(start, _)| *start <= x);
    i > 0 && x <= ranges[i - 1].1
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A list that restricts anything: Kong treats an empty list as absent.
fn ranges(list: Option<&[IpNet]>) -> Option<Ranges> {
    list.filter(|l| !l.is_empty()).map(Ranges::new)
}

impl Plugin for IpRestriction {
    const NAME: &'static str = "ip-restriction";
    type Config = Config;

    fn build(config: Config, _env: &BuildEnv<'_>) -> Result<Self, String> {
        let status = match config.status {
            None => StatusCode::FORBIDDEN,
            Some(s) => {
                StatusCode::from_u16(s).map_err(|_| format!("status {s} is not an HTTP status"))?
            }
        };
        let deny = ranges(config.deny.as_deref());
        let allow = ranges(config.allow.as_deref());
        if deny.is_none() && allow.is_none() {
            // The loader refuses this already; failing here keeps an unchecked config from
            // turning into a plugin that silently lets everyone in.
            return Err("at least one of 'allow' and 'deny' must be non-empty".to_owned());
        }
        Ok(IpRestriction {
            deny,
            allow,
            status,
            message: config.message,
        })
    }

    async fn access<'r>(&'r self, req: &mut Req<'_>, _ctx: &mut Ctx<'r>) -> Flow {
        let ip = canonical(req.client_ip);
        let denied = self.deny.as_ref().is_some_and(|d| d.contains(ip));
        let not_allowed = || self.allow.as_ref().is_some_and(|a| !a.contains(ip));
        if !denied && !not_allowed() {
            return Flow::Continue;
        }
        let message = match &self.message {
            Some(m) => m.clone(),
            None => format!("IP address not allowed: {ip}"),
        };
        Flow::Respond(Reply::error(self.status, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(nets: &[&str]) -> Ranges {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
        Ranges::new(&nets)
    }

    fn has(r: &Ranges, ip: &str) -> bool {
        r.contains(canonical(ip.parse().unwrap()))
    }

    #[test]
    fn ranges_merge_and_match_at_the_edges() {
        let list = r(&[
            "10.0.0.0/24",
            "10.0.1.0/24",
            "10.0.0.5/32",
            "192.168.1.1/32",
        ]);
        assert_eq!(list.v4.len(), 2, "adjacent and contained networks merge");
        assert!(has(&list, "10.0.0.0"));
        assert!(has(&list, "10.0.1.255"));
        assert!(!has(&list, "10.0.2.0"));
        assert!(!has(&list, "9.255.255.255"));
        assert!(has(&list, "192.168.1.1"));
        assert!(!has(&list, "192.168.1.2"));
        assert!(!has(&list, "::1"));
    }

    #[test]
    fn mapped_addresses_and_v4_are_one_address() {
        let v4_rule = r(&["10.0.0.0/8"]);
        assert!(has(&v4_rule, "::ffff:10.1.2.3"));
        let mapped_rule = r(&["::ffff:10.0.0.0/104"]);
        assert!(has(&mapped_rule, "10.1.2.3"));
        assert!(!has(&mapped_rule, "11.0.0.1"));
        let everything = r(&["::/0"]);
        assert!(has(&everything, "1.2.3.4") && has(&everything, "2001:db8::1"));
        let unrelated = r(&["2001:db8::/32"]);
        assert!(!has(&unrelated, "1.2.3.4"));
        assert!(unrelated.v4.is_empty());
    }

    #[test]
    fn full_ranges_do_not_overflow() {
        let list = r(&["0.0.0.0/0", "255.255.255.255/32", "::/0"]);
        assert_eq!(list.v4, vec![(0, u32::MAX)]);
        assert!(has(&list, "255.255.255.255") && has(&list, "ffff::1"));
    }
}
