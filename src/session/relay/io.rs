//! The relay's byte moving: what the client and the server can take now,
//! pgsplit's own answers put in ahead of the server's, and the one future
//! that polls every socket the session has.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::io::poll_read_buf;

use super::{Failure, Relay};
use crate::pool::stream::ServerStream;
use crate::session::error::SessionError;
use crate::session::stream::ClientStream;

impl Relay<'_> {
    pub(super) fn sent_to_client(&mut self, n: usize) {
        self.server_in.advance(n);
        self.to_client -= n;
        self.client_dirty = true;
        self.traffic.bytes_out += n as u64;
        self.metrics().bytes_to_client.inc_by(n as u64);
    }

    /// Writes what the client can take now without waiting.
    pub(super) fn try_send_to_client(&mut self) -> Result<(), Failure> {
        let mut cx = Context::from_waker(Waker::noop());
        while self.to_client > 0 {
            match Pin::new(&mut *self.client).poll_write(&mut cx, &self.server_in[..self.to_client])
            {
                Poll::Ready(Ok(n)) => self.sent_to_client(n),
                Poll::Ready(Err(e)) => return Err(self.fail(SessionError::ClientIo(e))),
                Poll::Pending => return Ok(()),
            }
        }
        if self.client_dirty {
            match Pin::new(&mut *self.client).poll_flush(&mut cx) {
                Poll::Ready(Ok(())) => self.client_dirty = false,
                Poll::Ready(Err(e)) => return Err(self.fail(SessionError::ClientIo(e))),
                Poll::Pending => {}
            }
        }
        Ok(())
    }

    /// Writes what the server can take now without waiting.
    pub(super) fn try_send_to_server(&mut self) {
        let Some(leased) = self.active.as_mut() else {
            return;
        };
        let mut wrote = 0;
        while !self.to_server.is_empty() {
            match leased.conn.stream.try_write(&self.to_server) {
                Ok(n) => {
                    self.to_server.advance(n);
                    wrote += n;
                }
                // The loop's poll writes the rest (or sees the error).
                Err(_) => break,
            }
        }
        if leased.conn.stream.wants_flush() {
            // Errors and what is left: the loop's poll again.
            let mut cx = Context::from_waker(Waker::noop());
            let _ = Pin::new(&mut leased.conn.stream).poll_flush(&mut cx);
        }
        self.count_sent_to_server(wrote);
    }

    /// Counts `n` bytes written to the active server connection (the
    /// listener's total and its target kind's).
    pub(super) fn count_sent_to_server(&self, n: usize) {
        if n > 0 {
            self.metrics().bytes_to_server.inc_by(n as u64);
            self.server_bytes().sent.inc_by(n as u64);
        }
    }

    /// Client bytes to go out ahead of whatever the server sends next:
    /// pgsplit's own answers.
    pub(super) fn answer_client(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let tail = self.server_in.split_off(self.to_client);
        self.server_in.extend_from_slice(bytes);
        self.to_client = self.server_in.len();
        self.server_in.unsplit(tail);
        self.try_send_to_client()
    }

    /// Stand-in replies now due go to the client.
    pub(super) fn emit_standins(&mut self) -> Result<(), Failure> {
        let mut standins = BytesMut::new();
        self.replies.standins(&mut standins);
        if standins.is_empty() {
            return Ok(());
        }
        let tail = self.server_in.split_off(self.to_client);
        self.server_in.extend_from_slice(&standins);
        self.to_client = self.server_in.len();
        self.server_in.unsplit(tail);
        self.try_send_to_client()
    }
}

/// Resolves on the next routing change, handing the receiver back.
pub(super) async fn next_change(
    mut receiver: tokio::sync::watch::Receiver<u64>,
) -> (
    tokio::sync::watch::Receiver<u64>,
    Result<(), tokio::sync::watch::error::RecvError>,
) {
    let changed = receiver.changed().await;
    (receiver, changed)
}

/// The buffers one poll looks at.
pub(super) struct Buffers<'a> {
    pub(super) client_in: &'a mut BytesMut,
    pub(super) to_server: &'a BytesMut,
    pub(super) server_in: &'a mut BytesMut,
    pub(super) to_client: usize,
    pub(super) client_dirty: bool,
}

/// What one turn of the I/O poll produced.
pub(super) enum Io {
    ClientRead(std::io::Result<usize>),
    /// The client sent something, and the session has no read buffer yet.
    ClientReadable,
    ServerRead(std::io::Result<usize>),
    ServerWrote(std::io::Result<usize>),
    /// TLS towards the server wrote what it held.
    ServerFlushed(std::io::Result<()>),
    ClientWrote(std::io::Result<usize>),
    ClientFlushed(std::io::Result<()>),
}

/// Polls every I/O the session may do now, in one future: pending writes
/// first (so output drains before more input is taken), then reads.
pub(super) fn poll_io<'a>(
    client: &'a mut ClientStream,
    mut server: Option<&'a mut ServerStream>,
    b: Buffers<'a>,
    read_client: bool,
    read_server: bool,
) -> impl std::future::Future<Output = Io> + 'a {
    std::future::poll_fn(move |cx| {
        if let Some(server) = server.as_deref_mut() {
            if !b.to_server.is_empty() {
                if let Poll::Ready(r) = Pin::new(&mut *server).poll_write(cx, b.to_server) {
                    return Poll::Ready(Io::ServerWrote(r));
                }
            } else if server.wants_flush() {
                if let Poll::Ready(r) = Pin::new(&mut *server).poll_flush(cx) {
                    return Poll::Ready(Io::ServerFlushed(r));
                }
            }
        }
        if b.to_client > 0 {
            if let Poll::Ready(r) =
                Pin::new(&mut *client).poll_write(cx, &b.server_in[..b.to_client])
            {
                return Poll::Ready(Io::ClientWrote(r));
            }
        } else if b.client_dirty {
            if let Poll::Ready(r) = Pin::new(&mut *client).poll_flush(cx) {
                return Poll::Ready(Io::ClientFlushed(r));
            }
        }
        if read_client && b.client_in.capacity() == 0 {
            // An idle session holds no read buffer: it waits for bytes first.
            match client.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Io::ClientReadable),
                Poll::Ready(Err(e)) => return Poll::Ready(Io::ClientRead(Err(e))),
                Poll::Pending => {}
            }
        } else if read_client {
            if let Poll::Ready(r) = poll_read_buf(Pin::new(&mut *client), cx, &mut *b.client_in) {
                return Poll::Ready(Io::ClientRead(r));
            }
        }
        if read_server {
            if let Some(server) = server.as_deref_mut() {
                if let Poll::Ready(r) = poll_read_buf(Pin::new(server), cx, &mut *b.server_in) {
                    return Poll::Ready(Io::ServerRead(r));
                }
            }
        }
        Poll::Pending
    })
}

/// Drains the client's output (used before a session ends with an error).
pub(super) async fn flush_client(
    client: &mut ClientStream,
    out: &mut BytesMut,
) -> std::io::Result<()> {
    client.write_all(out).await?;
    client.flush().await
}
