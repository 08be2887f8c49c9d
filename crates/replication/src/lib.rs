//! LiteFS 0.5 replication, byte-compatible with LiteFS's internal HTTP API.
//!
//! A replica `POST`s its positions to the primary's `/stream` endpoint as a binary pos map
//! ([`PosMap`]); the primary answers with a long-lived stream of frames ([`Frame`]), each LTX
//! frame followed by the LTX file in chunked encoding ([`encode_chunks`], [`ChunkWriter`]). A
//! replica reads that stream with the sans-IO [`StreamDecoder`], which turns bytes as the network
//! delivers them into [`Event`]s.
//!
//! Layout: [`auth`] (the API's shared secret), [`codec`] (the wire format, no I/O of its own), [`primary`] (the streamer: one task
//! per connected replica) and [`replica`] (the follower: one connection to the primary).

pub mod auth;
pub mod codec;
pub mod primary;
pub mod replica;

pub use auth::{AuthError, AuthToken};
pub use codec::{
    encode_chunks, ChunkWriter, CodecError, Event, Frame, FrameType, PosMap, StreamDecoder,
    MAX_CHUNK_LEN, MAX_FRAME_LEN, MAX_LEASE_ID_LEN, MAX_NAME_LEN, MAX_POS_MAP_COUNT,
};
