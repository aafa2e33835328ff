//! Broker and allow-list endpoints as users write them.

use host::tls::Endpoint;
use host_core::settings::defaults;

/// Why an endpoint could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Another scheme than mqtts.
    #[error("{0:?}: only mqtts:// brokers are supported (pass mqtts://HOST:PORT)")]
    Scheme(String),
    /// A port that is not a number in 0..=65535.
    #[error("{0:?}: bad port {1:?} (pass mqtts://HOST:PORT)")]
    Port(String, String),
    /// No host name.
    #[error("{0:?}: no host name (pass mqtts://HOST:PORT)")]
    NoHost(String),
}

/// Parses `mqtts://HOST:PORT`, `HOST:PORT` or `HOST` (port 8883).
pub fn parse(s: &str) -> Result<Endpoint, EndpointError> {
    let rest = s.strip_prefix("mqtts://").unwrap_or(s);
    if rest.contains("://") {
        return Err(EndpointError::Scheme(s.to_string()));
    }
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| EndpointError::Port(s.to_string(), p.to_string()))?;
            (h.trim_start_matches('[').trim_end_matches(']'), port)
        }
        _ => (rest, defaults::BROKER_PORT),
    };
    if host.is_empty() {
        return Err(EndpointError::NoHost(s.to_string()));
    }
    Ok(Endpoint {
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = parse("mqtts://broker.example:1883").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("broker.example", 1883));
        let e = parse("localhost").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("localhost", 8883));
        assert!(parse("mqtt://x:1").is_err());
        assert!(parse("mqtts://:1").is_err());
        assert!(parse("x:notaport").is_err());
    }
}
