//! LiteFS 0.5 replication, byte-compatible with LiteFS's internal HTTP API.
//!
//! A replica `POST`s its positions to the primary's `/stream` endpoint as a binary pos map
//! ([`PosMap`]); the primary answers with a long-lived stream of frames ([`Frame`]), each LTX
//! frame followed by the LTX file in chunked encoding ([`encode_chunks`], [`ChunkWriter`]). A
//! replica reads that stream with the sans-IO [`StreamDecoder`], which turns bytes as the network
//! delivers them into [`Event`]s.
//!
//! Layout: [`codec`] (the wire format, no I/O of its own). The streamer (primary side) and the
//! follower (replica side) build on it.

pub mod codec;

pub use codec::{
    encode_chunks, ChunkWriter, CodecError, Event, Frame, FrameType, PosMap, StreamDecoder,
    MAX_CHUNK_LEN, MAX_FRAME_LEN, MAX_LEASE_ID_LEN, MAX_NAME_LEN, MAX_POS_MAP_COUNT,
};
