//! One device's TLS sessions for resumption: a few TLS 1.3 tickets (and a
//! TLS 1.2 session) per server, for a few servers. rustls' memory cache
//! keeps up to 8 tickets per server, each with a copy of the server's
//! certificate chain; a fleet of thousands of devices needs fewer.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;

use rustls::NamedGroup;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls_pki_types::ServerName;

/// TLS 1.3 tickets kept per server: each is used once, a reconnect needs
/// one, and the broker sends new ones with every handshake.
pub const TICKETS_PER_SERVER: usize = 2;

/// Servers remembered at once (the broker and a few `--allow` endpoints);
/// the one used least recently is forgotten first.
pub const SERVERS: usize = 4;

#[derive(Default)]
struct Server {
    name: Option<ServerName<'static>>,
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

/// A device's session store (see the module documentation).
#[derive(Default)]
pub struct DeviceSessions {
    /// Most recently used last.
    servers: Mutex<VecDeque<Server>>,
}

impl fmt::Debug for DeviceSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceSessions { .. }")
    }
}

impl DeviceSessions {
    /// Runs `f` on the entry of `name`, made (and the oldest forgotten)
    /// when `create`; `None` when absent and not created.
    fn with<T>(
        &self,
        name: &ServerName<'_>,
        create: bool,
        f: impl FnOnce(&mut Server) -> T,
    ) -> Option<T> {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        let at = servers.iter().position(|s| s.name.as_ref() == Some(name));
        let mut server = match at {
            Some(i) => servers.remove(i)?,
            None if create => Server {
                name: Some(name.to_owned()),
                ..Server::default()
            },
            None => return None,
        };
        let out = f(&mut server);
        servers.push_back(server);
        while servers.len() > SERVERS {
            servers.pop_front();
        }
        Some(out)
    }
}

impl ClientSessionStore for DeviceSessions {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.with(&server_name, true, |s| s.kx_hint = Some(group));
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.with(server_name, false, |s| s.kx_hint).flatten()
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.with(&server_name, true, |s| s.tls12 = Some(value));
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.with(server_name, false, |s| s.tls12.clone()).flatten()
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.with(server_name, false, |s| s.tls12 = None);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.with(&server_name, true, |s| {
            if s.tls13.len() == TICKETS_PER_SERVER {
                s.tls13.pop_front();
            }
            s.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        // The newest ticket first: the oldest is the likeliest to expire.
        self.with(server_name, false, |s| s.tls13.pop_back())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(i: usize) -> ServerName<'static> {
        ServerName::try_from(format!("broker-{i}.example")).unwrap()
    }

    /// The store stays bounded: past SERVERS servers, the one used least
    /// recently is forgotten; using a server keeps it.
    #[test]
    fn the_server_used_least_recently_is_forgotten_first() {
        let store = DeviceSessions::default();
        for i in 0..SERVERS {
            store.set_kx_hint(name(i), NamedGroup::X25519);
        }
        // Server 0 used again: server 1 is now the least recent.
        assert_eq!(store.kx_hint(&name(0)), Some(NamedGroup::X25519));
        store.set_kx_hint(name(SERVERS), NamedGroup::secp256r1);
        assert_eq!(store.kx_hint(&name(1)), None, "least recent forgotten");
        assert_eq!(store.kx_hint(&name(0)), Some(NamedGroup::X25519));
        assert_eq!(store.kx_hint(&name(SERVERS)), Some(NamedGroup::secp256r1));
        assert_eq!(store.servers.lock().unwrap().len(), SERVERS);
        // Looking up an unknown server makes no entry.
        assert_eq!(store.kx_hint(&name(99)), None);
        assert_eq!(store.servers.lock().unwrap().len(), SERVERS);
    }
}
