//! Uses `wasi:sockets` (as Python's runtime links it): the host loads it,
//! and every socket operation is denied with an error, never a trap.
use omniflow_sdk::prelude::*;
use wasip2::sockets::{
    instance_network, ip_name_lookup, network, tcp_create_socket, udp_create_socket,
};

fn connect(_ctx: &Context, _input: Value) -> Result<Value> {
    let net = instance_network::instance_network();
    let tcp = match tcp_create_socket::create_tcp_socket(network::IpAddressFamily::Ipv4) {
        Ok(_) => "created".to_owned(),
        Err(e) => format!("{e:?}"),
    };
    let udp = match udp_create_socket::create_udp_socket(network::IpAddressFamily::Ipv4) {
        Ok(_) => "created".to_owned(),
        Err(e) => format!("{e:?}"),
    };
    let lookup = match ip_name_lookup::resolve_addresses(&net, "localhost") {
        Ok(_) => "resolving".to_owned(),
        Err(e) => format!("{e:?}"),
    };
    Ok(json!({ "tcp": tcp, "udp": udp, "lookup": lookup }))
}

omniflow_sdk::export_piece!(
    Piece::new("hostile-sockets", "0.1.0", "Wants raw sockets").action("run", "connect", connect)
);
