//! Opaque pagination tokens (`nextToken`).
//!
//! A token is the base64url encoding of a JSON value the service chose (usually the
//! last key it returned). Clients must treat it as opaque; the service must treat what
//! comes back as untrusted input, so decoding is total: anything that is not a token
//! this module made decodes to `None`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The longest token `decode_token` will look at. Real tokens are far shorter; the cap
/// keeps a hostile one from costing more than a small allocation.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Encodes a position as an opaque token.
///
/// Serialising a plain data type to JSON cannot fail in practice; if it does (a map
/// with non-string keys), the empty token is returned, which decodes to `None`.
pub fn encode_token<T: Serialize>(position: &T) -> String {
    match serde_json::to_vec(position) {
        Ok(json) => URL_SAFE_NO_PAD.encode(json),
        Err(_) => String::new(),
    }
}

/// Decodes a token made by [`encode_token`]; `None` for anything else.
pub fn decode_token<T: DeserializeOwned>(token: &str) -> Option<T> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let json = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Position {
        after: String,
        page: u32,
    }

    #[test]
    fn round_trip() {
        let p = Position {
            after: "arn:aws:ecs:us-east-1:0:cluster/a".into(),
            page: 3,
        };
        let token = encode_token(&p);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(decode_token::<Position>(&token), Some(p));
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(decode_token::<Position>(""), None);
        assert_eq!(decode_token::<Position>("!!!"), None);
        assert_eq!(decode_token::<Position>("e30"), None); // `{}`: wrong shape
        assert_eq!(
            decode_token::<Position>(&"A".repeat(MAX_TOKEN_LEN + 1)),
            None
        );
    }

    proptest! {
        #[test]
        fn any_string_decodes_without_panic(s in "\\PC{0,300}") {
            let _ = decode_token::<Position>(&s);
            let _ = decode_token::<serde_json::Value>(&s);
        }

        #[test]
        fn any_position_round_trips(after in "\\PC{0,100}", page in any::<u32>()) {
            let p = Position { after, page };
            prop_assert_eq!(decode_token::<Position>(&encode_token(&p)), Some(p));
        }
    }
}
