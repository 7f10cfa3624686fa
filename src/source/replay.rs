//! Replay source: NDJSON files (or `-` for stdin), read in the order given, one input per
//! non-empty line. Each file's stream comes from `--stream` or from its name
//! (`incidents*`, `sensor*`, `fraud*`). Offsets are not kept: files are read whole.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::{Envelope, NoOffsets, OffsetStore, Origin, Source, SourceError};
use crate::decode::Stream;

type Lines = tokio::io::Split<BufReader<Box<dyn tokio::io::AsyncRead + Send + Unpin>>>;

pub struct ReplaySource {
    inputs: Vec<(String, Stream)>,
    current: Option<(String, Stream, Lines, u64)>,
}

impl ReplaySource {
    /// Checks every input up front so a typo fails before any work.
    pub fn new(inputs: &[PathBuf], stream: Option<Stream>) -> Result<Self, SourceError> {
        let mut out = Vec::new();
        for p in inputs {
            let name = p.to_string_lossy().to_string();
            let s = match stream.or_else(|| Stream::from_file_name(&name)) {
                Some(s) => s,
                None => {
                    return Err(SourceError::Usage(format!(
                        "{name}: cannot tell its stream; name it incidents*.ndjson, sensor*.ndjson or fraud*.ndjson, or pass --stream"
                    )))
                }
            };
            if name != "-" && !p.is_file() {
                return Err(SourceError::Usage(format!("{name}: no such file")));
            }
            out.push((name, s));
        }
        out.reverse();
        Ok(Self {
            inputs: out,
            current: None,
        })
    }
}

impl Source for ReplaySource {
    async fn next(&mut self) -> Result<Option<Envelope>, SourceError> {
        loop {
            if self.current.is_none() {
                // Cancel-safe: the input is taken off the list only once it is open (the
                // open may be awaited, and the pipeline drops a `next` that is not ready).
                let Some((name, stream)) = self.inputs.last().cloned() else {
                    return Ok(None);
                };
                let r: Box<dyn tokio::io::AsyncRead + Send + Unpin> =
                    if name == "-" {
                        Box::new(tokio::io::stdin())
                    } else {
                        Box::new(tokio::fs::File::open(&name).await.map_err(|e| {
                            SourceError::Io {
                                path: name.clone(),
                                source: e,
                            }
                        })?)
                    };
                self.inputs.pop();
                self.current = Some((
                    name,
                    stream,
                    BufReader::with_capacity(1 << 16, r).split(b'\n'),
                    0,
                ));
            }
            let (name, stream, lines, n) = self.current.as_mut().expect("set above");
            match lines.next_segment().await.map_err(|e| SourceError::Io {
                path: name.clone(),
                source: e,
            })? {
                None => self.current = None,
                Some(mut line) => {
                    *n += 1;
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return Ok(Some(Envelope {
                        stream: *stream,
                        key: None,
                        payload: line,
                        origin: Origin::File {
                            name: name.clone(),
                            line: *n,
                        },
                        received: Instant::now(),
                    }));
                }
            }
        }
    }

    fn offset_store(&self) -> Arc<dyn OffsetStore> {
        Arc::new(NoOffsets)
    }

    fn finish(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
}
