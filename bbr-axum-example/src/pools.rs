//! Pools of model servers and the endpoint pick.
//!
//! Within a pool the gateway picks the endpoint with the fewest requests in
//! flight (a request is in flight from the pick until its response body is
//! finished or dropped); ties go round-robin, so an idle pool spreads
//! sequential requests over every endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::uri::Authority;

/// One upstream model server.
#[derive(Debug)]
pub struct Endpoint {
    authority: Authority,
    in_flight: AtomicUsize,
}

impl Endpoint {
    /// The `host:port` of the server.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Requests in flight right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A pool of equivalent model servers.
#[derive(Debug)]
pub struct Pool {
    name: String,
    endpoints: Vec<Arc<Endpoint>>,
    next: AtomicUsize,
}

/// Why an endpoint or a pool cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// A scheme other than `http://`.
    #[error("only http:// endpoints are supported")]
    Scheme,
    /// Not a `host:port`.
    #[error("not a host:port")]
    Authority,
    /// `host` without `:port`.
    #[error("the port is missing")]
    MissingPort,
    /// A pool without endpoints.
    #[error("a pool needs at least one endpoint")]
    Empty,
}

/// Parses `host:port` or `http://host:port` into an authority.
pub fn parse_endpoint(text: &str) -> Result<Authority, EndpointError> {
    let rest = if let Some(rest) = text.strip_prefix("http://") {
        rest.trim_end_matches('/')
    } else if text.contains("://") {
        return Err(EndpointError::Scheme);
    } else {
        text
    };
    let authority: Authority = rest.parse().map_err(|_| EndpointError::Authority)?;
    if authority.port_u16().is_none() {
        return Err(EndpointError::MissingPort);
    }
    Ok(authority)
}

impl Pool {
    /// A pool of the given endpoints (`host:port` or `http://host:port`).
    ///
    /// ```
    /// use bbr_axum_example::pools::Pool;
    ///
    /// let pool = Pool::new("p", ["127.0.0.1:8000", "http://127.0.0.1:8001"]).unwrap();
    /// let first = pool.pick();
    /// let second = pool.pick(); // the first is still in flight
    /// assert_ne!(first.endpoint().authority(), second.endpoint().authority());
    /// # Ok::<(), bbr_axum_example::pools::EndpointError>(())
    /// ```
    pub fn new<I, S>(name: impl Into<String>, endpoints: I) -> Result<Self, EndpointError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let endpoints = endpoints
            .into_iter()
            .map(|e| {
                parse_endpoint(e.as_ref()).map(|authority| {
                    Arc::new(Endpoint {
                        authority,
                        in_flight: AtomicUsize::new(0),
                    })
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err(EndpointError::Empty);
        }
        Ok(Self {
            name: name.into(),
            endpoints,
            next: AtomicUsize::new(0),
        })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Picks the endpoint with the fewest requests in flight (ties
    /// round-robin) and counts the request in flight until the guard drops.
    pub fn pick(&self) -> InFlight {
        let len = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % len;
        let mut best = start;
        let mut best_load = usize::MAX;
        for offset in 0..len {
            let index = (start + offset) % len;
            let load = self.endpoints[index].in_flight();
            if load < best_load {
                best = index;
                best_load = load;
            }
        }
        let endpoint = Arc::clone(&self.endpoints[best]);
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { endpoint }
    }
}

/// A request in flight on an endpoint; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
}

impl InFlight {
    /// The picked endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Pool {
        Pool::new("p", (0..n).map(|i| format!("127.0.0.1:{}", 8000 + i))).unwrap()
    }

    #[test]
    fn idle_pool_goes_round_robin() {
        let pool = pool(3);
        let ports: Vec<_> = (0..6)
            .map(|_| pool.pick().endpoint().authority().port_u16().unwrap())
            .collect();
        assert_eq!(ports, [8000, 8001, 8002, 8000, 8001, 8002]);
    }

    #[test]
    fn busy_endpoint_is_avoided_until_released() {
        let pool = pool(2);
        let held = pool.pick();
        let busy = held.endpoint().authority().clone();
        for _ in 0..5 {
            assert_ne!(pool.pick().endpoint().authority(), &busy);
        }
        assert_eq!(
            pool.endpoints()
                .iter()
                .map(|e| e.in_flight())
                .sum::<usize>(),
            1
        );
        drop(held);
        assert!(pool.endpoints().iter().all(|e| e.in_flight() == 0));
    }

    #[test]
    fn least_loaded_wins_over_round_robin() {
        let pool = pool(3);
        let a = pool.pick();
        let b = pool.pick();
        let _c = pool.pick();
        drop(b);
        let b_port = pool.endpoints()[1].authority().port_u16();
        // Only the second endpoint is idle now; every pick goes there.
        let next = pool.pick();
        assert_eq!(next.endpoint().authority().port_u16(), b_port);
        drop(a);
    }

    #[test]
    fn endpoints_are_validated() {
        assert!(parse_endpoint("127.0.0.1:8000").is_ok());
        assert!(parse_endpoint("http://localhost:80/").is_ok());
        assert!(parse_endpoint("https://x:1").is_err());
        assert!(parse_endpoint("localhost").is_err());
        assert!(Pool::new("p", Vec::<String>::new()).is_err());
    }
}
