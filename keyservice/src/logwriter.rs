//! The writer behind the request log: lines gathered in memory and written in batches.
//!
//! A line per request written straight to standard error costs each request a system
//! call and, on a pipe (journald, a container runtime), a wake-up of its reader. Handing
//! each line to a logging thread through a channel moves the system call but not the
//! wake-ups: the thread is woken, or spins waiting, once per line. Here a request only
//! appends its formatted line to a shared buffer. One thread writes whatever has
//! gathered every [`BatchedWriter::INTERVAL`]; a request that finds the buffer past
//! [`BatchedWriter::HIGH_WATER`] writes it out itself, so memory stays bounded and
//! nothing is dropped. Lines still buffered are written when the [`FlushGuard`] drops
//! (at exit); a SIGKILL loses at most one interval of request-log lines. The audit trail
//! does not go through here: its lines are written before the request answers.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// A [`tracing_subscriber::fmt::MakeWriter`] that batches lines for `W`.
pub struct BatchedWriter<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
}

struct Shared<W> {
    /// Lines formatted but not yet written, and whether the writer is shutting down.
    pending: Mutex<(Vec<u8>, bool)>,
    /// Woken at shutdown, so the final flush need not wait out an interval.
    wake: Condvar,
    /// The destination; held while writing so batches never interleave.
    out: Mutex<W>,
}

/// Writes what is buffered and stops the flushing thread when dropped.
#[must_use = "dropping the guard stops the flushing thread"]
pub struct FlushGuard<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<W: Write + Send + 'static> BatchedWriter<W> {
    /// How long a line may wait in memory before it is written.
    pub const INTERVAL: Duration = Duration::from_millis(20);
    /// Buffered bytes past which the request that adds a line writes the batch itself.
    pub const HIGH_WATER: usize = 256 * 1024;

    /// A writer for `out`, with the thread (named `thread_name`) that flushes it.
    pub fn new(out: W, thread_name: &str) -> std::io::Result<(Self, FlushGuard<W>)> {
        let shared = Arc::new(Shared {
            pending: Mutex::new((Vec::with_capacity(64 * 1024), false)),
            wake: Condvar::new(),
            out: Mutex::new(out),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new().name(thread_name.to_owned()).spawn(move || {
                loop {
                    let (batch, stopping) = {
                        let pending = lock(&shared.pending);
                        let (mut pending, _) = shared
                            .wake
                            .wait_timeout_while(pending, Self::INTERVAL, |(_, stopping)| !*stopping)
                            .unwrap_or_else(PoisonError::into_inner);
                        (std::mem::take(&mut pending.0), pending.1)
                    };
                    shared.write(&batch);
                    if stopping {
                        return;
                    }
                }
            })?
        };
        Ok((Self { shared: Arc::clone(&shared) }, FlushGuard { shared, thread: Some(thread) }))
    }
}

impl<W: Write> Shared<W> {
    /// Writes a batch. A failed write is dropped: a closed or full standard error must
    /// not take the server down, and there is nowhere else to report it.
    fn write(&self, batch: &[u8]) {
        if batch.is_empty() {
            return;
        }
        let mut out = lock(&self.out);
        let _ = out.write_all(batch).and_then(|()| out.flush());
    }
}

impl<W: Write + Send + 'static> Drop for FlushGuard<W> {
    fn drop(&mut self) {
        lock(&self.shared.pending).1 = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Lines added after the thread's last batch.
        let rest = std::mem::take(&mut lock(&self.shared.pending).0);
        self.shared.write(&rest);
    }
}

/// One line being formatted; tracing-subscriber writes each event through one of these.
pub struct LineWriter<'a, W: Write + Send + 'static> {
    shared: &'a Shared<W>,
}

impl<W: Write + Send + 'static> Write for LineWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let full = {
            let mut pending = lock(&self.shared.pending);
            pending.0.extend_from_slice(buf);
            (pending.0.len() >= BatchedWriter::<W>::HIGH_WATER).then(|| std::mem::take(&mut pending.0))
        };
        if let Some(batch) = full {
            self.shared.write(&batch);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + Send + 'static> tracing_subscriber::fmt::MakeWriter<'a> for BatchedWriter<W> {
    type Writer = LineWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { shared: &self.shared }
    }
}

/// Logs go to standard error, readable or as JSON lines; `RUST_LOG` sets the level.
///
/// Lines are gathered in memory and written in batches (this module): a
/// line per request written on its own costs each request a system call and a wake-up
/// of whatever reads the pipe. The returned guard writes what is left at exit.
///
/// # Errors
///
/// When the writing thread cannot start.
pub fn init(format: crate::config::LogFormat) -> std::io::Result<FlushGuard<std::io::Stderr>> {
    let (writer, guard) = BatchedWriter::new(std::io::stderr(), "keyservice-log")?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed or full stderr must not take the server down: tracing's own report of a
        // failed write would panic trying to print to that same stderr.
        .log_internal_errors(false);
    match format {
        crate::config::LogFormat::Human => builder.init(),
        crate::config::LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    /// A destination the test can read, counting the writes it received.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut sink = lock(&self.0);
            sink.0.extend_from_slice(buf);
            sink.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn contents(sink: &Sink) -> (String, usize) {
        let sink = lock(&sink.0);
        (String::from_utf8(sink.0.clone()).expect("utf-8"), sink.1)
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_in_few_writes() {
        let sink = Sink::default();
        let (writer, guard) = BatchedWriter::new(sink.clone(), "test-log").expect("thread");
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let writer = &writer;
                scope.spawn(move || {
                    for line in 0..500 {
                        let text = format!("thread {thread} line {line} {}\n", "x".repeat(40));
                        writer.make_writer().write_all(text.as_bytes()).expect("write");
                    }
                });
            }
        });
        drop(guard);
        let (text, writes) = contents(&sink);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2000);
        for thread in 0..4 {
            for line in 0..500 {
                let want = format!("thread {thread} line {line} {}", "x".repeat(40));
                assert!(lines.contains(&want.as_str()), "{want} missing or torn");
            }
        }
        assert!(writes < 100, "2000 lines took {writes} writes");
    }

    #[test]
    fn a_line_is_written_within_an_interval_without_shutdown() {
        let sink = Sink::default();
        let (writer, _guard) = BatchedWriter::new(sink.clone(), "test-log").expect("thread");
        writer.make_writer().write_all(b"one line\n").expect("write");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while contents(&sink).0.is_empty() {
            assert!(std::time::Instant::now() < deadline, "the line was never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(contents(&sink).0, "one line\n");
    }

    #[test]
    fn past_the_high_water_mark_the_caller_writes_the_batch() {
        let sink = Sink::default();
        let (writer, guard) = BatchedWriter::new(sink.clone(), "test-log").expect("thread");
        let line = vec![b'y'; BatchedWriter::<Sink>::HIGH_WATER];
        writer.make_writer().write_all(&line).expect("write");
        // Written by this call, not by the thread an interval later.
        assert_eq!(contents(&sink).0.len(), line.len());
        drop(guard);
    }

    #[test]
    fn a_failing_destination_does_not_fail_the_request() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("closed"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (writer, guard) = BatchedWriter::new(Broken, "test-log").expect("thread");
        let line = vec![b'z'; BatchedWriter::<Broken>::HIGH_WATER + 1];
        assert!(writer.make_writer().write_all(&line).is_ok());
        drop(guard);
    }
}
