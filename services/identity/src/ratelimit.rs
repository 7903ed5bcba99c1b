//! Per-address request counting for public endpoints that need no login.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use warp::Filter;
use warp::http::StatusCode;
use warp::reply::Response;

/// Counts requests per source address in one-minute windows.
#[derive(Debug, Default)]
pub struct RateLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (i64, u32)>>,
}

impl RateLimiter {
    /// At most `per_minute` requests a minute from one address (0: no limit).
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter { per_minute, windows: Mutex::default() }
    }

    /// `Err(seconds to wait)` when `ip` is over its allowance.
    pub fn allow(&self, ip: Option<IpAddr>) -> Result<(), i64> {
        let (Some(ip), true) = (ip, self.per_minute > 0) else { return Ok(()) };
        let now = civichub_store::now();
        let minute = now / 60;
        let Ok(mut windows) = self.windows.lock() else { return Ok(()) };
        if windows.len() > 100_000 {
            windows.retain(|_, (m, _)| *m == minute);
        }
        let slot = windows.entry(client_of(ip)).or_insert((minute, 0));
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        slot.1 += 1;
        if slot.1 > self.per_minute { Err(60 - now % 60) } else { Ok(()) }
    }
}

/// Whom a request is counted against: an IPv4 address, or the /64 network of
/// an IPv6 one (a single subscriber is handed a whole /64 and may use any
/// address in it; counting each would be no limit at all).
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Counts the request against `limiter`: `Some(429 reply with Retry-After)`
/// when its address is over the allowance, for the handler to return.
pub fn rate_limit(limiter: Arc<RateLimiter>) -> impl Filter<Extract = (Option<Response>,), Error = warp::Rejection> + Clone {
    warp::addr::remote().and_then(move |addr: Option<SocketAddr>| {
        let limiter = limiter.clone();
        async move {
            match limiter.allow(addr.map(|a| a.ip())) {
                Ok(()) => Ok::<_, warp::Rejection>(None),
                Err(wait) => {
                    let mut r = crate::reply::error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests from this address; slow down");
                    if let Ok(v) = warp::http::HeaderValue::from_str(&wait.to_string()) {
                        r.headers_mut().insert(warp::http::header::RETRY_AFTER, v);
                    }
                    Ok(Some(r))
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_per_address_per_minute() {
        let limiter = RateLimiter::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limiter.allow(Some(a)).is_ok());
        assert!(limiter.allow(Some(a)).is_ok());
        assert!(limiter.allow(Some(a)).is_err());
        assert!(limiter.allow(Some(b)).is_ok());
    }

    #[test]
    fn an_ipv6_subscriber_is_counted_by_its_64() {
        let limiter = RateLimiter::new(2);
        for host in ["2001:db8:1:2::1", "2001:db8:1:2::2"] {
            assert!(limiter.allow(Some(host.parse().unwrap())).is_ok());
        }
        assert!(limiter.allow(Some("2001:db8:1:2:ffff::9".parse().unwrap())).is_err(), "another address of the same /64");
        assert!(limiter.allow(Some("2001:db8:1:3::1".parse().unwrap())).is_ok(), "another /64");
        let mapped: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        assert!(limiter.allow(Some(mapped)).is_ok() && limiter.allow(Some("10.0.0.9".parse().unwrap())).is_ok());
        assert!(limiter.allow(Some(mapped)).is_err(), "a mapped IPv4 address is that IPv4 address");
    }
}
