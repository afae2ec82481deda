//! The plan of a run: what is due, grouped by destination, one group per connection.
//!
//! A run over the whole queue takes it in batches (see `queue::Batches`), oldest first, and plans
//! and delivers one batch before it reads the next, so that its memory is one batch's however
//! long the queue; a queue no longer than `queue_run_batch` is one batch. A run with `-R` has one
//! pass, over the messages the per-domain record names.
//!
//! A plan reads every envelope of its pass once, without locking (a few threads read ahead; the
//! advisory index is never consulted). On the way it expires what is too old, warns the senders
//! of what is late (`warning`), dates from now what arrived in the future, and reports what
//! cannot be used. What is due is grouped by destination, so that one connection carries every
//! message for it; a large group is split so that up to `-j` connections work on it in parallel,
//! never fewer than `MIN_BATCH` messages each, and the biggest work goes first. Messages another
//! run held are grouped again for one more try at the end of the batch.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::maillog::MailLog;
use crate::queue::{Batches, Place, Queue, QueueError, QueueId, SWEEP_GRACE, Scan, Unusable};
use crate::route::RelayTarget;

use super::RunSummary;
use super::expiry::{date_from_now, expire};
use super::outcome::{quarantine, skip};
use super::policy::{Destination, Policy};
use super::retry;
use super::warning::warn_if_due;

/// Messages per connection below which a destination is not split across connections.
const MIN_BATCH: usize = 50;

/// One connection's work: messages for one destination.
pub(super) struct Job {
    pub(super) destination: Destination,
    pub(super) relay: Option<RelayTarget>,
    pub(super) ids: Vec<QueueId>,
}

/// The passes of a run, each planned and delivered before the next is read.
pub(super) enum Passes<'q> {
    /// `-R`: the one pass over what the per-domain record names (or, when it cannot be
    /// believed, over every envelope, which rebuilds it).
    Named(Option<Box<Scan<'q>>>),
    /// Everything else: the active messages, a batch at a time.
    Whole(Batches<'q>),
}

impl<'q> Passes<'q> {
    /// Begins a run's passes. Sweeping reads all of `data/`, so only a run over the whole queue
    /// does it.
    pub(super) fn begin(queue: &'q Queue, policy: &Policy<'_>) -> Result<Passes<'q>, QueueError> {
        let domains = &policy.options.selection.domains;
        if domains.is_empty() {
            queue.sweep_orphans(SWEEP_GRACE)?;
            let size = policy.config.queue_run_batch;
            return Ok(Passes::Whole(queue.scan_active_in_batches(size)));
        }
        Ok(Passes::Named(Some(Box::new(queue.scan_domains(domains)?))))
    }

    pub(super) fn next(&mut self) -> Result<Option<Scan<'q>>, QueueError> {
        match self {
            Passes::Named(scan) => Ok(scan.take().map(|scan| *scan)),
            Passes::Whole(batches) => batches.next_batch(),
        }
    }

    /// The active messages of the batches not yet read, for a run that stops before them.
    pub(super) fn untaken(&self) -> Result<usize, QueueError> {
        match self {
            Passes::Named(_) => Ok(0),
            Passes::Whole(batches) => batches.untaken(),
        }
    }
}

