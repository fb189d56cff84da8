//! Log streams: a byte stream (a run's or deploy's output) cut into numbered chunks, closed by an `eos` chunk.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::Result;
use crate::events::{DeployLogChunk, DeployScope, RunLogChunk, RunScope};
use crate::publisher::{Publisher, Sink};

/// Whose log a stream is.
#[derive(Debug, Clone)]
pub enum LogTarget {
    Run(RunScope),
    Deploy(DeployScope),
}

/// The default largest chunk, in bytes of UTF-8 text.
pub const DEFAULT_CHUNK_BYTES: usize = 16 * 1024;
/// The default longest wait before buffered output is published.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(200);

/// Turns written bytes into `run.logs` / `deploy.logs` chunks: at most `chunk_bytes` each, published when full
/// or when output has waited `max_delay`, never splitting a UTF-8 character (invalid bytes become U+FFFD),
/// numbered `seq` 1, 2, 3 …, and closed by a chunk with `eos: true`.
pub struct LogStreamWriter<'p, S> {
    publisher: &'p Publisher<S>,
    target: LogTarget,
    seq: u64,
    buffer: Vec<u8>,
    chunk_bytes: usize,
    max_delay: Duration,
    /// When the oldest byte in the buffer was written.
    waiting_since: Option<Instant>,
}

impl<'p, S: Sink> LogStreamWriter<'p, S> {
    pub fn new(publisher: &'p Publisher<S>, target: LogTarget) -> Self {
        Self {
            publisher,
            target,
            seq: 0,
            buffer: Vec::new(),
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            max_delay: DEFAULT_MAX_DELAY,
            waiting_since: None,
        }
    }

    /// Sets the largest chunk (at least 4 bytes, so any character fits) and the longest wait.
    pub fn with_limits(mut self, chunk_bytes: usize, max_delay: Duration) -> Self {
        self.chunk_bytes = chunk_bytes.max(4);
        self.max_delay = max_delay;
        self
    }

    /// Chunks published so far.
    pub fn chunks(&self) -> u64 {
        self.seq
    }

    /// Buffers `bytes`, publishing every full chunk, and what waited too long.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.buffer.extend_from_slice(bytes);
        self.waiting_since.get_or_insert_with(Instant::now);
        while self.buffer.len() >= self.chunk_bytes {
            self.publish_prefix(self.chunk_bytes, false).await?;
        }
        if self.waiting_since.is_some_and(|t| t.elapsed() >= self.max_delay) {
            self.flush().await?;
        }
        Ok(())
    }

    /// Publishes what is buffered (but an incomplete trailing character, which waits for its other bytes).
    pub async fn flush(&mut self) -> Result<()> {
        if !self.buffer.is_empty() {
            self.publish_prefix(self.buffer.len(), false).await?;
        }
        Ok(())
    }

    /// Publishes the rest and the end-of-stream chunk; returns how many chunks the stream had.
    pub async fn finish(mut self) -> Result<u64> {
        while self.buffer.len() > self.chunk_bytes {
            self.publish_prefix(self.chunk_bytes, false).await?;
        }
        let rest = String::from_utf8_lossy(&std::mem::take(&mut self.buffer)).into_owned();
        self.publish_chunk(rest, true).await?;
        Ok(self.seq)
    }

    /// Copies `reader` into the stream until it ends, publishing buffered output whenever it pauses for
    /// `max_delay`, then finishes the stream.
    pub async fn pump(mut self, mut reader: impl AsyncRead + Unpin) -> Result<u64> {
        let mut buf = vec![0u8; 8192];
        loop {
            match tokio::time::timeout(self.max_delay, reader.read(&mut buf)).await {
                Err(_) => self.flush().await?,
                Ok(Ok(0)) => return self.finish().await,
                Ok(Ok(n)) => self.write(&buf[..n]).await?,
                Ok(Err(e)) => {
                    let note = format!("\n[log stream interrupted: {e}]\n");
                    self.write(note.as_bytes()).await?;
                    return self.finish().await;
                }
            }
        }
    }

    async fn publish_prefix(&mut self, limit: usize, eos: bool) -> Result<()> {
        let (text, used) = utf8_prefix(&self.buffer[..limit.min(self.buffer.len())]);
        if used == 0 {
            return Ok(());
        }
        self.buffer.drain(..used);
        if self.buffer.is_empty() {
            self.waiting_since = None;
        }
        self.publish_chunk(text, eos).await
    }

    async fn publish_chunk(&mut self, chunk: String, eos: bool) -> Result<()> {
        let seq = self.seq + 1;
        match &self.target {
            LogTarget::Run(scope) => {
                self.publisher.publish(RunLogChunk { scope: scope.clone(), seq, chunk, eos }).await?;
            }
            LogTarget::Deploy(scope) => {
                self.publisher.publish(DeployLogChunk { scope: scope.clone(), seq, chunk, eos }).await?;
            }
        }
        self.seq = seq;
        Ok(())
    }
}

