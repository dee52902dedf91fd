//! The spool: an upload's body on disk until its last byte has arrived, so that no database lock or pool
//! connection is held while the client is still sending (ADR 0003).
//!
//! The file is unlinked right after it is created: the open handle is its only reference, so every way out
//! (an error, the client going away, a panic, even a crash) frees the space. Where an open file cannot be
//! unlinked (Windows), a guard removes it on drop instead. Its size is bounded by the caller (the upload's byte
//! limit is checked before each write).

use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncWriteExt, BufWriter};

/// Bytes buffered before a write to the file: each write is a trip to tokio's blocking pool.
const WRITE_BUFFER: usize = 256 * 1024;

/// A spool being filled.
pub(crate) struct SpoolWriter {
    file: BufWriter<tokio::fs::File>,
    guard: RemoveOnDrop,
}

/// A filled spool, read from its start.
pub(crate) struct Spool {
    file: std::fs::File,
    _guard: RemoveOnDrop,
}

/// Removes a file that could not be unlinked while open; `None` once it was.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl SpoolWriter {
    /// Creates an empty spool file in `dir`, readable by this user only (it holds the uploaded leads).
    pub(crate) async fn create(dir: &Path) -> io::Result<Self> {
        let path = dir.join(format!("leadscore-upload-{}.csv", crate::new_id()));
        let mut options = tokio::fs::OpenOptions::new();
        options.read(true).write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        let file = options.open(&path).await?;
        let guard = match tokio::fs::remove_file(&path).await {
            Ok(()) => RemoveOnDrop(None),
            Err(_) => RemoveOnDrop(Some(path)),
        };
        Ok(SpoolWriter { file: BufWriter::with_capacity(WRITE_BUFFER, file), guard })
    }

    pub(crate) async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.file.write_all(chunk).await
    }

    /// Flushes what is buffered and rewinds: the spool is ready to be read.
    pub(crate) async fn finish(mut self) -> io::Result<Spool> {
        self.file.flush().await?;
        let mut file = self.file.into_inner().into_std().await;
        file.rewind()?;
        Ok(Spool { file, _guard: self.guard })
    }
}

impl Read for Spool {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

/// A workbook is read by seeking (calamine opens it as a zip or an OLE file).
impl Seek for Spool {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_back_what_was_written_and_leaves_no_file() {
        let dir = std::env::temp_dir().join(format!("leadscore-spool-test-{}", crate::new_id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut spool = SpoolWriter::create(&dir).await.expect("create");
        spool.write(b"name,role\n").await.expect("write");
        spool.write(b"Ada,CEO\n").await.expect("write");
        assert_eq!(std::fs::read_dir(&dir).expect("list").count(), 0, "unlinked while open");
        let mut text = String::new();
        spool.finish().await.expect("finish").read_to_string(&mut text).expect("read");
        assert_eq!(text, "name,role\nAda,CEO\n");
        std::fs::remove_dir(&dir).expect("the directory is empty");
    }
}
