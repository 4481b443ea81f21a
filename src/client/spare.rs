//! Read buffers of idle clients, kept per worker thread for the next client that wakes.
//!
//! An idle client gives its read buffer back so that it costs no buffer while it waits; the
//! next message then needs one again. Taking it from here instead of the allocator saves an
//! allocation and a free per transaction, and the few kept stay bounded per thread.

use super::CLIENT_BUFFER;
use bytes::BytesMut;
use std::cell::RefCell;

/// Buffers kept per worker thread at most.
const KEPT: usize = 32;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A buffer with room for [`CLIENT_BUFFER`] bytes, empty.
pub fn take() -> BytesMut {
    let spare = SPARE.with(|spare| spare.borrow_mut().pop());
    match spare {
        Some(mut buf) => {
            // Reclaims the room in front of an advanced buffer without allocating.
            buf.reserve(CLIENT_BUFFER);
            buf
        }
        None => BytesMut::with_capacity(CLIENT_BUFFER),
    }
}

/// Keeps `buf` for reuse if it is empty and of the usual size; frees it otherwise.
pub fn give_back(buf: BytesMut) {
    if !buf.is_empty() {
        return;
    }
    // A buffer grown for a large message is not worth keeping around.
    if buf.capacity() > 2 * CLIENT_BUFFER {
        return;
    }
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEPT {
            spare.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_reused_and_the_cache_is_bounded() {
        let mut buf = take();
        assert!(buf.capacity() >= CLIENT_BUFFER);
        let ptr = buf.as_ptr();
        // As a session consumes what it read.
        buf.extend_from_slice(b"abc");
        bytes::Buf::advance(&mut buf, 3);
        give_back(buf);
        let again = take();
        assert!(again.is_empty() && again.capacity() >= CLIENT_BUFFER);
        assert_eq!(again.as_ptr(), ptr, "the same allocation, not a new one");
        for _ in 0..KEPT * 2 {
            give_back(BytesMut::with_capacity(CLIENT_BUFFER));
        }
        assert_eq!(SPARE.with(|s| s.borrow().len()), KEPT);
    }
}