/// The text of `bytes` without an incomplete character at its end, and how many bytes that used. Invalid
/// sequences become U+FFFD.
fn utf8_prefix(bytes: &[u8]) -> (String, usize) {
    let mut end = bytes.len();
    // An incomplete character is a lead byte among the last three bytes, followed by too few continuations.
    for back in 1..=bytes.len().min(3) {
        let byte = bytes[bytes.len() - back];
        if byte & 0xC0 == 0x80 {
            continue;
        }
        if byte >= 0xC0 {
            let needed = if byte >= 0xF0 {
                4
            } else if byte >= 0xE0 {
                3
            } else {
                2
            };
            if back < needed {
                end = bytes.len() - back;
            }
        }
        break;
    }
    (String::from_utf8_lossy(&bytes[..end]).into_owned(), end)
}

/// Follows a log stream's chunks on the reading side: says which chunks are missing and when the stream ended.
#[derive(Debug, Default)]
pub struct ChunkChecker {
    next_seq: u64,
    ended: bool,
}

/// Chunks `from..=to` never arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingChunks {
    pub from: u64,
    pub to: u64,
}

impl ChunkChecker {
    pub fn new() -> Self {
        Self { next_seq: 1, ended: false }
    }

    /// Records chunk `seq`; an error names the chunks skipped before it. A repeated chunk is ignored.
    pub fn accept(&mut self, seq: u64, eos: bool) -> Result<(), MissingChunks> {
        if seq < self.next_seq {
            return Ok(());
        }
        let missing = (seq > self.next_seq).then(|| MissingChunks { from: self.next_seq, to: seq - 1 });
        self.next_seq = seq + 1;
        self.ended |= eos;
        missing.map_or(Ok(()), Err)
    }

    /// The `eos` chunk arrived.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::events::{ProjectId, RunId};
    use crate::sink::memory::MemorySink;

    fn target() -> LogTarget {
        LogTarget::Run(RunScope::new(ProjectId::new("p1").unwrap(), RunId::new("r1").unwrap()))
    }

    async fn chunks(sink: &MemorySink) -> Vec<(u64, String, bool)> {
        sink.envelopes()
            .await
            .into_iter()
            .map(|e| {
                let chunk = e.payload["chunk"].as_str().unwrap().to_owned();
                (e.seq.unwrap(), chunk, e.payload["eos"] == Value::Bool(true))
            })
            .collect()
    }

    #[tokio::test]
    async fn output_is_cut_into_numbered_chunks_closed_by_eos() {
        let publisher = Publisher::new(MemorySink::new());
        let mut writer = LogStreamWriter::new(&publisher, target()).with_limits(8, Duration::from_secs(60));
        writer.write(b"hello world, ").await.unwrap();
        writer.write(b"bye").await.unwrap();
        assert_eq!(writer.finish().await.unwrap(), 3);
        let got = chunks(publisher.sink()).await;
        assert_eq!(got, vec![(1, "hello wo".into(), false), (2, "rld, bye".into(), false), (3, String::new(), true)]);
    }

    #[tokio::test]
    async fn characters_are_never_split_across_chunks() {
        let publisher = Publisher::new(MemorySink::new());
        let mut writer = LogStreamWriter::new(&publisher, target()).with_limits(5, Duration::from_secs(60));
        let text = "añb€c😀d";
        for byte in text.as_bytes() {
            writer.write(&[*byte]).await.unwrap();
        }
        writer.finish().await.unwrap();
        let joined: String = chunks(publisher.sink()).await.into_iter().map(|(_, c, _)| c).collect();
        assert_eq!(joined, text);
    }

    #[tokio::test]
    async fn invalid_bytes_become_replacement_characters() {
        let publisher = Publisher::new(MemorySink::new());
        let mut writer = LogStreamWriter::new(&publisher, target());
        writer.write(b"ok \xff\xfe ok").await.unwrap();
        writer.finish().await.unwrap();
        assert_eq!(chunks(publisher.sink()).await[0].1, "ok \u{fffd}\u{fffd} ok");
    }

    #[tokio::test]
    async fn output_that_waits_too_long_is_published_by_the_pump() {
        let publisher = Publisher::new(MemorySink::new());
        let writer = LogStreamWriter::new(&publisher, target()).with_limits(1024, Duration::from_millis(20));
        let (mut tx, rx) = tokio::io::duplex(64);
        let pump = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(b"first\n").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            tx.write_all(b"second\n").await.unwrap();
        });
        let count = writer.pump(rx).await.unwrap();
        pump.await.unwrap();
        let got = chunks(publisher.sink()).await;
        assert_eq!(count, 2);
        assert_eq!(got[0], (1, "first\n".into(), false), "published while the source paused");
        assert_eq!(got[1], (2, "second\n".into(), true), "the rest goes with eos");
    }

    #[test]
    fn the_checker_names_missing_chunks_and_sees_the_end() {
        let mut checker = ChunkChecker::new();
        assert_eq!(checker.accept(1, false), Ok(()));
        assert_eq!(checker.accept(4, false), Err(MissingChunks { from: 2, to: 3 }));
        assert_eq!(checker.accept(4, false), Ok(()), "a repeat is ignored");
        assert!(!checker.ended());
        assert_eq!(checker.accept(5, true), Ok(()));
        assert!(checker.ended());
    }
}
