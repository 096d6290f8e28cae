//! Free loopback ports for the processes a test starts. The kernel may hand the same
//! ephemeral port to two `bind(0)` calls once the first socket is closed; an operator
//! once got the same port for its admin and its webhook server and could not start. A
//! port handed out here is never handed out again by this process.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Mutex;

static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// A loopback port nothing listens on now and this process has not handed out before.
pub fn unused_port() -> std::io::Result<u16> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    fresh(&mut handed_out, || {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        Ok((listener.local_addr()?.port(), listener))
    })
}

/// The first port `bind` offers that is not in `handed_out`, which it joins. Sockets that
/// offered a port already handed out stay bound until then, so they are not offered again.
fn fresh<S>(
    handed_out: &mut Vec<u16>,
    mut bind: impl FnMut() -> std::io::Result<(u16, S)>,
) -> std::io::Result<u16> {
    let mut held = Vec::new();
    loop {
        let (port, socket) = bind()?;
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return Ok(port);
        }
        held.push(socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_offered_again_is_skipped() {
        let mut offers = [41_000, 41_000, 41_000, 41_001].into_iter();
        let mut bind = || Ok((offers.next().expect("an offer"), ()));
        let mut handed_out = Vec::new();
        assert_eq!(fresh(&mut handed_out, &mut bind).ok(), Some(41_000));
        assert_eq!(fresh(&mut handed_out, &mut bind).ok(), Some(41_001));
        assert_eq!(handed_out, [41_000, 41_001]);
    }

    #[test]
    fn real_ports_differ() {
        let a = unused_port().expect("a port");
        let b = unused_port().expect("a port");
        assert_ne!(a, b);
    }
}
