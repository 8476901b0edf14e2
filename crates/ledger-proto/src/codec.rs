//! The gRPC codec of every generated service: prost encoding, with the output buffer grown
//! once to the message's encoded length before encoding; decoding is prost's, with malformed
//! messages reported as `INVALID_ARGUMENT`.
//!
//! tonic's prost codec encodes into a buffer that starts at 8 KiB and grows by doubling as
//! fields are written, so a multi-megabyte Get response is copied several times while it is
//! being built. Reserving `encoded_len()` first writes it once, and large messages are
//! encoded into a `Vec` and copied in once (see [`ReservingEncoder`]). Every end-to-end test goes
//! through this codec on both sides.

use bytes::BufMut;
use prost::Message;
use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// Messages from this size on are encoded through a `Vec` (see [`ReservingEncoder`]).
const DIRECT_ENCODE_LIMIT: usize = 16 * 1024;

/// Prost codec that sizes the output buffer up front (decoding is tonic's own).
#[derive(Debug, Clone, Copy)]
pub struct ReservingCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ReservingCodec<T, U> {
    fn default() -> Self {
        ReservingCodec(PhantomData)
    }
}

impl<T, U> Codec for ReservingCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ReservingEncoder<T>;
    type Decoder = CheckedDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ReservingEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckedDecoder(ProstDecoder::default())
    }
}

/// tonic's prost decoder, with undecodable messages reported as `INVALID_ARGUMENT` (the
/// sender's fault) instead of tonic's `INTERNAL`.
#[derive(Debug)]
pub struct CheckedDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for CheckedDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| {
            Status::invalid_argument(format!(
                "the message is not valid protobuf for this method ({}); check the request \
                 against the proto files (strings must be valid UTF-8)",
                s.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// Encodes `T`, reserving its encoded length first.
#[derive(Debug, Clone, Copy)]
pub struct ReservingEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for ReservingEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let len = item.encoded_len();
        if len < DIRECT_ENCODE_LIMIT {
            buf.reserve(len);
            return item.encode(buf).map_err(encode_error);
        }
        // Large messages (Get pages, snapshots) are encoded into a plain Vec first: prost writes
        // a Vec with inlined copies, while every varint byte written through `EncodeBuf` is a
        // separate `put_slice` call; one bulk copy afterwards is far cheaper.
        let mut v = Vec::with_capacity(len);
        item.encode(&mut v).map_err(encode_error)?;
        buf.reserve(len);
        buf.put_slice(&v);
        Ok(())
    }
}

fn encode_error(e: prost::EncodeError) -> Status {
    Status::internal(format!("encoding a message: {e}"))
}
