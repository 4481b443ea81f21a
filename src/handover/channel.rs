//! The takeover connection: messages of `wire.rs` over a Unix socket, with file descriptors
//! passed beside them (SCM_RIGHTS). A message's descriptors go with its first byte, so they
//! have always arrived by the time the whole message has; they are kept in arrival order and
//! each message takes as many as it says it carries.

use super::wire::{Message, WireError, MAX_MESSAGE};
use super::STEP_TIMEOUT;
use bytes::BytesMut;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// Most descriptors one message carries (the listening sockets: TCP, Unix, metrics, and as
/// many as systemd passes).
pub const MAX_DESCRIPTORS: usize = 64;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

pub struct Channel {
    stream: UnixStream,
    buf: BytesMut,
    descriptors: VecDeque<OwnedFd>,
    /// The largest message accepted from the other side.
    limit: usize,
}

impl Channel {
    /// The channel over `stream`, whose first `buffered` bytes were already read from it,
    /// taking messages of at most `limit` bytes.
    pub fn new(stream: UnixStream, buffered: BytesMut, limit: usize) -> Channel {
        Channel {
            stream,
            buf: buffered,
            descriptors: VecDeque::new(),
            limit,
        }
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends `message` with `fds` (as many as it carries). A message larger than any peer
    /// takes is refused before anything is sent (InvalidInput).
    pub async fn send(&mut self, message: &Message, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        debug_assert_eq!(fds.len(), message.descriptors());
        let mut bytes = BytesMut::new();
        message.encode(&mut bytes);
        if bytes.len() > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a takeover message of {} bytes is over the limit",
                    bytes.len()
                ),
            ));
        }
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let mut sent = 0;
        while sent < bytes.len() {
            // The descriptors ride on the first write only.
            let with = if sent == 0 { &raw[..] } else { &[][..] };
            let n = self
                .stream
                .async_io(Interest::WRITABLE, || {
                    send_with_fds(self.stream.as_raw_fd(), &bytes[sent..], with)
                })
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            sent += n;
        }
        Ok(())
    }

    /// One step of a takeover: `message` sent within [`STEP_TIMEOUT`]. The error is a
    /// sentence for the log that names the other side as `peer` ("the new process").
    pub async fn send_step(
        &mut self,
        message: &Message,
        fds: &[BorrowedFd<'_>],
        peer: &str,
    ) -> Result<(), String> {
        match tokio::time::timeout(STEP_TIMEOUT, self.send(message, fds)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("cannot write to {peer}: {e}")),
            Err(_) => Err(format!("{peer} did not read in time")),
        }
    }

    /// One step of a takeover: the next message within [`STEP_TIMEOUT`], as
    /// [`Channel::send_step`] for errors.
    pub async fn recv_step(&mut self, peer: &str) -> Result<(Message, Vec<OwnedFd>), String> {
        match tokio::time::timeout(STEP_TIMEOUT, self.recv()).await {
            Ok(Ok(received)) => Ok(received),
            Ok(Err(e)) => Err(format!("{peer}: {e}")),
            Err(_) => Err(format!("{peer} did not answer in time")),
        }
    }

    /// The next message and its descriptors. Cancel-safe: what was read stays in the channel.
    pub async fn recv(&mut self) -> io::Result<(Message, Vec<OwnedFd>)> {
        loop {
            if let Some(message) = Message::decode(&mut self.buf, self.limit).map_err(invalid)? {
                let wanted = message.descriptors();
                if self.descriptors.len() < wanted {
                    return Err(invalid(format!(
                        "takeover message carries {wanted} descriptors, {} arrived",
                        self.descriptors.len()
                    )));
                }
                let fds = self.descriptors.drain(..wanted).collect();
                // Only the next message's may have come ahead of it; more is a peer piling
                // descriptors up.
                if self.descriptors.len() > MAX_DESCRIPTORS {
                    return Err(invalid("descriptors sent that no takeover message carries"));
                }
                return Ok((message, fds));
            }
            self.buf.reserve(READ_CHUNK);
            let (buf, descriptors) = (&mut self.buf, &mut self.descriptors);
            let n = self
                .stream
                .async_io(Interest::READABLE, || {
                    recv_with_fds(self.stream.as_raw_fd(), buf, descriptors)
                })
                .await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            // Bytes that never finish a message must not bring descriptors without end.
            if self.descriptors.len() > 2 * MAX_DESCRIPTORS {
                return Err(invalid("descriptors sent that no takeover message carries"));
            }
        }
    }
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl From<WireError> for io::Error {
    fn from(e: WireError) -> io::Error {
        invalid(e)
    }
}

