//! The audit log's unit tests: the chain, rotation, verification and refusal digests.

use super::*;

fn event(name: &str) -> Event<'_> {
    Event {
        time: "2026-11-22T06:00:00Z".into(),
        node: "node-a",
        event: name,
        outcome: "ok",
        request_id: "r1",
        client_ip: "127.0.0.1".into(),
        namespace: Some("shop"),
        user: Some("ab".repeat(32)),
        reason: None,
        repeated: None,
    }
}

#[test]
fn repeated_denials_get_one_line_and_a_count() {
    let digest = DenialDigest::new(std::time::Duration::from_millis(50));
    let key = ("192.0.2.0/24".parse().unwrap(), "access_denied", "ip_not_allowed");
    let other = ("198.51.100.0/24".parse().unwrap(), "access_denied", "ip_not_allowed");
    assert!(digest.admit(key));
    for _ in 0..99 {
        assert!(!digest.admit(key));
    }
    assert!(digest.admit(other));
    assert!(digest.due(false).is_empty(), "the window is still open");
    std::thread::sleep(std::time::Duration::from_millis(60));
    assert_eq!(digest.due(false), vec![(key, 99)], "the quiet key has nothing to report");
    assert!(digest.admit(key), "a new window starts with a line");
    assert!(!digest.admit(key));
    assert_eq!(digest.due(true), vec![(key, 1)], "a stop reports open windows too");
}

fn write_log(path: &Path, n: usize) {
    let log = AuditLog::open(path, true).unwrap();
    for i in 0..n {
        log.record(&event(if i % 2 == 0 { "init" } else { "connect" })).unwrap();
    }
    log.sync().unwrap();
}

#[test]
fn lines_queued_together_are_written_by_the_first_settle_in_chain_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path, true).unwrap();
    let lines = || std::fs::read_to_string(&path).unwrap().lines().count();
    let first = log.queue(&event("key_read"));
    let second = log.queue(&event("key_write"));
    assert_eq!(lines(), 0, "a queued line was written before it was settled");
    log.settle(second).unwrap();
    assert_eq!(lines(), 2, "the later ticket's settle writes the earlier line too");
    log.settle(first).unwrap();
    assert_eq!(lines(), 2, "a settled line was written twice");
    let _unsettled = log.queue(&event("init"));
    log.sync().unwrap();
    assert_eq!(lines(), 3, "sync writes what is still queued");
    assert_eq!(verify(&path), Ok(3));
    let text = std::fs::read_to_string(&path).unwrap();
    let order: Vec<_> = ["key_read", "key_write", "init"].iter().map(|e| text.find(e).unwrap()).collect();
    assert!(order.is_sorted(), "lines out of queue order");
}

#[cfg(target_os = "linux")]
#[test]
fn every_line_of_a_failed_batch_fails_when_the_log_fails_closed() {
    // Every write to /dev/full fails with ENOSPC.
    let closed = AuditLog::open(Path::new("/dev/full"), true).unwrap();
    let tickets: Vec<_> = (0..3).map(|_| closed.queue(&event("key_read"))).collect();
    for ticket in tickets.into_iter().rev() {
        let error = closed.settle(ticket).expect_err("a line that was never written was settled");
        assert_eq!(error.source.raw_os_error(), Some(28), "{error}");
    }
    assert!(!closed.is_writable());
    let open = AuditLog::open(Path::new("/dev/full"), false).unwrap();
    let ticket = open.queue(&event("key_read"));
    assert!(open.settle(ticket).is_ok(), "a log failing open refused a request");
}

#[test]
fn an_intact_log_verifies_and_continues_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_log(&path, 3);
    write_log(&path, 2);
    assert_eq!(verify(&path), Ok(5));
}

