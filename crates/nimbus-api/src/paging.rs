//! Offset paging for listings whose continuation token is opaque to the
//! client (IAM's `Marker`, CloudWatch Logs' `nextToken`).

/// The page of `items` starting at `token` (an offset; none or empty is
/// the start), at most `limit` long, and the token of the next page.
/// `None` when the token is not one this function issued.
pub(crate) fn offset_page<T>(
    items: Vec<T>,
    token: Option<&str>,
    limit: usize,
) -> Option<(Vec<T>, Option<String>)> {
    let start: usize = match token {
        None | Some("") => 0,
        Some(t) => t.parse().ok()?,
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(limit).collect();
    let next = (start + page.len() < total).then(|| (start + page.len()).to_string());
    Some((page, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_through_and_refuses_foreign_tokens() {
        let (p1, t1) = offset_page(vec![1, 2, 3], None, 2).unwrap();
        assert_eq!((p1, t1.as_deref()), (vec![1, 2], Some("2")));
        let (p2, t2) = offset_page(vec![1, 2, 3], t1.as_deref(), 2).unwrap();
        assert_eq!((p2, t2), (vec![3], None));
        assert!(offset_page(vec![1], Some("f/3"), 2).is_none());
    }
}
