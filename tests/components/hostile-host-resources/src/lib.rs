//! Grows host memory through `wasi:http` resources the host keeps for it,
//! never through its own linear memory: many large header `fields`, many
//! responses received and kept unread, many outgoing bodies filled and never
//! sent. Everything is kept alive until the end. The host must end the
//! attempt with `resource-limit` long before its memory grows far.
use omniflow_sdk::bindings::wasi::http::outgoing_handler;
use omniflow_sdk::bindings::wasi::http::types::{
    Fields, IncomingResponse, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use omniflow_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct Input {
    /// How many of each resource to create.
    count: usize,
    /// `127.0.0.1:PORT` of a server answering `/huge?bytes=N` (for responses).
    #[serde(default)]
    authority: Option<String>,
    /// Bytes of each response body.
    #[serde(default)]
    response_bytes: Option<usize>,
}

/// A header value of 1 KiB.
fn kib() -> Vec<u8> {
    vec![b'v'; 1024]
}

fn fields(_ctx: &Context, input: Input) -> Result<Value> {
    let mut kept = Vec::new();
    let value = kib();
    for i in 0..input.count {
        let f = Fields::new();
        // 24 KiB each: under the host's per-fields limit.
        for j in 0..24 {
            let _ = f.append(&format!("x-{j}"), &value);
        }
        kept.push(f);
        if i == usize::MAX {
            break;
        }
    }
    Ok(json!({ "kept": kept.len() }))
}

fn request(authority: &str, path: &str) -> OutgoingRequest {
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_method(&Method::Get);
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    request
}

fn responses(_ctx: &Context, input: Input) -> Result<Value> {
    let authority = input.authority.unwrap_or_default();
    let path = format!("/huge?bytes={}", input.response_bytes.unwrap_or(1 << 20));
    let mut kept: Vec<IncomingResponse> = Vec::new();
    let mut errors = 0usize;
    for _ in 0..input.count {
        let request = request(&authority, &path);
        let Ok(body) = request.body() else { continue };
        let Ok(future) = outgoing_handler::handle(request, None) else {
            errors += 1;
            continue;
        };
        let _ = OutgoingBody::finish(body, None);
        future.subscribe().block();
        match future.get() {
            // Kept, never read.
            Some(Ok(Ok(response))) => kept.push(response),
            _ => errors += 1,
        }
    }
    Ok(json!({ "kept": kept.len(), "errors": errors }))
}

fn bodies(_ctx: &Context, input: Input) -> Result<Value> {
    let mut kept = Vec::new();
    let chunk = vec![b'b'; 4096];
    for _ in 0..input.count {
        let request = request("127.0.0.1:9", "/");
        let Ok(body) = request.body() else { continue };
        if let Ok(stream) = body.write() {
            // Write what the host accepts without blocking.
            while let Ok(n) = stream.check_write() {
                if n == 0 {
                    break;
                }
                let len = chunk.len().min(n as usize);
                if stream.write(&chunk[..len]).is_err() {
                    break;
                }
            }
            kept.push((request, body, stream));
        }
    }
    Ok(json!({ "kept": kept.len() }))
}

omniflow_sdk::export_piece!(
    Piece::new(
        "hostile-host-resources",
        "0.1.0",
        "Grows host memory through wasi:http resources"
    )
    .action("fields", "keep many full header fields", fields)
    .action("responses", "keep many responses unread", responses)
    .action("bodies", "fill many outgoing bodies, never sent", bodies)
);
