//! What runs beside the requests: writing the access history, sweeping expired
//! records, and finishing when the server stops.

use std::time::Duration;

use super::app::App;
use crate::store::StoreError;

impl App {
    /// Finishes serving: records the replay floor and flushes the store. Call once no
    /// more requests will be handled.
    ///
    /// # Errors
    ///
    /// Fails when the store cannot be written.
    pub async fn close(&self) -> Result<(), StoreError> {
        if let Err(error) = self.inner.escrow.flush_accesses().await {
            tracing::warn!(%error, "writing the last access history entries failed");
        }
        self.inner.auth.close().await?;
        self.audit_denial_summaries(true);
        self.sync_audit().await;
        self.inner.escrow.flush().await
    }

    /// Writes queued access history entries every [`crate::access::FLUSH_INTERVAL`]
    /// until `stop` turns true. A write under way finishes first, so stopping loses
    /// nothing; [`App::close`] writes what is queued after.
    pub async fn write_accesses_until(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(crate::access::FLUSH_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !*stop.borrow() {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.changed() => return,
            }
            if let Err(error) = self.inner.escrow.flush_accesses().await {
                tracing::warn!(%error, "writing access history entries failed; they stay queued");
            }
        }
    }

    /// Deletes expired inits, sessions and remembered nonces every `interval`, forever,
    /// starting one interval after the call; access history past its retention, hourly.
    pub async fn sweep_forever(self, interval: Duration) {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_purge: Option<tokio::time::Instant> = None;
        loop {
            ticker.tick().await;
            let now = self.inner.clock.now();
            if last_purge.is_none_or(|at| at.elapsed() >= Duration::from_secs(3600)) {
                last_purge = Some(tokio::time::Instant::now());
                match self.inner.escrow.purge_accesses(now).await {
                    Ok(purged) => tracing::debug!(purged, "purged access history past its retention"),
                    Err(error) => tracing::warn!(%error, "purging old access history failed"),
                }
            }
            let forget = self.inner.auth.forget_nonces_before(now);
            self.inner.limiter.forget_quiet_clients();
            match self.inner.escrow.counts().await {
                Ok(counts) => {
                    self.inner.metrics.set_counts(counts.pending_inits, counts.sessions, counts.key_versions);
                    self.inner.limiter.set_pending_inits(counts.pending_inits, now);
                }
                Err(error) => tracing::warn!(%error, "counting stored records failed"),
            }
            match self.inner.escrow.sweep(now, forget).await {
                Ok(swept) => tracing::debug!(
                    inits = swept.inits,
                    sessions = swept.sessions,
                    nonces = swept.nonces,
                    "swept expired records"
                ),
                Err(error) => tracing::warn!(%error, "sweeping expired records failed"),
            }
        }
    }
}
