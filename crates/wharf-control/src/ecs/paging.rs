//! `nextToken`/`maxResults` paging over key-ordered listings.
//!
//! A token records the sort key of the last item returned; the next page starts after
//! it. Tokens are opaque to clients (encoded by `wharf-aws`), and a token that does not
//! decode is refused with InvalidParameterException rather than restarting the listing.

use serde::{Deserialize, Serialize};
use wharf_aws::AwsError;

use super::invalid;

#[derive(Serialize, Deserialize)]
struct PageToken {
    after: String,
}

/// One page of `items` (already sorted by `sort_key`), after the token's position.
pub(crate) fn page<T>(
    items: Vec<T>,
    sort_key: impl Fn(&T) -> String,
    next_token: Option<&str>,
    max_results: Option<i64>,
    default_max: usize,
) -> Result<(Vec<T>, Option<String>), AwsError> {
    page_in_order(items, sort_key, next_token, max_results, default_max, false)
}

/// Like [`page`], for items sorted ascending (`descending == false`) or descending.
pub(crate) fn page_in_order<T>(
    items: Vec<T>,
    sort_key: impl Fn(&T) -> String,
    next_token: Option<&str>,
    max_results: Option<i64>,
    default_max: usize,
    descending: bool,
) -> Result<(Vec<T>, Option<String>), AwsError> {
    let max = match max_results {
        None => default_max,
        Some(n) if n >= 1 => (n as usize).min(default_max.max(100)),
        Some(_) => return Err(invalid("maxResults must be at least 1.")),
    };
    let after = match next_token {
        None | Some("") => None,
        Some(token) => Some(
            wharf_aws::pagination::decode_token::<PageToken>(token)
                .ok_or_else(|| invalid("Invalid nextToken."))?
                .after,
        ),
    };
    let mut rest: Vec<T> = match after {
        None => items,
        Some(after) => items
            .into_iter()
            .filter(|item| {
                let key = sort_key(item);
                if descending {
                    key < after
                } else {
                    key > after
                }
            })
            .collect(),
    };
    if rest.len() <= max {
        return Ok((rest, None));
    }
    rest.truncate(max);
    let token = rest.last().map(|last| {
        wharf_aws::pagination::encode_token(&PageToken {
            after: sort_key(last),
        })
    });
    Ok((rest, token))
}
