//! A streaming RFC 4180 tokenizer that reads any byte stream in fixed-size chunks.
//!
//! Written by hand rather than on the `csv` crate because an upload must survive what real files contain: an
//! unterminated quote rejects one record and parsing resumes on the next line instead of swallowing the rest
//! of the file, fields over the cap are rejected without being buffered, and every record knows the line it
//! started on. Memory is bounded by the limits whatever the input.

use std::io::{self, Read};

const CHUNK: usize = 64 * 1024;

/// Size limits that keep memory bounded on hostile input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest field in bytes; a longer one rejects its record.
    pub max_field_bytes: usize,
    /// Most fields in one record.
    pub max_fields: usize,
    /// Longest record kept for recovery from an unterminated quote.
    pub max_record_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_field_bytes: 16 * 1024, max_fields: 512, max_record_bytes: 1024 * 1024 }
    }
}

/// Why a record was rejected by the tokenizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordProblem {
    /// Field `index` (0-based) is longer than the limit.
    FieldTooLong {
        index: usize,
    },
    TooManyFields,
    /// A quoted field never closed (`Unterminated`), or closed and went on (`"ab"cd`, `Misplaced`).
    /// `recovered`: parsing went on from the line after the record's first line; otherwise the rest of the
    /// input (through `last_line`) belonged to this record and is lost with it.
    BadQuote {
        kind: QuoteProblem,
        recovered: bool,
        last_line: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuoteProblem {
    Unterminated,
    Misplaced,
}

/// What [`Tokenizer::next_record`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Record,
    Rejected(RecordProblem),
    End,
}

/// One record's fields as bytes; reused between calls to avoid allocating per row.
#[derive(Debug, Default)]
pub struct Record {
    /// Line the record starts on, 1-based.
    pub line: u64,
    fields: Vec<Vec<u8>>,
    len: usize,
}

impl Record {
    pub fn fields(&self) -> &[Vec<u8>] {
        &self.fields[..self.len]
    }

    fn start(&mut self, line: u64) {
        self.line = line;
        self.len = 0;
    }

    fn new_field(&mut self) -> &mut Vec<u8> {
        if self.len == self.fields.len() {
            self.fields.push(Vec::new());
        }
        let f = &mut self.fields[self.len];
        f.clear();
        self.len += 1;
        f
    }
}

pub struct Tokenizer<R> {
    src: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    eof: bool,
    /// Bytes to read again before `buf` (after an unterminated quote).
    replay: Vec<u8>,
    replay_pos: usize,
    /// The current record's raw bytes, for replay; `None` once it outgrew `max_record_bytes`.
    raw: Option<Vec<u8>>,
    line: u64,
    /// The byte consumed last.
    prev: u8,
    delimiter: u8,
    limits: Limits,
    bytes_read: u64,
}

impl<R> std::fmt::Debug for Tokenizer<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("line", &self.line).field("delimiter", &self.delimiter).finish()
    }
}

enum FieldEnd {
    Delimiter,
    Record,
    Eof,
    BadQuote(QuoteProblem),
}

impl<R: Read> Tokenizer<R> {
    /// Reads the first chunk, skips a UTF-8 BOM and sniffs the delimiter (`,` `;` or tab) from the first line.
    pub fn new(src: R, limits: Limits) -> io::Result<Self> {
        let mut t = Tokenizer {
            src,
            buf: vec![0; CHUNK].into_boxed_slice(),
            pos: 0,
            end: 0,
            eof: false,
            replay: Vec::new(),
            replay_pos: 0,
            raw: Some(Vec::new()),
            line: 1,
            prev: 0,
            delimiter: b',',
            limits,
            bytes_read: 0,
        };
        t.fill()?;
        if t.buf[..t.end].starts_with(b"\xEF\xBB\xBF") {
            t.pos = 3;
        }
        t.delimiter = sniff_delimiter(&t.buf[t.pos..t.end]);
        Ok(t)
    }

    /// The delimiter sniffed from the first line.
    pub fn delimiter(&self) -> u8 {
        self.delimiter
    }

