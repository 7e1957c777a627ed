//! Listings paged by key: the long lists (jobs, audit) read newest first by `(time, id)`,
//! start a page past a [`Cursor`] rather than an `OFFSET`, and count their matches only up to
//! [`COUNT_BOUND`].
//!
//! An exact count of an unfiltered list is a scan of every row; past a few thousand nobody
//! pages that far, so the count stops at the bound and says it did (`total_exact: false`).
//! The small lists (users, servers, templates…) keep [`super::page!`] and its exact count.

/// The most rows a keyset listing counts; past it the total is "at least this many".
pub const COUNT_BOUND: i64 = 10_000;

/// The columns of `cols` (`"a, b, c"`) each qualified with `alias` (`"j.a, j.b, j.c"`), for a
/// select that joins other tables with columns of the same names.
pub(crate) fn qualified(alias: &str, cols: &str) -> String {
    cols.split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs a keyset listing and its bounded count on either backend and yields a
/// [`crate::model::Page`] whose `next` is the cursor of its last item when the page is full.
///
/// `from` may join other tables; `count_from` is the listed table alone (with the same alias),
/// which the count reads. Filters and ranges are as in [`super::page!`], with column names
/// qualified by the alias. `key: (time, id)` names the sort key, newest first; `key_of` makes a
/// [`crate::model::Cursor`] from an item. With `paging.after` set the page starts past it and
/// `paging.offset` is not applied. Column, table and key names are literals of the caller.
macro_rules! keyset_page {
    ($store:expr, $ty:ty, select: $cols:expr, from: $from:expr, count_from: $cfrom:expr,
     key: ($kat:literal, $kid:literal), key_of: $key_of:expr, paging: $paging:expr,
     filters: [$(($col:literal, $val:expr)),* $(,)?],
     ranges: [$(($rcol:literal, $rop:literal, $rval:expr)),* $(,)?]) => {{
        let paging: $crate::model::Paging = $paging;
        let bound = $crate::store::listing::COUNT_BOUND;
        let (items, counted) = $crate::store::on_pool!($store, p => {
            #[allow(unused_mut, unused_assignments)]
            let build = |head: String| {
                let mut qb = sqlx::QueryBuilder::new(head);
                let first = $crate::store::conditions!(qb, [$(($col, $val)),*], [$(($rcol, $rop, $rval)),*]);
                (qb, first)
            };
            let (mut select, first) = build(format!("SELECT {} FROM {}", $cols, $from));
            if let Some(c) = paging.after {
                // `time <= ?` alone is the index range; the OR then drops the rows of the
                // cursor's own second up to and including its id. A row-value comparison
                // `(time, id) < (?, ?)` says the same but not every optimizer ranges on it.
                select.push(if first { " WHERE " } else { " AND " });
                select.push(concat!($kat, " <= "));
                select.push_bind(c.at);
                select.push(concat!(" AND (", $kat, " < "));
                select.push_bind(c.at);
                select.push(concat!(" OR ", $kid, " < "));
                select.push_bind(c.id);
                select.push(")");
            }
            select.push(concat!(" ORDER BY ", $kat, " DESC, ", $kid, " DESC LIMIT "));
            select.push_bind(paging.limit);
            if paging.after.is_none() {
                select.push(" OFFSET ");
                select.push_bind(paging.offset);
            }
            let items = select.build_query_as::<$ty>().fetch_all(p).await?;
            let (mut count, _) = build(format!("SELECT COUNT(*) FROM (SELECT 1 FROM {}", $cfrom));
            count.push(" LIMIT ");
            count.push_bind(bound + 1);
            count.push(") counted");
            let counted: i64 = count.build_query_scalar().fetch_one(p).await?;
            (items, counted)
        });
        let key_of = $key_of;
        let next = if items.len() as i64 == paging.limit {
            items.last().map(key_of)
        } else {
            None
        };
        $crate::model::Page {
            items,
            total: counted.min(bound),
            total_exact: counted <= bound,
            limit: paging.limit,
            offset: if paging.after.is_some() { 0 } else { paging.offset },
            next,
        }
    }};
}
pub(crate) use keyset_page;

#[cfg(test)]
mod tests {
    #[test]
    fn columns_are_qualified_one_by_one() {
        assert_eq!(
            super::qualified("j", "id, job_id,status"),
            "j.id, j.job_id, j.status"
        );
    }
}
