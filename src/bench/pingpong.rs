//! `bench unix-pingpong`: the raw transport floor. Fixed-size request/reply exchanges over a
//! bare Unix socket to an echo listener, no HTTP/2 and no gRPC. Each connection carries
//! requests back to back; the echo returns them in order.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tonic::Status;

use super::report::Size;
use super::{drive, has_stamp, payload, stamp, BenchError, Load, Progress, Report, Worker};

/// The echo listener of `bench unix-pingpong`: every connection gets back what it sends.
pub async fn serve_echo(listener: UnixListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let (mut r, mut w) = stream.into_split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

/// One client connection of `bench unix-pingpong`. Requests are written whole under the write
/// lock, in the order their waiters are queued; the echo returns them in that order, and a reader
/// task hands each reply to the waiter at the front of the queue.
struct Pipe {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    state: Mutex<PipeState>,
}

#[derive(Default)]
struct PipeState {
    /// (tag, waiter) of each request written and not yet answered, oldest first.
    waiting: VecDeque<(u64, oneshot::Sender<bool>)>,
    /// The connection failed; no request can be answered.
    closed: bool,
}

impl Pipe {
    fn lock(&self) -> MutexGuard<'_, PipeState> {
        // The queue stays consistent whatever panicked while holding the lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads `size`-byte replies and hands each to the oldest waiter, telling it whether the reply
/// carries its tag. Ends (failing every waiter) when the connection does.
async fn read_replies(r: OwnedReadHalf, pipe: Arc<Pipe>, size: usize) {
    let mut r = tokio::io::BufReader::with_capacity(64 << 10, r);
    let mut buf = vec![0u8; size];
    while r.read_exact(&mut buf).await.is_ok() {
        let Some((tag, done)) = pipe.lock().waiting.pop_front() else {
            break;
        };
        let _ = done.send(has_stamp(&buf, tag));
    }
    let mut st = pipe.lock();
    st.closed = true;
    st.waiting.clear();
}

struct PingWorker {
    pipe: Arc<Pipe>,
    request: Arc<Vec<u8>>,
    next_tag: Arc<AtomicU64>,
}

impl Worker for PingWorker {
    async fn call(&mut self, _n: u64) -> Result<(), Status> {
        let tag = self.next_tag.fetch_add(1, Ordering::Relaxed);
        let mut msg = self.request.to_vec();
        stamp(&mut msg, tag);
        let (tx, rx) = oneshot::channel();
        {
            let mut w = self.pipe.writer.lock().await;
            {
                let mut st = self.pipe.lock();
                if st.closed {
                    return Err(Status::unavailable("the echo connection closed"));
                }
                st.waiting.push_back((tag, tx));
            }
            w.write_all(&msg)
                .await
                .map_err(|e| Status::unavailable(format!("writing to the echo socket: {e}")))?;
        }
        match rx.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Status::data_loss("the echo does not match the request")),
            Err(_) => Err(Status::unavailable("the echo connection closed")),
        }
    }
}

/// Runs `bench unix-pingpong` against the echo listener at `path` (see [`serve_echo`]), with
/// `size`-byte requests.
pub async fn run(
    load: Load,
    path: &Path,
    size: usize,
    progress: &Progress,
) -> Result<Report, BenchError> {
    let mut pipes = Vec::with_capacity(load.connections);
    let mut readers = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| BenchError::Connect {
                target: "the echo listener",
                endpoint: path.display().to_string(),
                detail: e.to_string(),
            })?;
        let (r, w) = stream.into_split();
        let pipe = Arc::new(Pipe {
            writer: tokio::sync::Mutex::new(w),
            state: Mutex::new(PipeState::default()),
        });
        readers.push(tokio::spawn(read_replies(r, pipe.clone(), size)));
        pipes.push(pipe);
    }
    let request = Arc::new(payload(size, 0)?);
    let next_tag = Arc::new(AtomicU64::new(0));
    let workers: Vec<PingWorker> = (0..load.concurrency)
        .map(|i| PingWorker {
            pipe: pipes[i % pipes.len()].clone(),
            request: request.clone(),
            next_tag: next_tag.clone(),
        })
        .collect();
    let outcome = drive(workers, &load, progress).await;
    for r in readers {
        r.abort();
    }
    Ok(Report {
        target: "unix-pingpong",
        endpoint: format!("unix://{}", path.display()),
        op: "echo".into(),
        load,
        size: Some(Size {
            json: "payload_bytes",
            label: "payload",
            bytes: size,
        }),
        counts: Vec::new(),
        outcome: outcome?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::load;
    use super::super::Stop;
    use super::*;
    use tonic::Code;

    #[tokio::test]
    async fn pingpong_over_a_real_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("echo.sock");
        let server = tokio::spawn(serve_echo(UnixListener::bind(&path).unwrap()));
        let p = load(Stop::Requests(500));
        let stream = UnixStream::connect(&path).await.unwrap();
        let (r, w) = stream.into_split();
        let pipe = Arc::new(Pipe {
            writer: tokio::sync::Mutex::new(w),
            state: Mutex::new(PipeState::default()),
        });
        let reader = tokio::spawn(read_replies(r, pipe.clone(), 100));
        let next_tag = Arc::new(AtomicU64::new(0));
        let workers = (0..4)
            .map(|_| PingWorker {
                pipe: pipe.clone(),
                request: Arc::new(payload(100, 0).unwrap()),
                next_tag: next_tag.clone(),
            })
            .collect();
        let o = drive(workers, &p, &Progress::default()).await.unwrap();
        assert_eq!(o.calls, 500);
        assert!(o.errors.is_empty(), "{:?}", o.errors);
        assert_eq!(o.latency.len(), 500);
        server.abort();
        reader.abort();
        // Once the connection is gone, calls fail at once instead of waiting for --timeout.
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (r, w) = ours.into_split();
        let pipe = Arc::new(Pipe {
            writer: tokio::sync::Mutex::new(w),
            state: Mutex::new(PipeState::default()),
        });
        drop(theirs);
        read_replies(r, pipe.clone(), 100).await;
        let mut w = PingWorker {
            pipe,
            request: Arc::new(vec![0; 100]),
            next_tag,
        };
        assert_eq!(w.call(0).await.unwrap_err().code(), Code::Unavailable);
    }
}
