//! The gRPC codec of every generated service: prost encoding, with the output buffer grown
//! once to the message's encoded length before encoding.
//!
//! tonic's prost codec encodes into a buffer that starts at 8 KiB and grows by doubling as
//! fields are written, so a multi-megabyte Get response is copied several times while it is
//! being built. Reserving `encoded_len()` first writes it once. Every end-to-end test goes
//! through this codec on both sides.

use prost::Message;
use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

/// Prost codec that sizes the output buffer up front.
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
    type Decoder = ReservingDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ReservingEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ReservingDecoder(ProstDecoder::default())
    }
}

/// Encodes `T`, reserving its encoded length first.
#[derive(Debug, Clone, Copy)]
pub struct ReservingEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for ReservingEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a response: {e}")))
    }
}

/// Decodes `U` exactly as tonic's prost codec does.
#[derive(Debug)]
pub struct ReservingDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for ReservingDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf)
    }
}
