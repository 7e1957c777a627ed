//! The domain's enums read from the names the database stores, with an error that says which
//! name was found when a row holds none of them.

use outpost_api::enums::UnknownVariant;

/// How much of a name that is none of an enum's a decoding error repeats.
const SHOWN_CHARS: usize = 64;

/// A stored name, read as the enum `T` it names: rows say `#[sqlx(try_from = "Named<T>")]`.
///
/// `String` would do the reading as well, but sqlx 0.8.6 reports a failed `TryFrom` as
/// "unprintable error" whatever the error, so a damaged row would not say what it holds.
/// Decoding here puts [`UnknownVariant`]'s message in sqlx's column error instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Named<T>(pub T);

// A blanket `From<Named<T>> for T` is not allowed (the orphan rule: `T` is not this crate's);
// one for each enum is, and it gives the infallible `TryFrom` the row derive calls.
macro_rules! named {
    ($($t:ident),+ $(,)?) => {$(
        impl From<Named<outpost_api::enums::$t>> for outpost_api::enums::$t {
            fn from(n: Named<outpost_api::enums::$t>) -> Self {
                n.0
            }
        }
    )+};
}
named!(
    ChannelKind,
    CredentialKind,
    DeliveryMode,
    DeliveryStatus,
    JobStatus,
    NotificationEvent,
    OverlapRule,
    ProjectKind,
    Role,
    RunStatus,
    ScheduleRunStatus,
    SyncState,
    TaskStatus,
    TicketPriority,
    TicketStatus,
);

impl<T, DB: sqlx::Database> sqlx::Type<DB> for Named<T>
where
    String: sqlx::Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <String as sqlx::Type<DB>>::type_info()
    }
    fn compatible(ty: &DB::TypeInfo) -> bool {
        <String as sqlx::Type<DB>>::compatible(ty)
    }
}

impl<'r, T, DB: sqlx::Database> sqlx::Decode<'r, DB> for Named<T>
where
    &'r str: sqlx::Decode<'r, DB>,
    T: std::str::FromStr<Err = UnknownVariant>,
{
    fn decode(
        value: <DB as sqlx::Database>::ValueRef<'r>,
    ) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&'r str as sqlx::Decode<'r, DB>>::decode(value)?;
        text.parse().map(Named).map_err(|mut e: UnknownVariant| {
            // The row's text is data: shown escaped and cut, never as it is.
            e.value = crate::text::excerpt(&e.value, SHOWN_CHARS);
            e.into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_api::enums::JobStatus;
    use sqlx::{Connection, Row};

    #[tokio::test]
    async fn a_name_that_is_no_variant_is_named_in_the_error_escaped_and_cut() {
        let mut db = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        let long = format!("bogus\u{1b}[31m{}", "x".repeat(100));
        let row = sqlx::query("SELECT 'running' AS good, ? AS bad")
            .bind(&long)
            .fetch_one(&mut db)
            .await
            .unwrap();
        let good: Named<JobStatus> = row.try_get("good").unwrap();
        assert_eq!(good.0, JobStatus::Running);
        let err = row
            .try_get::<Named<JobStatus>, _>("bad")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("column \"bad\"") || err.contains("column bad"),
            "{err}"
        );
        assert!(
            err.contains("unknown job status 'bogus\\u{1b}[31mxxx"),
            "{err}"
        );
        assert!(err.contains("…'"), "{err}");
        assert!(!err.contains('\u{1b}'), "{err}");
        assert!(!err.contains(&"x".repeat(SHOWN_CHARS)), "{err}");
    }
}
