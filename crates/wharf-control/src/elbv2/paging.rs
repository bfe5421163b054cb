//! `Marker`/`PageSize` paging over listings sorted by a key.
//!
//! A marker records the sort key of the last item returned; the next page starts
//! after it. Markers are opaque to clients, and one that does not decode is refused
//! with a `ValidationError` rather than restarting the listing.

use serde::{Deserialize, Serialize};
use wharf_aws::AwsError;

use super::error::validation;

/// The page size when the client asks for none (ELBv2's largest).
pub(crate) const DEFAULT_PAGE_SIZE: usize = 400;

#[derive(Serialize, Deserialize)]
struct Marker {
    after: String,
}

/// One page of `items` (sorted by `sort_key`) after the marker's position, and the
/// marker of the next page, if any.
pub(crate) fn page<T>(
    items: Vec<T>,
    sort_key: impl Fn(&T) -> String,
    marker: Option<&str>,
    page_size: Option<i64>,
) -> Result<(Vec<T>, Option<String>), AwsError> {
    let size = match page_size {
        None => DEFAULT_PAGE_SIZE,
        Some(n) if (1..=400).contains(&n) => n as usize,
        Some(n) => {
            return Err(validation(format!(
                "PageSize {n} must be between 1 and 400"
            )))
        }
    };
    let after = match marker {
        None | Some("") => None,
        Some(m) => Some(
            wharf_aws::pagination::decode_token::<Marker>(m)
                .ok_or_else(|| validation("Invalid Marker"))?
                .after,
        ),
    };
    let mut rest: Vec<T> = match after {
        None => items,
        Some(after) => items
            .into_iter()
            .filter(|item| sort_key(item) > after)
            .collect(),
    };
    if rest.len() <= size {
        return Ok((rest, None));
    }
    rest.truncate(size);
    let next = rest.last().map(|last| {
        wharf_aws::pagination::encode_token(&Marker {
            after: sort_key(last),
        })
    });
    Ok((rest, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_each_other() {
        let items: Vec<String> = (0..7).map(|i| format!("k{i}")).collect();
        let (first, marker) = page(items.clone(), |s| s.clone(), None, Some(3)).unwrap();
        assert_eq!(first, ["k0", "k1", "k2"]);
        let (second, marker) =
            page(items.clone(), |s| s.clone(), marker.as_deref(), Some(3)).unwrap();
        assert_eq!(second, ["k3", "k4", "k5"]);
        let (third, marker) =
            page(items.clone(), |s| s.clone(), marker.as_deref(), Some(3)).unwrap();
        assert_eq!(third, ["k6"]);
        assert!(marker.is_none());
        assert!(page(items.clone(), |s| s.clone(), Some("garbage!"), None).is_err());
        assert!(page(items, |s| s.clone(), None, Some(0)).is_err());
    }
}
