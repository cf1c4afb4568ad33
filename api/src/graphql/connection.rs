//! Relay cursor connections, one generic implementation for every paged list: keyset paging
//! on a unique key, so pages are stable and cost the same however deep the caller pages.

use std::borrow::Cow;
use std::fmt::Display;
use std::str::FromStr;

use async_graphql::connection::PageInfo;
use async_graphql::{Object, OutputType, TypeName};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;

use crate::error::ApiError;

/// Page size when the client does not say.
pub const DEFAULT_PAGE_SIZE: i32 = 20;

/// A key a list is ordered and paged by. The prefix keeps one list's cursors from being
/// accepted by another.
pub trait CursorKey: Copy + Display + FromStr {
    const PREFIX: &'static str;

    fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}{self}", Self::PREFIX))
    }

    fn decode(cursor: &str) -> Option<Self> {
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
        text.strip_prefix(Self::PREFIX)?.parse().ok()
    }
}

/// Patients are paged by id.
impl CursorKey for Uuid {
    const PREFIX: &'static str = "patient:";
}

/// Audit events are paged by their position in the trail.
impl CursorKey for i64 {
    const PREFIX: &'static str = "audit:";
}

/// A page's arguments, checked: `first` between 0 and the server's maximum, and a cursor this
/// API issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageArgs<K> {
    pub first: i32,
    pub after: Option<K>,
}

impl<K: CursorKey> PageArgs<K> {
    pub fn parse(max: i32, first: Option<i32>, after: Option<String>) -> Result<Self, ApiError> {
        let first = first.unwrap_or(DEFAULT_PAGE_SIZE.min(max));
        if !(0..=max).contains(&first) {
            return Err(ApiError::bad_input(
                "first",
                &format!("must be between 0 and {max}"),
            ));
        }
        let after = match after {
            Some(cursor) => Some(K::decode(&cursor).ok_or_else(|| {
                ApiError::bad_input("after", "is not a cursor returned by this API")
            })?),
            None => None,
        };
        Ok(Self { first, after })
    }

    /// Rows to fetch: one more than the page, the extra one telling that more follow.
    pub fn limit(&self) -> u64 {
        u64::try_from(self.first).unwrap_or(0) + 1
    }

    /// How many of `fetched` rows are shown.
    pub fn shown(&self, fetched: usize) -> usize {
        fetched.min(usize::try_from(self.first).unwrap_or(0))
    }

    /// The connection for `rows` (up to [`Self::limit`] of them, in key order).
    pub fn connection<R, N>(
        &self,
        mut rows: Vec<R>,
        key: impl Fn(&R) -> K,
        node: impl Fn(R) -> N,
    ) -> Connection<N> {
        let shown = self.shown(rows.len());
        let has_next_page = rows.len() > shown;
        rows.truncate(shown);
        Connection {
            edges: rows
                .into_iter()
                .map(|row| Edge {
                    cursor: key(&row).encode(),
                    node: node(row),
                })
                .collect(),
            has_previous_page: self.after.is_some(),
            has_next_page,
        }
    }
}

/// A page of `N`: named `<N>Connection` in the schema.
#[derive(Debug)]
pub struct Connection<N> {
    edges: Vec<Edge<N>>,
    has_previous_page: bool,
    has_next_page: bool,
}

/// A page of results in a stable order (Relay cursor connection).
#[Object(name_type)]
impl<N: OutputType> Connection<N> {
    /// The items on this page, each with its cursor.
    async fn edges(&self) -> &[Edge<N>] {
        &self.edges
    }

    /// Whether more pages follow, and the cursors to ask for them.
    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_previous_page: self.has_previous_page,
            has_next_page: self.has_next_page,
            start_cursor: self.edges.first().map(|e| e.cursor.clone()),
            end_cursor: self.edges.last().map(|e| e.cursor.clone()),
        }
    }
}

impl<N: OutputType> TypeName for Connection<N> {
    fn type_name() -> Cow<'static, str> {
        format!("{}Connection", N::type_name()).into()
    }
}

/// One item on a page: named `<N>Edge` in the schema.
#[derive(Debug)]
pub struct Edge<N> {
    cursor: String,
    node: N,
}

/// One item on a page, with the cursor that points at it.
#[Object(name_type)]
impl<N: OutputType> Edge<N> {
    /// Pass as `after` to get the items following this one.
    async fn cursor(&self) -> &str {
        &self.cursor
    }

    /// The item.
    async fn node(&self) -> &N {
        &self.node
    }
}

impl<N: OutputType> TypeName for Edge<N> {
    fn type_name() -> Cow<'static, str> {
        format!("{}Edge", N::type_name()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_foreign_strings() {
        let id = Uuid::new_v4();
        assert_eq!(Uuid::decode(&id.encode()), Some(id));
        assert_eq!(Uuid::decode("not-a-cursor"), None);
        assert_eq!(i64::decode(&7_i64.encode()), Some(7));
    }

    #[test]
    fn one_list_does_not_accept_anothers_cursor() {
        assert_eq!(Uuid::decode(&7_i64.encode()), None);
        assert_eq!(i64::decode(&Uuid::new_v4().encode()), None);
    }

    #[test]
    fn first_is_between_zero_and_the_maximum() {
        assert_eq!(
            PageArgs::<i64>::parse(50, Some(0), None)
                .map(|p| p.first)
                .ok(),
            Some(0)
        );
        assert_eq!(
            PageArgs::<i64>::parse(50, Some(50), None)
                .map(|p| p.first)
                .ok(),
            Some(50)
        );
        assert!(PageArgs::<i64>::parse(50, Some(51), None).is_err());
        assert!(PageArgs::<i64>::parse(50, Some(-1), None).is_err());
        assert_eq!(
            PageArgs::<i64>::parse(10, None, None).map(|p| p.first).ok(),
            Some(10)
        );
        assert_eq!(
            PageArgs::<i64>::parse(100, None, None)
                .map(|p| p.first)
                .ok(),
            Some(20)
        );
    }

    #[test]
    fn the_extra_row_means_a_next_page() {
        let page = PageArgs::<i64> {
            first: 2,
            after: Some(1),
        };
        assert_eq!(page.limit(), 3);
        let full = page.connection(vec![2_i64, 3, 4], |r| *r, |r| r);
        assert!(full.has_next_page && full.has_previous_page);
        assert_eq!(full.edges.len(), 2);
        let last = page.connection(vec![5_i64], |r| *r, |r| r);
        assert!(!last.has_next_page);
    }
}
