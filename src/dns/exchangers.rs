//! RFC 5321 §5 and RFC 7505 over a domain's MX records: the order to try its hosts in, the
//! null MX, and the backup-MX rule.
//!
//! Pure: the records come in, the hosts to try come out, and the only chance is the shuffle of
//! equal preferences, drawn from the caller's generator.

use crate::address::Domain;

/// One MX record as published: the exchange is the name in ASCII without its final dot, or `.`
/// for the root (the null MX target). It may not be a usable host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    pub preference: u16,
    pub exchange: String,
}

impl MxRecord {
    /// True for the RFC 7505 null MX target `.`.
    pub fn is_root(&self) -> bool {
        self.exchange == "."
    }
}

/// A host to deliver to, with the preference it was published at (0 for an implicit MX).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailExchanger {
    pub preference: u16,
    pub host: Domain,
}

/// Where mail for a domain goes, after RFC 5321 §5 and RFC 7505.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxList {
    /// Hosts from MX records, in the order to try them; never empty.
    Exchangers(Vec<MailExchanger>),
    /// No MX records, but the domain has an address: it is its own mail host.
    Implicit(MailExchanger),
    /// RFC 7505 null MX: the domain accepts no mail; fail at once, do not retry.
    NullMx,
    /// This host is the best (lowest preference) exchanger listed: there is no better host to
    /// relay to. Mail for the domain must stay here (a backup MX holds it for ETRN) or is
    /// delivered locally.
    ThisHostIsBest { preference: u16 },
}

impl MxList {
    /// The hosts to try, in order; empty for a null MX or when this host is the best MX.
    pub fn hosts(&self) -> &[MailExchanger] {
        match self {
            MxList::Exchangers(hosts) => hosts,
            MxList::Implicit(host) => std::slice::from_ref(host),
            MxList::NullMx | MxList::ThisHostIsBest { .. } => &[],
        }
    }
}

/// The outcome of applying RFC 5321 §5 to a set of MX records, before any implicit-MX lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ordered {
    /// Usable hosts in the order to try them; empty when the records held no usable name.
    Hosts(Vec<MailExchanger>),
    NullMx,
    ThisHostIsBest {
        preference: u16,
    },
}

/// Sorts MX records by preference and shuffles each group of equal preference with `rng`, drops
/// targets that are not host names (the root, names that fail [`Domain`] validation), recognises
/// the null MX, and applies the backup-MX rule for `this_host`'s names.
pub fn order_exchangers(
    records: &[MxRecord],
    this_host: &[Domain],
    rng: &mut fastrand::Rng,
) -> Ordered {
    if let [only] = records
        && only.is_root()
    {
        return Ordered::NullMx;
    }
    let mut hosts: Vec<MailExchanger> = records
        .iter()
        .filter(|record| !record.is_root())
        .filter_map(|record| {
            let host = Domain::parse(&record.exchange).ok()?;
            Some(MailExchanger {
                preference: record.preference,
                host,
            })
        })
        .filter(|mx| !mx.host.is_literal())
        .collect();
    hosts.sort_by_key(|mx| mx.preference);
    shuffle_equal_preferences(&mut hosts, rng);

    let own_best = hosts
        .iter()
        .filter(|mx| this_host.contains(&mx.host))
        .map(|mx| mx.preference)
        .min();
    if let Some(own) = own_best {
        hosts.retain(|mx| mx.preference < own);
        if hosts.is_empty() {
            return Ordered::ThisHostIsBest { preference: own };
        }
    }
    Ordered::Hosts(hosts)
}

fn shuffle_equal_preferences(hosts: &mut [MailExchanger], rng: &mut fastrand::Rng) {
    let mut start = 0;
    while start < hosts.len() {
        let preference = hosts[start].preference;
        let end = hosts[start..]
            .iter()
            .position(|mx| mx.preference != preference)
            .map_or(hosts.len(), |offset| start + offset);
        rng.shuffle(&mut hosts[start..end]);
        start = end;
    }
}
