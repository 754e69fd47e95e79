//! `keyservice audit verify`: checking a log and its rotated files as one chain.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::chain::{Line, chain_hash, head_path, read_head};

/// Where a log's chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{reason}", if *line == 0 { String::new() } else { format!("line {line}: ") })]
pub struct ChainBreak {
    /// 1-based line number; 0 when the file itself could not be read.
    pub line: u64,
    /// The file.
    pub file: String,
    /// What is wrong there.
    pub reason: String,
}

/// What [`verify_series`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Lines checked.
    pub lines: u64,
    /// The first line's sequence number: above 0 when earlier files were not given.
    pub first_seq: u64,
    /// The last line's sequence number, if any.
    pub last_seq: Option<u64>,
    /// Whether a head file was found and agrees with the end of the chain (`None`: no
    /// head file, so lines cut off the end could not be noticed).
    pub head: Option<u64>,
}

/// Checks one log file's chain from its start; returns how many lines it holds.
///
/// # Errors
///
/// The first line that was altered, or at which lines were removed, inserted or
/// reordered, or lines cut off the end that the head file records (or an I/O error,
/// reported at line 0).
pub fn verify(path: &Path) -> Result<u64, ChainBreak> {
    let verified = verify_series(&[path.to_path_buf()])?;
    if verified.first_seq != 0 {
        return Err(ChainBreak {
            line: 1,
            file: path.display().to_string(),
            reason: format!("the file begins at sequence number {}: give the earlier files too", verified.first_seq),
        });
    }
    Ok(verified.lines)
}

/// Checks the chain through `paths`, a log and the files rotated from it, in any order
/// (they are put in chain order by their first line). The first file may begin mid-chain
/// (older files deleted); every later one must continue the one before exactly. The
/// head file beside the newest one (`<file>.head`), when there is one, must not name a
/// line beyond the end: that would mean lines were cut off.
///
/// # Errors
///
/// The first break, naming its file and line.
pub fn verify_series(paths: &[PathBuf]) -> Result<Verified, ChainBreak> {
    let io = |file: &str, e: std::io::Error| ChainBreak {
        line: 0,
        file: file.to_owned(),
        reason: format!("cannot read it: {e}"),
    };
    let mut files = Vec::new();
    for path in paths {
        let file = path.display().to_string();
        let mut first = String::new();
        BufReader::new(File::open(path).map_err(|e| io(&file, e))?).read_line(&mut first).map_err(|e| io(&file, e))?;
        let first_seq = serde_json::from_str::<Line<'_>>(first.trim_end()).ok().map(|l| l.seq);
        files.push((first_seq.unwrap_or(u64::MAX), path, file));
    }
    files.sort_by_key(|(first, _, _)| *first);
    let mut expected: Option<(u64, [u8; 32])> = None;
    let mut verified = Verified { lines: 0, first_seq: 0, last_seq: None, head: None };
    for (_, path, file) in &files {
        let reader = BufReader::new(File::open(path).map_err(|e| io(file, e))?);
        for (index, line) in reader.lines().enumerate() {
            let number = index as u64 + 1;
            let fail = |reason: &str| ChainBreak { line: number, file: file.clone(), reason: reason.to_owned() };
            let line = line.map_err(|e| fail(&e.to_string()))?;
            let parsed: Line<'_> = serde_json::from_str(&line).map_err(|_| fail("not an audit line"))?;
            let mut prev = [0u8; 32];
            hex::decode_to_slice(&parsed.prev, &mut prev).map_err(|_| fail("not an audit line"))?;
            match expected {
                None => verified.first_seq = parsed.seq,
                Some((seq, _)) if parsed.seq != seq => {
                    return Err(fail(&format!(
                        "sequence number {} where {seq} was expected: lines were removed, inserted or reordered",
                        parsed.seq
                    )));
                }
                Some((_, hash)) if prev != hash => {
                    return Err(fail("does not follow the line before it: a line was removed, inserted or reordered"));
                }
                Some(_) => {}
            }
            if expected.is_none() && parsed.seq == 0 && prev != [0u8; 32] {
                return Err(fail("the first line of the chain must follow no line"));
            }
            let hash = chain_hash(parsed.seq, &prev, parsed.event.get().as_bytes());
            if parsed.hash != hex::encode(hash) {
                return Err(fail("its content does not match its hash: the line was altered"));
            }
            expected = Some((parsed.seq + 1, hash));
            verified.last_seq = Some(parsed.seq);
            verified.lines += 1;
        }
    }
    if let Some((_, newest, file)) = files.last()
        && let Some(head) = read_head(&head_path(newest))
    {
        let end = verified.last_seq;
        let cut = || ChainBreak {
            line: verified.lines,
            file: file.clone(),
            reason: format!(
                "the head file records line seq {} but the chain ends at {}: lines were cut off the end",
                head.seq,
                end.map_or("nothing".to_owned(), |s| s.to_string())
            ),
        };
        match end {
            Some(end) if end > head.seq => {}
            Some(end) if end == head.seq => {
                let hash = expected.map(|(_, hash)| hex::encode(hash)).unwrap_or_default();
                if hash != head.hash {
                    return Err(ChainBreak {
                        line: verified.lines,
                        file: file.clone(),
                        reason: "the last line is not the one the head file records: it was replaced".to_owned(),
                    });
                }
            }
            _ => return Err(cut()),
        }
        verified.head = Some(head.seq);
    }
    Ok(verified)
}