    /// Bytes taken from the source so far (for progress reporting).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Reads the next record into `rec`, skipping blank lines. I/O errors are returned as they are: the
    /// stream cannot be trusted after one.
    pub fn next_record(&mut self, rec: &mut Record) -> io::Result<Next> {
        loop {
            if self.peek()?.is_none() {
                return Ok(Next::End);
            }
            let outcome = self.record(rec)?;
            let blank = rec.len == 1 && rec.fields[0].is_empty() && outcome == Next::Record;
            if !blank {
                return Ok(outcome);
            }
        }
    }

    fn record(&mut self, rec: &mut Record) -> io::Result<Next> {
        rec.start(self.line);
        self.raw = Some(self.raw.take().unwrap_or_default());
        if let Some(raw) = &mut self.raw {
            raw.clear();
        }
        let mut problem = None;
        loop {
            let index = rec.len;
            let too_many = index >= self.limits.max_fields;
            if too_many && problem.is_none() {
                problem = Some(RecordProblem::TooManyFields);
            }
            let sink = if too_many { None } else { Some(rec.new_field()) };
            let (end, overflow) = self.field(sink)?;
            if overflow && problem.is_none() {
                problem = Some(RecordProblem::FieldTooLong { index });
            }
            match end {
                FieldEnd::Delimiter => continue,
                FieldEnd::Record | FieldEnd::Eof => break,
                FieldEnd::BadQuote(kind) => return Ok(Next::Rejected(self.recover(rec.line, kind))),
            }
        }
        Ok(problem.map_or(Next::Record, Next::Rejected))
    }

    /// After a broken quote: read again from the line after the record's first line, so one stray quote costs
    /// one row. Possible only while the record's bytes were kept.
    fn recover(&mut self, first_line: u64, kind: QuoteProblem) -> RecordProblem {
        if kind == QuoteProblem::Misplaced {
            // The rest of the physical line belongs to the broken record.
            while self.prev != b'\n' && self.peek().ok().flatten().is_some() {
                self.bump();
            }
        }
        let last_line = if self.prev == b'\n' { self.line - 1 } else { self.line };
        let Some(raw) = self.raw.take() else {
            return RecordProblem::BadQuote { kind, recovered: false, last_line };
        };
        let Some(nl) = raw.iter().position(|&b| b == b'\n' || b == b'\r') else {
            let recovered = kind == QuoteProblem::Misplaced; // nothing after it was swallowed
            return RecordProblem::BadQuote { kind, recovered, last_line };
        };
        let skip = if raw[nl] == b'\r' && raw.get(nl + 1) == Some(&b'\n') { nl + 2 } else { nl + 1 };
        let mut replay = raw[skip..].to_vec();
        replay.extend_from_slice(&self.replay[self.replay_pos..]);
        self.replay = replay;
        self.replay_pos = 0;
        self.line = first_line + 1;
        self.raw = Some(raw);
        RecordProblem::BadQuote { kind, recovered: true, last_line: first_line }
    }

    /// Reads one field into `out` (or discards it), returning how it ended and whether it overflowed.
    fn field(&mut self, mut out: Option<&mut Vec<u8>>) -> io::Result<(FieldEnd, bool)> {
        let max = self.limits.max_field_bytes;
        let mut overflow = false;
        let push = |out: &mut Option<&mut Vec<u8>>, overflow: &mut bool, b: u8| {
            if let Some(o) = out {
                if o.len() < max {
                    o.push(b);
                } else {
                    *overflow = true;
                }
            }
        };
        let quoted = self.peek()? == Some(b'"');
        if quoted {
            self.bump();
            loop {
                self.take_run(|b| b == b'"', &mut out, &mut overflow);
                match self.bump_byte()? {
                    None => return Ok((FieldEnd::BadQuote(QuoteProblem::Unterminated), overflow)),
                    Some(b'"') => match self.peek()? {
                        Some(b'"') => {
                            self.bump();
                            push(&mut out, &mut overflow, b'"');
                        }
                        Some(b'\n' | b'\r') | None => break,
                        Some(b) if b == self.delimiter => break,
                        // `"ab"cd`: no writer produces this; it is usually a stray quote that opened a field on
                        // an earlier line and swallowed rows. Reject and re-read those rows.
                        Some(_) => return Ok((FieldEnd::BadQuote(QuoteProblem::Misplaced), overflow)),
                    },
                    Some(b) => push(&mut out, &mut overflow, b),
                }
            }
        }
        loop {
            let delimiter = self.delimiter;
            self.take_run(|b| b == delimiter || b == b'\n' || b == b'\r', &mut out, &mut overflow);
            match self.bump_byte()? {
                None => return Ok((FieldEnd::Eof, overflow)),
                Some(b) if b == self.delimiter => return Ok((FieldEnd::Delimiter, overflow)),
                Some(b'\n') => return Ok((FieldEnd::Record, overflow)),
                Some(b'\r') => {
                    if self.peek()? == Some(b'\n') {
                        self.bump();
                    } else {
                        self.line += 1; // a lone CR ends a line too
                    }
                    return Ok((FieldEnd::Record, overflow));
                }
                Some(b) => push(&mut out, &mut overflow, b),
            }
        }
    }