/// Reads every envelope of `scan` once, expires what is too old and groups what is due by
/// destination.
pub(super) fn plan(
    queue: &Queue,
    scan: &Scan<'_>,
    policy: &Policy<'_>,
    log: &MailLog,
    summary: &mut RunSummary,
) -> Result<Vec<Job>, QueueError> {
    let selection = &policy.options.selection;
    let mut groups: HashMap<Destination, Job> = HashMap::new();
    // Envelopes are read ahead on a few threads; each is handled here, in queue order.
    let active = |_, place| place == Place::Active;
    scan.for_each_where(&active, |inspection| -> Result<(), QueueError> {
        let id = inspection.id;
        let envelope = match inspection.envelope {
            Ok(envelope) => envelope,
            // Whether it is wanted cannot be known; unless -I rules it out, it is reported.
            Err(_) if !selection.selects_id(id.as_str()) => return Ok(()),
            Err(Unusable::Damaged(reason)) => {
                quarantine(queue, id, &reason, log, summary);
                return Ok(());
            }
            Err(Unusable::Inaccessible(reason)) => {
                skip(id, &reason, log, summary);
                return Ok(());
            }
        };
        if !policy.size_selected(&envelope) {
            return Ok(());
        }
        if envelope.arrival > policy.now {
            date_from_now(queue, id, envelope.arrival, policy, log);
        }
        let expired = retry::expired_recipients(policy.config, &envelope, policy.now);
        if selection.is_everything() || selection.selects(&envelope) {
            if !expired.is_empty() {
                expire(queue, id, policy, log, summary);
            }
            warn_if_due(queue, id, &envelope, policy, log);
        }
        for index in 0..envelope.recipients.len() {
            // An expired recipient is never attempted, whether or not its expiry was recorded.
            if expired.contains(&index) || !policy.wants(&envelope, index) {
                continue;
            }
            let (destination, relay) = policy.destination(envelope.recipients[index].domain());
            let job = groups.entry(destination.clone()).or_insert_with(|| Job {
                destination,
                relay: relay.cloned(),
                ids: Vec::new(),
            });
            if job.ids.last() != Some(&id) {
                job.ids.push(id);
            }
        }
        Ok(())
    })?;
    match scan.record_rebuild() {
        Some((why, Some(Ok(())))) => log.info(&format!(
            "per-domain record rebuilt from every envelope ({why})"
        )),
        Some((why, Some(Err(e)))) => log.warning(&format!(
            "per-domain record not rebuilt ({why}): {e}; runs with -R read the whole queue until it is"
        )),
        _ => {}
    }
    Ok(split(
        groups.into_values().collect(),
        policy.options.jobs.max(1),
    ))
}

/// Splits big destinations so `jobs` connections can share them; biggest work first.
fn split(groups: Vec<Job>, jobs: usize) -> Vec<Job> {
    let mut out = Vec::new();
    for group in groups {
        let size = group.ids.len().div_ceil(jobs).max(MIN_BATCH);
        for chunk in group.ids.chunks(size) {
            out.push(Job {
                destination: group.destination.clone(),
                relay: group.relay.clone(),
                ids: chunk.to_vec(),
            });
        }
    }
    out.sort_by_key(|job| std::cmp::Reverse(job.ids.len()));
    out
}

pub(super) fn regroup(busy: Vec<(Destination, Option<RelayTarget>, QueueId)>) -> Vec<Job> {
    let mut groups: HashMap<Destination, Job> = HashMap::new();
    for (destination, relay, id) in busy {
        groups
            .entry(destination.clone())
            .or_insert_with(|| Job {
                destination,
                relay,
                ids: Vec::new(),
            })
            .ids
            .push(id);
    }
    groups.into_values().collect()
}

