//! The text encoding of an upload: found from its first bytes, and transcoded to UTF-8 on the stream.
//!
//! Spreadsheets and CRMs save CSV as UTF-8 (with or without a byte order mark), as UTF-16 with a BOM (Excel's
//! "Unicode Text"), or in a Windows code page (Excel's "CSV (Comma delimited)" on Windows: windows-1252 in the
//! West). A BOM decides; else a caller's declared encoding; else bytes that are valid UTF-8 are UTF-8; else
//! chardetng's guess is taken when it is windows-1252 and confident. Anything else is refused with what the
//! file looks like and how to declare it: a wrong guess would store mangled names without a word.
//!
//! UTF-8 passes through untouched (no copy beyond the first chunk), so the common case costs nothing.

use std::io::{self, Chain, Cursor, Read};

pub use encoding_rs::Encoding;
use encoding_rs::{UTF_8, UTF_16BE, UTF_16LE, WINDOWS_1252};
use encoding_rs_io::{DecodeReaderBytes, DecodeReaderBytesBuilder};

/// Bytes read ahead to find the encoding.
const SNIFF: usize = 64 * 1024;

/// Why the encoding could not be settled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodingError {
    #[error(
        "unknown encoding `{0}`: use a name such as utf-8, utf-16le, utf-16be, windows-1252, iso-8859-1, \
         windows-1250 or shift_jis"
    )]
    UnknownLabel(String),
    #[error(
        "the file is not UTF-8 and its encoding cannot be told with confidence{}: save it as \"CSV UTF-8\", or \
         say which encoding it is with the `encoding` parameter (e.g. encoding=windows-1252)",
        looks_like.map(|l| format!(" (it may be {l})")).unwrap_or_default()
    )]
    Undetermined { looks_like: Option<&'static str> },
}

/// The encoding a WHATWG label names (`utf-8`, `latin1`, `windows-1252`, `utf-16le`, ...).
pub fn encoding_for_label(label: &str) -> Result<&'static Encoding, EncodingError> {
    Encoding::for_label(label.trim().as_bytes()).ok_or_else(|| EncodingError::UnknownLabel(label.to_owned()))
}

/// The encoding of a file that starts with `prefix` (up to [`SNIFF`] bytes, or the whole file).
pub fn detect(
    prefix: &[u8],
    declared: Option<&'static Encoding>,
) -> Result<&'static Encoding, EncodingError> {
    if let Some((bom, _)) = Encoding::for_bom(prefix) {
        return Ok(bom);
    }
    if let Some(declared) = declared {
        return Ok(declared);
    }
    // Before the UTF-8 check: NUL bytes are valid UTF-8.
    if looks_like_utf16(prefix) {
        return Err(EncodingError::Undetermined { looks_like: Some("UTF-16 without a byte order mark") });
    }
    match std::str::from_utf8(prefix) {
        Ok(_) => return Ok(UTF_8),
        // Cut inside a character at the end of the prefix: still UTF-8.
        Err(e) if e.error_len().is_none() && prefix.len() >= SNIFF => return Ok(UTF_8),
        Err(_) => {}
    }
    let mut detector = chardetng::EncodingDetector::new();
    detector.feed(prefix, prefix.len() < SNIFF);
    match detector.guess_assess(None, false) {
        (guess, true) if guess == WINDOWS_1252 => Ok(WINDOWS_1252),
        (guess, confident) => {
            Err(EncodingError::Undetermined { looks_like: confident.then_some(guess.name()) })
        }
    }
}

/// Text with a NUL in most of its even or odd bytes: UTF-16 of mostly ASCII.
fn looks_like_utf16(prefix: &[u8]) -> bool {
    let sample = &prefix[..prefix.len().min(4096) & !1];
    let nuls = |offset: usize| sample.iter().skip(offset).step_by(2).filter(|b| **b == 0).count();
    let pairs = sample.len() / 2;
    pairs >= 4 && (nuls(0) * 2 > pairs || nuls(1) * 2 > pairs)
}

type Prefixed<R> = Chain<Cursor<Vec<u8>>, R>;

/// An upload as UTF-8, whatever it was saved as (see the module's documentation).
pub enum Utf8Source<R> {
    /// Already UTF-8: read as it is (a BOM is skipped by the tokenizer).
    Utf8(Prefixed<R>),
    /// Transcoded on the stream.
    Decoded(Box<DecodeReaderBytes<Prefixed<R>, Vec<u8>>>),
}

impl<R> std::fmt::Debug for Utf8Source<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Utf8Source::Utf8(_) => "Utf8Source::Utf8",
            Utf8Source::Decoded(_) => "Utf8Source::Decoded",
        })
    }
}

