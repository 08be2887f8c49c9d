//! The node's decoders of network input, for the fuzz targets in `fuzz/` only: not an API.
//! Each function calls the code the API and the halt client run, and turns its answer into
//! something a target can check without a running node.

use hyper::{Request, Uri};
use litefs_ltx::{NodeId, Pos};

/// The query parameter `key` of `uri`, as every API handler reads it.
pub fn query_param(uri: &Uri, key: &str) -> Result<Option<String>, String> {
    crate::api::query_param(uri, key)
}

/// The `name` parameter of `uri` as a database name, or the status of the refusal.
pub fn db_name_param(uri: &Uri) -> Result<String, u16> {
    crate::api::db_name_param(uri).map_err(|resp| resp.status().as_u16())
}

/// The lock id in query parameter `key` of `uri` (`id` of `/halt`, `lockID` of `/tx`), or the
/// status of the refusal.
pub fn id_param(uri: &Uri, key: &str) -> Result<i64, u16> {
    crate::api::halt::id_param(uri, key).map_err(|resp| resp.status().as_u16())
}

/// The caller's node id from a `Litefs-Id` header of `value` (none if `None`), as the halt
/// lock's handlers read it on a node whose id is `me`, or the status of the refusal.
pub fn peer_of(value: Option<&[u8]>, me: NodeId) -> Result<NodeId, u16> {
    let mut req = Request::new(());
    if let Some(v) = value {
        match hyper::header::HeaderValue::from_bytes(v) {
            Ok(v) => {
                req.headers_mut()
                    .insert(litefs_replication::replica::ID_HEADER, v);
            }
            // Not a header a client can send.
            Err(_) => return Err(0),
        }
    }
    crate::api::halt::peer_of(&req, me).map_err(|resp| resp.status().as_u16())
}

/// The position in the JSON answer to `POST /halt`.
pub fn halt_pos(body: &str) -> Result<Pos, String> {
    crate::halt::halt_pos(body)
}

/// The status and body of an HTTP answer as the halt client reads it.
pub fn parse_answer(answer: &[u8]) -> Result<(u16, String), String> {
    crate::halt::parse_answer("fuzz", answer)
}