/// Messages another run held when this one came to them, with where they go.
pub(super) type Busy = Mutex<Vec<(Destination, Option<RelayTarget>, QueueId)>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Domain;
    use crate::config::Config;
    use crate::delivery::RunOptions;
    use crate::delivery::testing::{fixture, policy};

    /// Plans every pass of a run, as a run does, without delivering anything.
    fn plan_every_pass(
        queue: &Queue,
        policy: &Policy<'_>,
        log: &MailLog,
        summary: &mut RunSummary,
    ) -> Vec<Job> {
        let mut passes = Passes::begin(queue, policy).unwrap();
        let mut jobs = Vec::new();
        while let Some(scan) = passes.next().unwrap() {
            jobs.extend(plan(queue, &scan, policy, log, summary).unwrap());
        }
        jobs
    }

    /// Distinct ids in queue order.
    fn ids(count: usize) -> Vec<QueueId> {
        (0..count)
            .map(|n| QueueId::parse(&format!("1xWNve{n:08}")).unwrap())
            .collect()
    }

    fn job(domain: &str, ids: Vec<QueueId>) -> Job {
        Job {
            destination: Destination::Domain(domain.into()),
            relay: None,
            ids,
        }
    }

    #[test]
    fn split_shares_big_destinations_and_keeps_small_ones_whole() {
        #[rustfmt::skip]
        let cases: &[(&str, &[usize], usize, &[usize])] = &[
            // (why, messages per destination, -j, messages per connection)
            ("nothing", &[], 4, &[]),
            ("an empty destination", &[0], 4, &[]),
            ("small, one connection", &[10], 4, &[10]),
            ("one connection asked for", &[120], 1, &[120]),
            ("never below the batch", &[99], 8, &[50, 49]),
            ("exactly the batch per connection", &[200], 4, &[50, 50, 50, 50]),
            ("over the batch, shared evenly", &[201], 4, &[51, 51, 51, 48]),
            ("an odd count", &[101], 2, &[51, 50]),
            ("biggest work first", &[30, 120], 3, &[50, 50, 30, 20]),
        ];
        for &(why, sizes, jobs, expected) in cases {
            let groups: Vec<Job> = sizes
                .iter()
                .enumerate()
                .map(|(n, &size)| job(&format!("d{n}.test"), ids(size)))
                .collect();
            let originals: Vec<(Destination, Vec<QueueId>)> = groups
                .iter()
                .map(|g| (g.destination.clone(), g.ids.clone()))
                .collect();
            let out = split(groups, jobs);
            let lengths: Vec<usize> = out.iter().map(|job| job.ids.len()).collect();
            assert_eq!(lengths, expected, "{why}");
            // Each destination's connections carry its messages, each once, in queue order.
            for (destination, ids) in originals {
                let carried: Vec<QueueId> = out
                    .iter()
                    .filter(|job| job.destination == destination)
                    .flat_map(|job| job.ids.clone())
                    .collect();
                assert_eq!(carried, ids, "{why}: {destination:?}");
            }
        }
    }

    #[test]
    fn split_keeps_the_relay_with_every_share() {
        let relay = RelayTarget::parse("[192.0.2.7]:2525").unwrap();
        let group = Job {
            destination: Destination::Relay(relay.to_string()),
            relay: Some(relay.clone()),
            ids: ids(120),
        };
        let out = split(vec![group], 3);
        assert_eq!(out.len(), 3);
        for job in out {
            assert_eq!(
                job.destination,
                Destination::Relay("[192.0.2.7]:2525".into())
            );
            assert_eq!(job.relay.as_ref(), Some(&relay));
        }
    }

    #[test]
    fn regroup_gathers_busy_messages_by_destination() {
        let relay = RelayTarget::parse("[192.0.2.7]:2525").unwrap();
        let routed = Destination::Relay(relay.to_string());
        let a = Destination::Domain("a.test".into());
        let b = Destination::Domain("b.test".into());
        let id = ids(5);
        let busy = vec![
            (a.clone(), None, id[0]),
            (routed.clone(), Some(relay.clone()), id[1]),
            (a.clone(), None, id[2]),
            (b.clone(), None, id[3]),
            (routed.clone(), Some(relay.clone()), id[4]),
        ];
        let mut jobs = regroup(busy);
        jobs.sort_by_key(|job| job.ids[0]);
        let got: Vec<(Destination, Option<RelayTarget>, Vec<QueueId>)> = jobs
            .into_iter()
            .map(|job| (job.destination, job.relay, job.ids))
            .collect();
        assert_eq!(
            got,
            vec![
                (a, None, vec![id[0], id[2]]),
                (routed, Some(relay), vec![id[1], id[4]]),
                (b, None, vec![id[3]]),
            ]
        );
        assert!(regroup(Vec::new()).is_empty());
    }

    #[test]
    fn an_arrival_in_the_future_is_dated_from_now_and_then_expires() {
        let f = fixture();
        let config = Config {
            hold_domains: vec![Domain::parse("customer.test").unwrap()].into(),
            ..Config::default()
        };
        let options = RunOptions::default();
        let now = 1_800_000_000;
        let id = f.commit(&["u@customer.test"], now + 30 * 86400);
        let mut summary = RunSummary::default();

        let jobs = plan_every_pass(
            &f.queue,
            &policy(&config, &options, now),
            &f.log,
            &mut summary,
        );
        assert!(jobs.is_empty(), "held mail is not attempted");
        assert_eq!(
            f.envelope(id).unwrap().arrival,
            now,
            "dated from now, on disk"
        );
        assert!(f.log().contains("lies in the future"), "{}", f.log());

        let later = now + config.queue_lifetime.as_secs() as i64;
        plan_every_pass(
            &f.queue,
            &policy(&config, &options, later),
            &f.log,
            &mut summary,
        );
        assert!(f.envelope(id).is_none(), "expired and removed");
        assert_eq!(summary.failed, 1);
        let bounce = f.queue.ids().unwrap();
        assert_eq!(bounce.len(), 1, "one bounce queued");
        let bounce = f.envelope(bounce[0].0).unwrap();
        assert_eq!(bounce.recipients[0].address, "frank@sender.test");
    }
}