impl<R: Read> Read for Utf8Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Utf8Source::Utf8(r) => r.read(buf),
            Utf8Source::Decoded(r) => r.read(buf),
        }
    }
}

/// Reads the start of `src`, settles its encoding, and returns it as UTF-8 with the encoding found.
pub fn utf8_source<R: Read>(
    mut src: R,
    declared: Option<&'static Encoding>,
) -> Result<(Utf8Source<R>, &'static Encoding), super::HeaderError> {
    let mut prefix = Vec::with_capacity(SNIFF);
    (&mut src).take(SNIFF as u64).read_to_end(&mut prefix)?;
    let encoding = detect(&prefix, declared)?;
    let src = Cursor::new(prefix).chain(src);
    if encoding == UTF_8 {
        return Ok((Utf8Source::Utf8(src), UTF_8));
    }
    let decoder = DecodeReaderBytesBuilder::new().encoding(Some(encoding)).strip_bom(true).build(src);
    Ok((Utf8Source::Decoded(Box::new(decoder)), encoding))
}

/// Whether `encoding` is one of the UTF-16 forms (Excel's "Unicode Text", which is tab-separated).
pub fn is_utf16(encoding: &'static Encoding) -> bool {
    encoding == UTF_16LE || encoding == UTF_16BE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(
        bytes: &[u8],
        declared: Option<&'static Encoding>,
    ) -> Result<(String, &'static str), super::super::HeaderError> {
        let (mut src, encoding) = utf8_source(bytes, declared)?;
        let mut out = String::new();
        src.read_to_string(&mut out)?;
        Ok((out, encoding.name()))
    }

    fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
        let mut out = if big_endian { vec![0xFE, 0xFF] } else { vec![0xFF, 0xFE] };
        for unit in text.encode_utf16() {
            out.extend(if big_endian { unit.to_be_bytes() } else { unit.to_le_bytes() });
        }
        out
    }

    #[test]
    fn utf8_with_or_without_bom_passes_through() {
        assert_eq!(decode("name\nJosé\n".as_bytes(), None).expect("utf-8"), ("name\nJosé\n".into(), "UTF-8"));
        let with_bom = "\u{FEFF}name\nJosé\n";
        assert_eq!(decode(with_bom.as_bytes(), None).expect("utf-8").1, "UTF-8");
    }

    #[test]
    fn utf16_with_a_bom_is_transcoded() {
        for big_endian in [false, true] {
            let (text, name) =
                decode(&utf16("name\tcity\nJosé Müller\tMünchen\n", big_endian), None).expect("utf-16");
            assert_eq!(text, "name\tcity\nJosé Müller\tMünchen\n");
            assert_eq!(name, if big_endian { "UTF-16BE" } else { "UTF-16LE" });
        }
    }

    #[test]
    fn windows_1252_is_recognised_and_kept_accented() {
        let (bytes, _, _) = WINDOWS_1252.encode("name,city\nJosé Müller,München\nFrançois Gérard,Besançon\n");
        let (text, name) = decode(&bytes, None).expect("windows-1252");
        assert_eq!(text, "name,city\nJosé Müller,München\nFrançois Gérard,Besançon\n");
        assert_eq!(name, "windows-1252");
    }

    #[test]
    fn an_encoding_that_cannot_be_told_is_refused_and_a_declared_one_is_used() {
        let (bytes, _, _) =
            encoding_rs::SHIFT_JIS.encode("name,company\n山田太郎,株式会社テスト\n鈴木花子,東京商事\n");
        let err = decode(&bytes, None).expect_err("refused");
        assert!(err.to_string().contains("encoding=windows-1252"), "{err}");
        let declared = encoding_for_label("shift_jis").expect("label");
        assert_eq!(
            decode(&bytes, Some(declared)).expect("declared").0,
            "name,company\n山田太郎,株式会社テスト\n鈴木花子,東京商事\n"
        );
        assert_eq!(encoding_for_label("latin1").expect("label"), WINDOWS_1252);
        assert!(matches!(encoding_for_label("klingon"), Err(EncodingError::UnknownLabel(_))));
    }

    #[test]
    fn utf16_without_a_bom_is_refused_with_a_hint() {
        let bytes: Vec<u8> = "name,role\nAnn,CEO\n".encode_utf16().flat_map(u16::to_le_bytes).collect();
        let err = decode(&bytes, None).expect_err("refused");
        assert!(err.to_string().contains("UTF-16 without a byte order mark"), "{err}");
    }
}