#[test]
fn a_rotated_series_verifies_and_a_cut_end_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open_rotating(&path, true, 600).unwrap();
    for i in 0..10 {
        log.record(&event(if i % 2 == 0 { "init" } else { "connect" })).unwrap();
    }
    log.sync().unwrap();
    drop(log);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with(".head"))
        .collect();
    assert!(files.len() >= 3, "{files:?}");
    files.reverse();
    let verified = verify_series(&files).unwrap();
    assert_eq!((verified.lines, verified.first_seq, verified.last_seq, verified.head), (10, 0, Some(9), Some(9)));
    // In chain order: the rotated files by name, then the live one.
    let mut chain: Vec<PathBuf> = files.iter().filter(|f| **f != path).cloned().collect();
    chain.sort();
    chain.push(path.clone());
    // The oldest file deleted: the rest still verifies, from mid-chain.
    assert!(verify_series(&chain[1..]).unwrap().first_seq > 0);
    // A file in the middle missing breaks the chain.
    let gap: Vec<PathBuf> = chain.iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, f)| f.clone()).collect();
    assert!(verify_series(&gap).unwrap_err().reason.contains("expected"));
    // Lines cut off the end are found through the head.
    let newest = chain.iter().rev().find(|f| std::fs::metadata(f).unwrap().len() > 0).unwrap();
    let text = std::fs::read_to_string(newest).unwrap();
    let kept: Vec<&str> = text.lines().collect();
    std::fs::write(newest, kept[..kept.len() - 1].iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let cut = verify_series(&files).unwrap_err();
    assert!(cut.reason.contains("cut off the end"), "{cut}");
    // Reopening an emptied (externally rotated) log continues the chain from the head.
    std::fs::rename(&path, dir.path().join("audit.jsonl.moved")).unwrap();
    let log = AuditLog::open(&path, true).unwrap();
    log.record(&event("init")).unwrap();
    let first: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&path).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["seq"], 10);
}

#[cfg(unix)]
#[test]
fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let first = AuditLog::open(&path, true).unwrap();
    let error = AuditLog::open(&path, true).err().expect("refused");
    assert!(error.to_string().contains("another process is writing this audit log"), "{error}");
    drop(first);
    assert!(AuditLog::open(&path, true).is_ok());
}

#[test]
fn tampering_is_found_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    write_log(&path, 5);
    let lines: Vec<String> = std::fs::read_to_string(&path).unwrap().lines().map(str::to_owned).collect();
    let save = |lines: &[String]| std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let mut altered = lines.clone();
    altered[2] = altered[2].replace("connect", "erase!!").replace("init", "erase");
    save(&altered);
    assert_eq!(verify(&path).unwrap_err().line, 3);

    let mut removed = lines.clone();
    removed.remove(1);
    save(&removed);
    assert_eq!(verify(&path).unwrap_err().line, 2);

    let mut reordered = lines.clone();
    reordered.swap(3, 4);
    save(&reordered);
    assert_eq!(verify(&path).unwrap_err().line, 4);
}

#[test]
fn a_log_rotated_and_cut_off_before_its_next_sync_continues_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open_rotating(&path, true, 1500).unwrap();
    log.record(&event("init")).unwrap();
    log.sync().unwrap();
    // Rotations happen while lines are written; the head file hears of them only at
    // the next sync, which never comes (the process dies).
    let mut lines = 1;
    while std::fs::metadata(&path).unwrap().len() > 0 {
        log.record(&event("connect")).unwrap();
        lines += 1;
    }
    assert!(lines > 2, "several lines went into the rotated file");
    drop(log);
    let head = read_head_seq(&path);
    assert_eq!(head, Some(0), "the head still names the line before the rotation");

    let log = AuditLog::open_rotating(&path, true, 1500).unwrap();
    log.record(&event("init")).unwrap();
    log.sync().unwrap();
    drop(log);
    let files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().contains(".head"))
        .collect();
    let verified = verify_series(&files).unwrap();
    assert_eq!((verified.lines, verified.last_seq), (lines + 1, Some(lines)));
}

fn read_head_seq(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(head_path(path)).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["seq"].as_u64()
}
