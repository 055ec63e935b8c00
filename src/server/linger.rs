//! Lingering close for connections the server closes first.
//!
//! Closing a socket that still has unread input makes the kernel send a reset, and a reset
//! makes the peer's kernel throw away whatever it has received but not yet read. A client
//! still sending when we answer and close (a body trickling after a 408, say) then loses
//! the answer. So, like nginx's lingering close, a connection dropped before its peer closed
//! is shut down for writing (FIN after our last bytes) and drained for up to [`LINGER`]
//! before the socket is closed. Only connections we wrote to linger (one closed by the
//! header timeout has no answer to protect), and at most `slots` at once; past that, a
//! connection closes at once as before.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Longest a closed connection is drained.
pub const LINGER: Duration = Duration::from_secs(2);
/// Most connections lingering at once (each holds a socket for up to [`LINGER`]).
pub const LINGER_SLOTS: usize = 1024;

/// A TCP stream that lingers when dropped before its peer closed (see the module docs).
#[derive(Debug)]
pub struct LingerStream {
    io: Option<TcpStream>,
    /// The peer closed or reset: nothing left to protect, close at once.
    peer_done: bool,
    /// Something was written: there may be an answer the peer has yet to read.
    wrote: bool,
    slots: Arc<Semaphore>,
}

impl LingerStream {
    /// Wrap an accepted stream; `slots` bounds how many connections linger at once.
    pub fn new(io: TcpStream, slots: Arc<Semaphore>) -> LingerStream {
        LingerStream {
            io: Some(io),
            peer_done: false,
            wrote: false,
            slots,
        }
    }

    fn io(&mut self) -> &mut TcpStream {
        self.io.as_mut().expect("present until drop")
    }

    fn note_write(&mut self, res: &Poll<io::Result<usize>>) {
        if matches!(res, Poll::Ready(Ok(n)) if *n > 0) {
            self.wrote = true;
        }
    }
}

impl AsyncRead for LingerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let room = buf.remaining();
        let before = buf.filled().len();
        let res = Pin::new(self.io()).poll_read(cx, buf);
        match &res {
            Poll::Ready(Ok(())) if room > 0 && buf.filled().len() == before => {
                self.peer_done = true
            }
            Poll::Ready(Err(_)) => self.peer_done = true,
            _ => {}
        }
        res
    }
}

impl AsyncWrite for LingerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(self.io()).poll_write(cx, buf);
        self.note_write(&res);
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(self.io()).poll_write_vectored(cx, bufs);
        self.note_write(&res);
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.io()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.io()).poll_shutdown(cx)
    }
}

impl Drop for LingerStream {
    fn drop(&mut self) {
        let Some(mut io) = self.io.take() else { return };
        if self.peer_done || !self.wrote {
            return;
        }
        // Outside a runtime (process exit) or with every slot taken: close at once.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return;
        };
        runtime.spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(LINGER, async {
                let _ = io.shutdown().await;
                let mut sink = [0u8; 1024];
                while let Ok(n) = io.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        });
    }
}
