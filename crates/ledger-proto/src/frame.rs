//! [`WatchFrame`]: a `converge.context.v1.WatchEvent` encoded once and sent as is.
//!
//! A thousand watchers of one context receive the same entry a thousand times; encoding it per
//! watcher (building the prost message, copying the payload into it, writing every field) is
//! work the node can do once. The node's ContextService is generated a second time (module
//! [`crate::framed`]) with `WatchEvent` mapped to this type, so its Watch stream yields frames
//! the codec copies into the HTTP/2 body without looking inside. Clients are unaffected: the
//! bytes on the wire are the `WatchEvent` they decode.

use crate::context::v1::WatchEvent;
use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};

/// An encoded `WatchEvent` (cheap to clone: the bytes are shared).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchFrame(Bytes);

impl WatchFrame {
    /// Encodes `event` (once; clones share the bytes).
    pub fn encode(event: &WatchEvent) -> Self {
        WatchFrame(Bytes::from(event.encode_to_vec()))
    }

    /// The encoded `WatchEvent`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Decodes the event (for tests and tools; the node only sends frames).
    pub fn event(&self) -> Result<WatchEvent, DecodeError> {
        WatchEvent::decode(self.0.clone())
    }
}

impl From<&WatchEvent> for WatchFrame {
    fn from(event: &WatchEvent) -> Self {
        WatchFrame::encode(event)
    }
}

impl Message for WatchFrame {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    /// Decoding a frame keeps each field's bytes: a field decoded into a `WatchEvent` and
    /// encoded again is appended (protobuf merges repeated occurrences of a message field).
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let mut field = WatchEvent::default();
        field.merge_field(tag, wire_type, buf, ctx)?;
        let mut all = Vec::with_capacity(self.0.len() + field.encoded_len());
        all.extend_from_slice(&self.0);
        field.encode_raw(&mut all);
        self.0 = Bytes::from(all);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::v1::Entry;

    fn event(seq: u64) -> WatchEvent {
        WatchEvent {
            entry: Some(Entry {
                id: format!("id-{seq}"),
                key: "facts".into(),
                payload: vec![7; 300],
                sequence: seq,
                ..Default::default()
            }),
            tree_head: None,
        }
    }

    #[test]
    fn a_frame_is_the_event_on_the_wire() {
        let e = event(3);
        let frame = WatchFrame::encode(&e);
        assert_eq!(frame.as_bytes(), e.encode_to_vec().as_slice());
        assert_eq!(frame.encoded_len(), e.encoded_len());
        assert_eq!(frame.encode_to_vec(), e.encode_to_vec());
        assert_eq!(
            frame.encode_length_delimited_to_vec(),
            e.encode_length_delimited_to_vec()
        );
        assert_eq!(frame.event().unwrap(), e);
    }

    #[test]
    fn a_decoded_frame_reencodes_to_the_same_event() {
        let e = event(9);
        let frame = WatchFrame::decode(e.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            WatchEvent::decode(frame.encode_to_vec().as_slice()).unwrap(),
            e
        );
        assert_eq!(WatchFrame::decode(&[][..]).unwrap(), WatchFrame::default());
    }
}