    /// Fast path: consumes buffered bytes up to (not including) the first one `stop` accepts, copying them in
    /// bulk. Leaves everything else (the stop byte, refills, replayed bytes) to the byte-wise path.
    fn take_run(&mut self, stop: impl Fn(u8) -> bool, out: &mut Option<&mut Vec<u8>>, overflow: &mut bool) {
        if self.replay_pos < self.replay.len() {
            return;
        }
        let run = &self.buf[self.pos..self.end];
        let n = run.iter().position(|&b| stop(b)).unwrap_or(run.len());
        if n == 0 {
            return;
        }
        let run = &run[..n];
        if let Some(o) = out {
            let room = self.limits.max_field_bytes.saturating_sub(o.len());
            o.extend_from_slice(&run[..n.min(room)]);
            *overflow |= n > room;
        }
        if let Some(raw) = &mut self.raw {
            if raw.len() + n <= self.limits.max_record_bytes {
                raw.extend_from_slice(run);
            } else {
                self.raw = None;
            }
        }
        self.line += run.iter().filter(|&&b| b == b'\n').count() as u64;
        self.prev = run[n - 1];
        self.pos += n;
    }

    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        loop {
            match self.src.read(&mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.pos = 0;
                    self.end = n;
                    self.bytes_read += n as u64;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn peek(&mut self) -> io::Result<Option<u8>> {
        if let Some(&b) = self.replay.get(self.replay_pos) {
            return Ok(Some(b));
        }
        if self.pos == self.end && !self.fill()? {
            return Ok(None);
        }
        Ok(Some(self.buf[self.pos]))
    }

    /// Consumes the byte [`peek`](Self::peek) returned.
    fn bump(&mut self) {
        let b = if self.replay_pos < self.replay.len() {
            self.replay_pos += 1;
            self.replay[self.replay_pos - 1]
        } else {
            self.pos += 1;
            self.buf[self.pos - 1]
        };
        if b == b'\n' {
            self.line += 1;
        }
        self.prev = b;
        let limit = self.limits.max_record_bytes;
        if let Some(raw) = &mut self.raw {
            if raw.len() < limit {
                raw.push(b);
            } else {
                self.raw = None;
            }
        }
    }

    fn bump_byte(&mut self) -> io::Result<Option<u8>> {
        let b = self.peek()?;
        if b.is_some() {
            self.bump();
        }
        Ok(b)
    }
}

/// Picks the delimiter that occurs most often outside quotes on the first line; `,` on a tie or none.
fn sniff_delimiter(start: &[u8]) -> u8 {
    let mut counts = [0usize; 3];
    let mut in_quotes = false;
    for &b in start {
        match b {
            b'"' => in_quotes = !in_quotes,
            b'\n' | b'\r' if !in_quotes => break,
            b',' if !in_quotes => counts[0] += 1,
            b';' if !in_quotes => counts[1] += 1,
            b'\t' if !in_quotes => counts[2] += 1,
            _ => {}
        }
    }
    let candidates = [b',', b';', b'\t'];
    let best = (0..3).max_by_key(|&i| (counts[i], std::cmp::Reverse(i))).unwrap_or(0);
    if counts[best] == 0 { b',' } else { candidates[best] }
}

#[cfg(test)]
mod tests;
