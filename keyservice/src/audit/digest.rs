//! One line per window for a flood of refusals.

use std::sync::Mutex;

/// Refusals of unauthenticated callers cost them nothing, so each one must not cost a
/// line: per client network, event and reason, the first refusal of a window gets its
/// line, the rest are counted, and the count is written as one summary line when the
/// window ends ([`DenialDigest::due`]). Past [`DenialDigest::MAX_KEYS`] distinct keys in
/// a window, all further refusals share one key, so the map stays bounded.
pub struct DenialDigest {
    window: std::time::Duration,
    open: Mutex<std::collections::HashMap<DenialKey, (std::time::Instant, u64)>>,
}

/// Who was refused, for what.
pub type DenialKey = (ipnet::IpNet, &'static str, &'static str);

impl DenialDigest {
    /// Most distinct keys tracked at once.
    pub const MAX_KEYS: usize = 10_000;

    /// A digest whose windows last `window`.
    pub fn new(window: std::time::Duration) -> Self {
        Self { window, open: Mutex::default() }
    }

    /// Whether this refusal gets a line of its own: true for the first of its window.
    pub fn admit(&self, key: DenialKey) -> bool {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = if open.len() >= Self::MAX_KEYS && !open.contains_key(&key) {
            (ipnet::IpNet::V4(ipnet::Ipv4Net::default()), "denials_overflow", "many_clients")
        } else {
            key
        };
        match open.get_mut(&key) {
            Some((_, suppressed)) => {
                *suppressed += 1;
                false
            }
            None => {
                open.insert(key, (std::time::Instant::now(), 0));
                true
            }
        }
    }

    /// The windows that have ended (with `all`, every window), with how many refusals
    /// each counted without a line; they are forgotten.
    pub fn due(&self, all: bool) -> Vec<(DenialKey, u64)> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        let mut out = Vec::new();
        open.retain(|key, (started, suppressed)| {
            let ended = all || now.duration_since(*started) >= self.window;
            if ended && *suppressed > 0 {
                out.push((*key, *suppressed));
            }
            !ended
        });
        out
    }
}
