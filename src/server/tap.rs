//! Placeholder head tap: always falls back to HeaderMap order.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Per-connection slot.
#[derive(Clone, Default)]
pub struct HeadTap;

/// Offsets.
#[derive(Clone, Copy, Debug)]
pub struct HeaderSpan {
    /// name.
    pub name: (u32, u32),
    /// value.
    pub value: (u32, u32),
}

/// A raw head.
pub struct RawHead {
    /// bytes.
    pub bytes: Bytes,
    /// spans.
    pub headers: Vec<HeaderSpan>,
}

impl RawHead {
    /// iter.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.headers.iter().map(|s| {
            (
                &self.bytes[s.name.0 as usize..(s.name.0 + s.name.1) as usize],
                &self.bytes[s.value.0 as usize..(s.value.0 + s.value.1) as usize],
            )
        })
    }
}

impl HeadTap {
    /// new.
    pub fn new() -> Self {
        HeadTap
    }
    /// wrap.
    pub fn wrap<S>(&self, io: S) -> TapIo<S> {
        TapIo { inner: io }
    }
    /// take.
    pub fn take_matching(&self, _parts: &http::request::Parts) -> Option<RawHead> {
        None
    }
    /// disable.
    pub fn disable(&self) {}
}

/// IO.
pub struct TapIo<S> {
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for TapIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TapIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
