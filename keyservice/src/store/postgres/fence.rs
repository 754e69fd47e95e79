//! Never writing to an old primary that came back.
//!
//! After a failover, the promoted standby writes on a new *timeline* (PostgreSQL counts
//! them up at every promotion); the old primary, restarted as it was, is still on the
//! old one and would take writes too if nodes connected to it: split brain, two
//! databases each with acknowledged writes the other lacks. With a multi-host URL,
//! `target_session_attrs=read-write` picks the first host that takes writes, so an old
//! primary listed first would win.
//!
//! So a node remembers the highest timeline it has seen on a server that takes writes
//! (from the start, the highest among every host the URL lists) and refuses a new
//! connection to one behind it, naming both: the node answers 503 and `/readyz` is red
//! rather than writing where the rest of the cluster does not read. The orchestrator
//! (docs/operations.md) keeps an old primary from starting as one in the first place;
//! this is the node's own check behind it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio_postgres::GenericClient;

/// The highest timeline this node has seen on a writable server.
#[derive(Default)]
pub(super) struct Fence {
    highest: AtomicU32,
}

/// The server's timeline (`None` for a standby, which takes no writes) and its address.
pub(super) async fn timeline(client: &impl GenericClient) -> Result<(Option<u32>, String), tokio_postgres::Error> {
    // The current WAL file's name starts with the timeline, in hex; `pg_control_*`
    // would say it too but needs privileges keyservice's role has no need of.
    let row = client
        .query_one(
            "SELECT CASE WHEN pg_is_in_recovery() THEN NULL \
             ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END, \
             coalesce(host(inet_server_addr()) || ':' || inet_server_port(), 'a local socket')",
            &[],
        )
        .await?;
    let hex: Option<String> = row.get(0);
    Ok((hex.and_then(|hex| u32::from_str_radix(&hex, 16).ok()), row.get(1)))
}

impl Fence {
    /// Checks a new connection's server: `Err` with the sentence to log when it is behind.
    pub(super) fn admit(&self, host: &str, timeline: Option<u32>) -> Result<(), String> {
        let Some(timeline) = timeline else { return Ok(()) };
        let highest = self.highest.fetch_max(timeline, Ordering::AcqRel);
        if timeline < highest {
            return Err(format!(
                "the database at {host} is on timeline {timeline}, behind timeline {highest} this node has seen \
                 take writes: it is an old primary that came back after a failover; keyservice does not write to \
                 it (stop it, or make it a standby of the new primary)"
            ));
        }
        if timeline > highest && highest > 0 {
            tracing::warn!(from = highest, to = timeline, "the database moved to a new timeline (a failover)");
        }
        Ok(())
    }

    /// The highest timeline among every host `config` lists that takes writes, each
    /// asked alone within `timeout`; hosts that do not answer are skipped.
    pub(super) async fn learn<T>(&self, config: &tokio_postgres::Config, timeout: Duration, tls: T)
    where
        T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> + Clone,
        T::Stream: Send + 'static,
    {
        let hosts = config.get_hosts();
        if hosts.len() < 2 {
            return;
        }
        for (index, host) in hosts.iter().enumerate() {
            let tokio_postgres::config::Host::Tcp(name) = host else { continue };
            let port = config.get_ports().get(index).or_else(|| config.get_ports().first()).copied().unwrap_or(5432);
            // A configuration of its own: `host` adds to a configuration's list.
            let mut single = tokio_postgres::Config::new();
            single.host(name).port(port).connect_timeout(timeout).ssl_mode(config.get_ssl_mode());
            if let Some(user) = config.get_user() {
                single.user(user);
            }
            if let Some(password) = config.get_password() {
                single.password(password);
            }
            if let Some(dbname) = config.get_dbname() {
                single.dbname(dbname);
            }
            let asked = tokio::time::timeout(timeout, async {
                let (client, connection) = single.connect(tls.clone()).await?;
                let task = tokio::spawn(connection);
                let timeline = timeline(&client).await;
                drop(client);
                let _ = task.await;
                timeline
            })
            .await;
            if let Ok(Ok((Some(timeline), _))) = asked {
                self.highest.fetch_max(timeline, Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_behind_the_highest_timeline_seen_is_refused() {
        let fence = Fence::default();
        assert!(fence.admit("a:5432", Some(1)).is_ok());
        assert!(fence.admit("b:5432", None).is_ok(), "a standby is no threat");
        assert!(fence.admit("b:5432", Some(2)).is_ok(), "a promotion moves the fence up");
        let refused = fence.admit("a:5432", Some(1)).unwrap_err();
        assert!(refused.contains("a:5432") && refused.contains("timeline 1") && refused.contains("timeline 2"));
        assert!(fence.admit("b:5432", Some(2)).is_ok());
    }
}
