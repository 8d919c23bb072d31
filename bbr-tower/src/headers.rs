//! Client-sent routing headers, in the request head and in trailers.

use bbr_core::contract::{ClientHeaders, Refusal, routing_header};
use http::HeaderMap;

/// Removes every routing header from `headers` ([`routing_header`]: any
/// case, `_` for `-`), or refuses the first one under
/// [`ClientHeaders::Reject`].
pub(crate) fn guard_routing_headers(
    headers: &mut HeaderMap,
    policy: ClientHeaders,
) -> Result<(), Refusal> {
    // Nearly every request has none: one pass over the names, no allocation.
    while let Some((name, canonical)) = headers
        .keys()
        .find_map(|name| routing_header(name.as_str().as_bytes()).map(|c| (name, c)))
    {
        if policy == ClientHeaders::Reject {
            return Err(Refusal::RoutingHeader(canonical));
        }
        let name = name.clone();
        headers.remove(&name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bbr_core::contract::{BASE_MODEL_HEADER, MODEL_HEADER};

    fn headers(names: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for name in names {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_static("spoofed"),
            );
        }
        map
    }

    #[test]
    fn strips_every_spelling_and_every_value() {
        let mut map = headers(&[
            "x-gateway-model-name",
            "X_Gateway_Model_Name",
            "x-gateway-model-name",
            "x_gateway_base_model_name",
            "x-gateway-model",
            "content-type",
        ]);
        guard_routing_headers(&mut map, ClientHeaders::Strip).unwrap();
        let mut left: Vec<_> = map.keys().map(|k| k.as_str().to_owned()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "x-gateway-model"]);
    }

    #[test]
    fn reject_names_the_canonical_header() {
        let mut map = headers(&["accept", "X_GATEWAY_BASE_MODEL_NAME"]);
        assert_eq!(
            guard_routing_headers(&mut map, ClientHeaders::Reject),
            Err(Refusal::RoutingHeader(BASE_MODEL_HEADER))
        );
        let mut map = headers(&["x-gateway-model_name"]);
        assert_eq!(
            guard_routing_headers(&mut map, ClientHeaders::Reject),
            Err(Refusal::RoutingHeader(MODEL_HEADER))
        );
        let mut clean = headers(&["accept"]);
        assert_eq!(
            guard_routing_headers(&mut clean, ClientHeaders::Reject),
            Ok(())
        );
    }
}
