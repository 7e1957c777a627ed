//! Blackout windows: admins create and delete them, everyone signed in reads them. The
//! scheduler holds jobs back in them (see [`crate::schedule::blackout`]).

use chrono::Utc;
use outpost_api::{
    parse_week_minute, week_minute_text, BlackoutView, DeleteResult, NewBlackoutRequest, Page,
    PageQuery,
};

use super::{paging, Caller, Result, ServiceError};
use crate::core::Core;
use crate::model::{Blackout, BlackoutId};
use crate::schedule::calendar::parse_zone;
use crate::store::blackouts::NewBlackout;

pub fn view(b: &Blackout) -> BlackoutView {
    BlackoutView {
        id: b.id.0,
        name: b.name.clone(),
        environment: b.environment.clone(),
        timezone: b.timezone.clone(),
        weekly_start: b.weekly_start.map(week_minute_text),
        weekly_end: b.weekly_end.map(week_minute_text),
        starts_at: b.starts_at,
        ends_at: b.ends_at,
        applies_to_manual: b.applies_to_manual,
        enabled: b.enabled,
        active_until: if b.enabled {
            crate::schedule::window(b).and_then(|w| w.active_until(Utc::now()))
        } else {
            None
        },
        created_at: b.created_at,
    }
}

/// The blackout named by an id or a name in a path.
pub async fn by_ref(core: &Core, r: &str) -> Result<Blackout> {
    let found = match r.parse::<i32>() {
        Ok(id) => core.store.get_blackout(BlackoutId(id)).await,
        Err(_) => core.store.get_blackout_by_name(r).await,
    };
    Ok(found?)
}

fn week_bound(field: &str, v: &str) -> Result<i32> {
    parse_week_minute(v).ok_or_else(|| {
        ServiceError::unprocessable(format!(
            "{field}: {:?} is not a weekday and a time such as \"Fri 16:00\"",
            v.chars().take(40).collect::<String>()
        ))
    })
}

pub async fn create(core: &Core, caller: &Caller, r: NewBlackoutRequest) -> Result<BlackoutView> {
    let n = r.name.chars().count();
    if n == 0 || n > 255 || r.name.trim() != r.name || r.name.chars().any(char::is_control) {
        return Err(ServiceError::unprocessable(
            "name: must be 1 to 255 characters, without surrounding spaces or control characters",
        ));
    }
    if r.name.parse::<i64>().is_ok() {
        return Err(ServiceError::unprocessable("name: must not be a number"));
    }
    if let Some(e) = &r.environment {
        if e.is_empty() || e.chars().count() > 50 || e.chars().any(char::is_control) {
            return Err(ServiceError::unprocessable(
                "environment: 1 to 50 characters (leave it out for every environment)",
            ));
        }
    }
    let zone = parse_zone(&r.timezone)?;
    let weekly = match (&r.weekly_start, &r.weekly_end) {
        (None, None) => None,
        (Some(s), Some(e)) => {
            let (s, e) = (week_bound("weekly_start", s)?, week_bound("weekly_end", e)?);
            if s == e {
                return Err(ServiceError::unprocessable(
                    "weekly_end: must differ from weekly_start",
                ));
            }
            Some((s, e))
        }
        _ => {
            return Err(ServiceError::unprocessable(
                "weekly_start, weekly_end: give both or neither",
            ))
        }
    };
    let once = match (r.starts_at, r.ends_at) {
        (None, None) => None,
        (Some(s), Some(e)) if s < e => Some((s, e)),
        (Some(_), Some(_)) => {
            return Err(ServiceError::unprocessable(
                "ends_at: must be after starts_at",
            ))
        }
        _ => {
            return Err(ServiceError::unprocessable(
                "starts_at, ends_at: give both or neither",
            ))
        }
    };
    if weekly.is_none() && once.is_none() {
        return Err(ServiceError::unprocessable(
            "weekly_start: give a weekly window (weekly_start and weekly_end) or a one-off one (starts_at and ends_at)",
        ));
    }
    let b = core
        .store
        .create_blackout(
            &NewBlackout {
                name: r.name,
                environment: r.environment,
                timezone: zone.name().to_owned(),
                weekly,
                once,
                applies_to_manual: r.applies_to_manual,
                enabled: r.enabled,
            },
            &caller.actor(),
        )
        .await?;
    Ok(view(&b))
}

pub async fn list(core: &Core, q: &PageQuery) -> Result<Page<BlackoutView>> {
    let page = core.store.list_blackouts(paging(q.limit, q.offset)).await?;
    Ok(Page {
        items: page.items.iter().map(view).collect(),
        total: page.total,
        total_exact: page.total_exact,
        limit: page.limit,
        offset: page.offset,
        next: None,
    })
}

pub async fn get(core: &Core, r: &str) -> Result<BlackoutView> {
    Ok(view(&by_ref(core, r).await?))
}

pub async fn delete(core: &Core, caller: &Caller, r: &str) -> Result<DeleteResult> {
    let b = by_ref(core, r).await?;
    core.store.delete_blackout(&b, &caller.actor()).await?;
    Ok(DeleteResult {
        outcome: "deleted".into(),
        message: format!("blackout {} deleted", b.name),
    })
}