/// Room for the control message of [`MAX_DESCRIPTORS`] descriptors.
fn control_space() -> usize {
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE((MAX_DESCRIPTORS * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// One sendmsg of `bytes`, with `fds` as SCM_RIGHTS when there are any.
fn send_with_fds(socket: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    if fds.len() > MAX_DESCRIPTORS {
        return Err(invalid("too many descriptors for one takeover message"));
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // u64 words: the control buffer must be aligned for cmsghdr.
    let mut control = vec![0u64; control_space().div_ceil(8)];
    // SAFETY: an all-zero msghdr is valid; its pointers are set below to memory we own.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = std::mem::size_of_val(fds);
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(payload as u32) } as _;
        // SAFETY: msg_control points at a buffer of at least CMSG_SPACE(payload) bytes, so
        // the first header and its data fit; the data is written within that room.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(payload as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(header),
                payload,
            );
        }
    }
    // SAFETY: msg and everything it points to live across the call.
    let n = unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) };
    match n {
        n if n < 0 => Err(io::Error::last_os_error()),
        n => Ok(n as usize),
    }
}

/// One recvmsg into the spare room of `buf`; descriptors that came with it go to `into`.
fn recv_with_fds(
    socket: RawFd,
    buf: &mut BytesMut,
    into: &mut VecDeque<OwnedFd>,
) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    let mut control = vec![0u64; control_space().div_ceil(8)];
    // SAFETY: an all-zero msghdr is valid; its pointers are set below to memory we own.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = (control.len() * 8) as _;
    // SAFETY: msg and the buffers it points to live across the call; recvmsg writes at most
    // iov_len bytes and msg_controllen bytes into them.
    let n = unsafe { libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: recvmsg initialised the first n bytes of the spare room.
    unsafe { buf.set_len(buf.len() + n as usize) };
    // SAFETY: the kernel filled in the control buffer and set msg_controllen; the CMSG
    // macros walk only within it, and each SCM_RIGHTS payload holds whole descriptors that
    // are now ours to own.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header);
                let payload = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..payload / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    into.push_back(OwnedFd::from_raw_fd(fd));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(invalid(
            "takeover message carried more descriptors than allowed",
        ));
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::super::wire::ListenerKind;
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[tokio::test]
    async fn descriptors_arrive_with_their_message_and_still_work() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut sender = Channel::new(a, BytesMut::new(), MAX_MESSAGE);
        let mut receiver = Channel::new(b, BytesMut::new(), MAX_MESSAGE);
        // Two socket pairs whose one end travels; what is written through the passed copies
        // comes out of the ends kept here.
        let (mut read1, write1) = std::os::unix::net::UnixStream::pair().unwrap();
        let (mut read2, write2) = std::os::unix::net::UnixStream::pair().unwrap();
        let kinds = vec![ListenerKind::Tcp, ListenerKind::Metrics];
        sender.send(&Message::Listening, &[]).await.unwrap();
        sender
            .send(
                &Message::Listeners(kinds.clone()),
                &[write1.as_fd(), write2.as_fd()],
            )
            .await
            .unwrap();
        sender.send(&Message::Done, &[]).await.unwrap();
        drop((write1, write2));
        assert!(matches!(
            receiver.recv().await.unwrap().0,
            Message::Listening
        ));
        let (message, fds) = receiver.recv().await.unwrap();
        assert!(matches!(message, Message::Listeners(k) if k == kinds));
        assert_eq!(fds.len(), 2);
        let mut files: Vec<std::os::unix::net::UnixStream> =
            fds.into_iter().map(Into::into).collect();
        files[0].write_all(b"one").unwrap();
        files[1].write_all(b"two").unwrap();
        drop(files);
        let (mut got1, mut got2) = (String::new(), String::new());
        read1.read_to_string(&mut got1).unwrap();
        read2.read_to_string(&mut got2).unwrap();
        assert_eq!((got1.as_str(), got2.as_str()), ("one", "two"));
        assert!(matches!(receiver.recv().await.unwrap().0, Message::Done));
        drop(sender);
        let end = receiver.recv().await.unwrap_err();
        assert_eq!(end.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn descriptors_no_message_carries_are_refused_before_they_pile_up() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut receiver = Channel::new(b, BytesMut::new(), MAX_MESSAGE);
        let (kept, _) = std::os::unix::net::UnixStream::pair().unwrap();
        let extra: Vec<RawFd> = (0..MAX_DESCRIPTORS).map(|_| kept.as_raw_fd()).collect();
        let mut bytes = BytesMut::new();
        Message::Listening.encode(&mut bytes);
        // Two messages that carry nothing, each with a full load of descriptors beside it.
        for _ in 0..2 {
            let n = send_with_fds(a.as_raw_fd(), &bytes, &extra).unwrap();
            assert_eq!(n, bytes.len());
        }
        // The first load may pass as the next message's; the second cannot.
        let e = match receiver.recv().await {
            Ok(_) => receiver.recv().await.unwrap_err(),
            Err(e) => e,
        };
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[tokio::test]
    async fn a_message_that_lost_its_descriptors_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut sender = a.into_std().unwrap();
        sender.set_nonblocking(false).unwrap();
        let mut receiver = Channel::new(b, BytesMut::new(), MAX_MESSAGE);
        let mut bytes = BytesMut::new();
        Message::Listeners(vec![ListenerKind::Tcp]).encode(&mut bytes);
        sender.write_all(&bytes).unwrap();
        let e = receiver.recv().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
